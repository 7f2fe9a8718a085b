"""A crystal format added from outside the package: one module (this one) and its registration.

The toy format writes the cell on one line and each site on one line::

    cell 3.9 3.9 3.9 90 90 90
    Sr 0.00 0.00 0.00
    Ti 0.50 0.50 0.50

Its codec brings what generation, training, infill and likelihood need (encode/decode, a
grammar, element masking, a length limit); a model trained with it names it in its metadata,
and sampling, infill (the GA's infill mutation included) and likelihood then write and read
this format, never the paper's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import regex
from ase import Atoms
from ase.data import chemical_symbols
from ase.geometry import cellpar_to_cell

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Codec
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.prompts import MASK

from conftest import tiny_config

ELEMENTS = tuple(chemical_symbols[1:95])


def encode(atoms) -> str:
    if not isinstance(atoms, Atoms):  # a pymatgen Structure
        from ase_llmgen.convert import to_atoms

        atoms = to_atoms(atoms)
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    frac = np.round(np.mod(atoms.get_scaled_positions(wrap=False), 1.0), 2) % 1.0
    lines = [f"cell {a:.1f} {b:.1f} {c:.1f} {alpha:.0f} {beta:.0f} {gamma:.0f}"]
    lines += [f"{s} {x:.2f} {y:.2f} {z:.2f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), frac)]
    return "\n".join(lines)


def decode(text: str) -> Atoms:
    lines = text.strip("\n").split("\n")
    head = lines[0].split()
    if len(head) != 7 or head[0] != "cell":
        raise CrystalTextError("no cell line", 1, "cell a b c alpha beta gamma")
    try:
        cellpar = [float(v) for v in head[1:]]
        symbols, frac = [], []
        for line in lines[1:]:
            symbol, *xyz = line.split()
            if symbol not in ELEMENTS or len(xyz) != 3:
                raise CrystalTextError(f"bad site line {line!r}")
            symbols.append(symbol)
            frac.append([float(v) for v in xyz])
        cell = cellpar_to_cell(cellpar)
    except (ValueError, AssertionError) as exc:
        raise CrystalTextError(str(exc)) from exc
    if not symbols or min(cellpar[:3]) <= 0:
        raise CrystalTextError("no sites, or no cell")
    return Atoms(symbols, cell=cell, scaled_positions=np.array(frac) % 1.0, pbc=True)


def mask(text: str, element: str) -> str:
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines[1:], start=1) if line.split(" ")[0] == element]
    if not hits:
        raise ValueError(f"element {element!r} does not occur in the crystal text")
    for i in hits:
        lines[i] = MASK + lines[i][len(element) :]
    return "\n".join(lines)


class ToyGrammar:
    """Orthogonal cells of 1.0-19.9 A edges, then min_atoms..max_atoms site lines (the whole text as state)."""

    def __init__(self, elements=None, max_atoms: int = 20, min_atoms: int = 1):
        self.elements = tuple(sorted(set(elements or ELEMENTS)))
        self.max_atoms, self.min_atoms = max_atoms, min_atoms
        length = r"(?:[1-9]|1[0-9])\.[0-9]"
        symbol = "(?:" + "|".join(sorted(self.elements, key=len, reverse=True)) + ")"
        site = rf"\n{symbol} 0\.[0-9]{{2}} 0\.[0-9]{{2}} 0\.[0-9]{{2}}"
        self.pattern = regex.compile(rf"cell {length} {length} {length} 90 90 90(?:{site}){{{min_atoms},{max_atoms}}}")

    start = ""

    def signature(self) -> tuple:
        return type(self).__name__, self.elements, self.max_atoms, self.min_atoms

    def key(self, state: str) -> str:
        return state

    def advance(self, state: str | None, text: str) -> str | None:
        if state is None or self.pattern.fullmatch(state + text, partial=True) is None:
            return None
        return state + text

    def can_end(self, state: str | None) -> bool:
        return state is not None and self.pattern.fullmatch(state) is not None


def grammar(elements=None, max_atoms=20, min_atoms=1, formula=None):
    if formula:  # the toy keeps to the formula's elements (not to its counts)
        from pymatgen.core import Composition

        elements = [str(e) for e in Composition(formula).elements]
    return ToyGrammar(elements, max_atoms, min_atoms)


class ToyCodecPlugin:
    """The registration: a pluggy plugin object, as an installed package would give through its entry point."""

    @hookimpl
    def register_codecs(self):
        return [
            Codec(
                "toy",
                encode,
                decode,
                "one line per site (test plugin)",
                grammar=grammar,
                mask=mask,
                max_length=lambda max_atoms: 30 + 20 * max_atoms,
            )
        ]


@pytest.fixture
def toy_codec():
    from ase_llmgen.plugins import get_plugin_manager

    pm = get_plugin_manager()
    plugin = ToyCodecPlugin()
    pm.register(plugin, name="toy_codec")
    try:
        yield
    finally:
        pm.unregister(plugin)


def test_toy_codec_trains_samples_and_infills(toy_codec, tmp_path, sample_records):
    from ase_llmgen.data.curriculum import CurriculumConfig, training_text
    from ase_llmgen.ga.operators import LLMInfillMutation
    from ase_llmgen.metrics.likelihood import ipt
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.plugins import codecs
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings
    from ase_llmgen.sampling.sources import generate_atoms
    from ase_llmgen.text import paper
    from ase_llmgen.training import train

    assert "toy" in codecs()
    # Training texts are written in the toy format, infill ones masked by the toy codec.
    rng = np.random.default_rng(0)
    text = training_text(sample_records[0], rng, CurriculumConfig(infill_fraction=0.0, codec="toy"))
    assert "\ncell " in text and decode(text[text.index("cell ") :])
    masked = training_text(sample_records[0], rng, CurriculumConfig(infill_fraction=1.0, codec="toy"))
    assert f"\n{MASK} 0." in masked

    state = train(tiny_config(tmp_path / "run", codec="toy", epochs=1), progress=False)
    assert state["status"] == "finished"
    meta = json.loads((tmp_path / "run" / "model" / "ase_llmgen.json").read_text())
    assert meta["codec"] == "toy" and meta["train_config"]["codec"] == "toy"

    bundle = load_model(tmp_path / "run" / "model")
    assert bundle.codec_name == "toy" and bundle.codec.name == "toy"
    sampler = Sampler(bundle, SampleSettings(batch_size=4, max_atoms=3, require_valid=False), seed=0)
    structures, stats = sampler.sample(2)
    assert len(structures) == 2, stats
    grammar_of_3 = ToyGrammar(max_atoms=3)
    for atoms in structures:
        written = atoms.info["text"]
        assert written.startswith("cell ") and grammar_of_3.can_end(written)  # the toy grammar's text
        with pytest.raises(CrystalTextError):
            paper.decode(written)  # not the paper's
        assert len(decode(written)) == len(atoms)
    # The python API's sources sample the model's codec too.
    assert generate_atoms(1, bundle, max_atoms=3, batch_size=4, require_valid=False)[0].info["text"].startswith("cell ")

    # Infill: the parent is written and masked by the toy codec; the model names elements.
    parent = sample_records[0].atoms
    element = parent.get_chemical_symbols()[0]
    masked = sampler.masked_text(parent, element)
    assert masked.startswith("cell ") and f"\n{MASK} 0." in masked
    answers = sampler.infill(masked, 4)
    assert answers and all(a in ELEMENTS for a in answers)
    seen = []
    sampler_infill = sampler.infill
    sampler.infill = lambda text, n, elements=None: seen.append(text) or sampler_infill(text, n, elements)
    proposals = LLMInfillMutation(sampler, n_candidates=4).propose(parent, element)
    assert seen == [masked] and all(p in ELEMENTS for p in proposals)

    # Likelihood reads the model's format too.
    result = ipt(bundle, [r.atoms for r in sample_records[:2]], n_translations=2)
    assert np.isfinite(result["perplexity"])


def test_a_codec_without_a_grammar_samples_unconstrained_only(toy_codec, tiny_bundle):
    from ase_llmgen.models.bundle import LMBundle
    from ase_llmgen.plugins import get_plugin_manager
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings

    class Bare:
        @hookimpl
        def register_codecs(self):
            return [Codec("bare", encode, decode, "encode and decode only (test plugin)")]

    pm = get_plugin_manager()
    plugin = Bare()
    pm.register(plugin, name="bare_codec")
    try:
        bundle = LMBundle(tiny_bundle.model, tiny_bundle.tokenizer, "scratch", "tiny", {"codec": "bare"})
        with pytest.raises(ValueError, match="no grammar"):
            Sampler(bundle, SampleSettings(batch_size=2, max_atoms=2)).sample(1)
        with pytest.raises(ValueError, match="cannot mask"):
            Sampler(bundle).masked_text(Atoms("Na", cell=[3, 3, 3], pbc=True), "Na")
    finally:
        pm.unregister(plugin)


def test_models_that_name_no_codec_are_the_papers():
    from ase_llmgen.models.bundle import DEFAULT_MODEL_DIR, learnt_codec, read_meta

    shipped = read_meta(DEFAULT_MODEL_DIR)
    assert "codec" not in shipped and "codec" not in shipped["train_config"]  # made before codecs were recorded
    assert learnt_codec(shipped) == learnt_codec({}) == "paper"
    assert learnt_codec({"train_config": {"codec": "toy"}}) == "toy" and learnt_codec({"codec": "cif"}) == "cif"
