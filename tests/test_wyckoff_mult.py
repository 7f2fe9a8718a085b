"""The wyckoff_mult codec (Wyckoff symbols, 4f, on the site lines) and teaching a model a new format."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Composition, Lattice, Structure

from ase_llmgen.plugins import get_codec
from ase_llmgen.text import wyckoff
from ase_llmgen.text.errors import CrystalTextError

from conftest import tiny_config

RUTILE = "136\n4.6 3.0\nTi\n2a\nO\n4f 0.30"


def test_known_wyckoff_symbols():
    # NaCl: Fm-3m, 4a and 4b (4 sites each in the conventional cell, 1 in the primitive one the decoder returns).
    assert wyckoff.encode_mult(bulk("NaCl", "rocksalt", a=5.64)) in (
        "225\n5.6\nNa\n4a\nCl\n4b",
        "225\n5.6\nCl\n4a\nNa\n4b",
    )
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    assert wyckoff.encode_mult(rutile).split("\n")[:5] == RUTILE.split("\n")[:5]
    assert wyckoff.encode_mult(rutile).split("\n")[5].startswith("4f 0.3")
    assert wyckoff.group_info(225).orbits["d"].symbol == "24d" and wyckoff.group_info(225).orbits["d"].sites == 6


def test_the_same_crystals_as_the_wyckoff_format(mp20_structures):
    """Every shipped structure: the two formats differ only in the labels, decode to the same atoms, and the
    grammar (with a formula and the group) accepts the text."""
    from pymatgen.io.ase import AseAtomsAdaptor

    codec = get_codec("wyckoff_mult")
    for atoms in mp20_structures:
        text, plain = codec.encode(atoms), wyckoff.encode(atoms)
        assert text.split("\n")[:2] == plain.split("\n")[:2] and len(text) > len(plain)
        back, back_plain = codec.decode(text), wyckoff.decode(plain)
        assert back.get_chemical_symbols() == back_plain.get_chemical_symbols()
        assert np.allclose(back.cell, back_plain.cell) and np.allclose(back.positions, back_plain.positions)
        formula = AseAtomsAdaptor.get_structure(atoms).composition.formula.replace(" ", "")
        grammar = codec.grammar(max_atoms=20, formula=formula, spacegroup=int(text.split("\n")[0]))
        assert grammar.can_end(grammar.advance(grammar.start, text)), text
        assert wyckoff.grammar(max_atoms=20).advance(wyckoff.grammar(max_atoms=20).start, text) is None


def test_the_grammar_writes_only_the_letters_multiplicity():
    g = wyckoff.grammar_mult(("Na", "Cl"), max_atoms=8, spacegroup=225)
    rock = g.advance(g.start, "225\n5.6\nNa\n4a\nCl\n")
    assert g.can_end(g.advance(rock, "4b"))
    assert g.advance(rock, "4a") is None  # taken, no free coordinates
    assert g.advance(rock, "8b") is None and g.advance(rock, "b") is None and g.advance(rock, "1b") is None
    assert g.advance(rock, "24e 0.25") is not None and g.advance(rock, "24") is not None
    assert not g.can_end(g.advance(rock, "24")) and g.advance(rock, "4\n") is None
    # Which digits may start a label depends on the group, not only on its letters: P1 and P2_1 have one letter
    # each, a, written 1a and 2a.
    other = wyckoff.grammar_mult(("Na", "Cl"), max_atoms=8)
    p1, p21 = (
        other.advance(other.start, "1\n5.6 5.6 5.6 90 90 90\nNa\n"),
        other.advance(other.start, "4\n5.6 5.6 5.6 90\nNa\n"),
    )
    assert other._letters(p1) == other._letters(p21) == "a" and other.key(p1) != other.key(p21)
    assert other.advance(p1, "1a") is not None and other.advance(p21, "1a") is None and other.advance(p21, "2a")
    # A formula is met through the multiplicities written.
    rng = np.random.default_rng(0)
    for formula, group in (("TiO2", 136), ("MgSiO3", 62), ("Fe2O3", 2)):
        grammar = wyckoff.grammar_mult(max_atoms=20, formula=formula, spacegroup=group)
        for _ in range(3):
            text = wyckoff.random_text(grammar, rng, grammar.elements, plausible=True)
            atoms = wyckoff.decode_mult(text)
            assert Composition(atoms.get_chemical_formula()).reduced_formula == Composition(formula).reduced_formula
            assert all(line[0].isdigit() for line in text.split("\n")[3::2]), text


def test_random_legal_texts_decode():
    grammar = wyckoff.grammar_mult(("O", "Na", "Ti", "Fe"), max_atoms=12, min_atoms=2)
    rng = np.random.default_rng(3)
    for _ in range(20):
        text = wyckoff.random_text(grammar, rng, grammar.elements, plausible=True)
        assert 2 <= len(wyckoff.decode_mult(text)) <= 12, text


def test_parse_errors_name_the_line():
    assert len(wyckoff.decode_mult(RUTILE)) == 6
    for bad, match in (
        ("136\n4.6 3.0\nTi\n2a\nO\n8f 0.30", "line 6.*multiplicity 4"),
        ("136\n4.6 3.0\nTi\na\nO\n4f 0.30", "line 4.*not a Wyckoff symbol"),
        ("136\n4.6 3.0\nTi\n2a\nO\n4", "line 6"),
        ("136\n4.6 3.0\nTi\n2z\nO\n4f 0.30", "line 4.*'2z'.*expected 2a 2b"),
        ("136\n4.6 3.0\nTi\n02a\nO\n4f 0.30", "line 4"),
        ("136\n4.6 3.0\nTi\n2a\nO\n4f", "line 6"),
    ):
        with pytest.raises(CrystalTextError, match=match):
            wyckoff.decode_mult(bad)
    with pytest.raises(CrystalTextError):  # wyckoff texts are not wyckoff_mult texts, and back
        wyckoff.decode(RUTILE)


def test_a_model_taught_a_new_format(tmp_path):
    """``new_format``: a model continued from one trained in the wyckoff format learns wyckoff_mult (its weights,
    its tokenizer); without it, continuing in another format is refused."""
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sources import generate_atoms
    from ase_llmgen.training import train
    from ase_llmgen.training.loop import resolve_codec, resolve_site_order

    first = tmp_path / "first"
    train(tiny_config(first, codec="wyckoff", epochs=1), progress=False)
    with pytest.raises(ValueError, match="learnt the 'wyckoff' codec.*new_format"):
        resolve_codec(tiny_config(tmp_path / "x", init_from=str(first / "model"), codec="wyckoff_mult"))
    # A model that learnt an order the new codec lacks (the shipped default: "spatial") takes the codec's own.
    moved = tiny_config(tmp_path / "y", init_from="default", codec="wyckoff_mult", new_format=True)
    assert resolve_site_order(moved) == "letter"
    second = tmp_path / "second"
    config = tiny_config(second, init_from=str(first / "model"), codec="wyckoff_mult", new_format=True, epochs=1)
    assert train(config, progress=False)["status"] == "finished"
    bundle = load_model(second / "model")
    assert bundle.codec_name == "wyckoff_mult" and bundle.meta["history"][-1]["codec"] == "wyckoff"
    samples = list(generate_atoms(3, bundle, max_atoms=6, batch_size=4, seed=0))
    assert len(samples) == 3
    for atoms in samples:
        lines = atoms.info["text"].split("\n")
        assert all(line[0].isdigit() for line in lines[3::2]) and len(atoms) <= 6
