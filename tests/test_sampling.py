"""The constrained sampler, the structure sources and `ase-llmgen generate`, with a tiny random model."""

import numpy as np
import pytest
from ase.db import connect
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_llmgen.sampling.grammar import CrystalGrammar, ElementGrammar
from ase_llmgen.sampling.sampler import Sampler, SampleSettings
from ase_llmgen.sampling.sources import LLMStructureSource, generate_structures
from ase_llmgen.text import CrystalTextError, decode, encode
from ase_llmgen.text.prompts import Conditions, generation_prompt


def test_grammar_accepts_encoded_crystals(sample_records):
    grammar = CrystalGrammar(max_atoms=20)
    for record in sample_records:
        state = grammar.advance(grammar.start, encode(record.atoms))
        assert grammar.can_end(state)


@pytest.mark.parametrize(
    "text", ["0.0 1.0 1.0", "1.0 1.0 1.0\n180", "1.0 1.0 1.0\n90 90 90\nXx", "1.0 1.0 1.0\n90 90 90\nSi\n1.00", "1.00"]
)
def test_grammar_rejects(text):
    grammar = CrystalGrammar()
    assert grammar.advance(grammar.start, text) is None


def test_grammar_limits_atoms_and_elements():
    grammar = CrystalGrammar(elements=["Na", "Cl"], max_atoms=1)
    state = grammar.advance(grammar.start, "5.6 5.6 5.6\n90 90 90\nNa\n0.00 0.00 0.00")
    assert grammar.can_end(state) and grammar.advance(state, "\n") is None
    assert grammar.advance(grammar.start, "5.6 5.6 5.6\n90 90 90\nK") is None
    element = ElementGrammar(["Na", "K"])
    assert element.can_end(element.advance(element.start, "Na"))
    assert element.advance(element.start, "Cl") is None


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="0123456789. \nSiONaCl", max_size=80))
def test_whatever_the_grammar_accepts_parses(text):
    grammar = CrystalGrammar()
    state = grammar.advance(grammar.start, text)
    if grammar.can_end(state):
        try:
            decode(text)
        except CrystalTextError as exc:  # only the joint angle condition is beyond a grammar
            assert "3D cell" in str(exc)


def test_constrained_samples_all_parse(tiny_bundle):
    sampler = Sampler(tiny_bundle, SampleSettings(batch_size=16, max_atoms=4, temperature=1.0), seed=0)
    texts = sampler.complete(generation_prompt(), 16, sampler.grammar(), 120)
    finished = [t for t in texts if t is not None]
    assert finished
    for text in finished:
        try:
            atoms = decode(text)
            assert 1 <= len(atoms) <= 4
        except CrystalTextError as exc:
            assert "3D cell" in str(exc)


def test_unconstrained_random_model_mostly_fails(tiny_bundle):
    sampler = Sampler(tiny_bundle, SampleSettings(batch_size=8, constrained=False, max_new_tokens=40), seed=0)
    _, stats = sampler.sample(2, progress=False)
    assert stats.drawn >= 8 and stats.unparseable > 0


def test_sampling_is_seeded(tiny_bundle):
    def draw(seed):
        return Sampler(tiny_bundle, SampleSettings(batch_size=4, max_atoms=3), seed=seed).complete(
            generation_prompt(), 4, CrystalGrammar(max_atoms=3), 80
        )

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_element_restriction_and_infill(tiny_bundle):
    settings = SampleSettings(
        batch_size=16, max_atoms=3, elements=("Na", "Cl"), require_valid=False, max_attempts_factor=50
    )
    atoms, stats = Sampler(tiny_bundle, settings, seed=1).sample(3)
    assert stats.drawn == stats.accepted + stats.unparseable + stats.invalid
    for a in atoms:
        assert set(a.get_chemical_symbols()) <= {"Na", "Cl"}
        assert a.info["temperature"] == 0.7 and a.info["model"] == "scratch"
    answers = Sampler(tiny_bundle, settings, seed=1).infill(
        "5.6 5.6 5.6\n90 90 90\n[MASK]\n0.00 0.00 0.00", 8, elements=("K", "Rb")
    )
    assert answers and set(answers) <= {"K", "Rb"}


def test_sources_yield_atoms_and_structures(tiny_bundle):
    source = LLMStructureSource(tiny_bundle, formula="NaCl", elements=("Na", "Cl"), max_atoms=4, batch_size=16, seed=2)
    atoms = source.take(2)
    assert source.stats.drawn >= len(atoms)
    for a in atoms:
        assert a.info["conditions"] == {"formula": "NaCl"} and a.info["task"] == "generate"
        assert np.all(a.pbc)
    structures = generate_structures(1, tiny_bundle, elements=("Na", "Cl"), max_atoms=4, batch_size=16, seed=3)
    from pymatgen.core import Structure

    assert all(isinstance(s, Structure) and "text" in s.properties for s in structures)


def test_generate_cli_writes_db_and_tops_up(tmp_path, tiny_model_dir):
    from ase_llmgen.cli import main

    out = tmp_path / "gen.db"
    args = [
        "generate",
        "-n",
        "3",
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--elements",
        "Na,Cl",
        "--max-atoms",
        "4",
        "--batch-size",
        "16",
        "--spacegroup",
        "225",
        "-q",
    ]
    assert main(args) == 0
    rows = list(connect(out).select())
    assert len(rows) == 3
    assert all(r.req_spacegroup == 225 and "sg_match" in r and "valid" in r for r in rows)
    first_batches = {r.batch for r in rows}
    args[2] = "5"
    assert main(args) == 0  # tops up to 5 with new batches, no repeats
    rows = list(connect(out).select())
    assert len(rows) == 5
    texts = [r.data["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    assert max(r.batch for r in rows) > max(first_batches) or len(first_batches) > 1
    assert main(args) == 0 and connect(out).count() == 5  # nothing more to do


def test_generate_cli_to_cif(tmp_path, tiny_model_dir):
    from ase.io import read

    from ase_llmgen.cli import main

    out = tmp_path / "gen.cif"
    assert (
        main(
            [
                "generate",
                "-n",
                "2",
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--elements",
                "Na,Cl",
                "--max-atoms",
                "4",
                "--batch-size",
                "16",
                "-q",
            ]
        )
        == 0
    )
    assert len(read(out, index=":")) == 2


def test_conditions_reach_the_prompt(tiny_bundle, monkeypatch):
    seen = []
    sampler = Sampler(tiny_bundle, SampleSettings(batch_size=2, max_atoms=2, max_attempts_factor=1), seed=0)
    real = sampler.complete
    monkeypatch.setattr(sampler, "complete", lambda prompt, *a, **k: seen.append(prompt) or real(prompt, *a, **k))
    sampler.sample(1, Conditions(formula="NaCl", spacegroup=225))
    assert "The chemical formula is NaCl. The spacegroup number is 225. " in seen[0]


def test_missing_model_is_a_clear_cli_error(tmp_path):
    from ase_llmgen.cli import main

    assert main(["generate", "-n", "1", "-o", str(tmp_path / "x.db"), "--model", str(tmp_path / "nope")]) == 1
