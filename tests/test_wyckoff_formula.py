"""The wyckoff_formula codec: wyckoff_mult with the conventional cell's formula on a line after the lattice."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Composition, Lattice, Structure

from ase_llmgen.plugins import get_codec
from ase_llmgen.text import wyckoff
from ase_llmgen.text.errors import CrystalTextError

from conftest import tiny_config

RUTILE = "136\n4.6 3.0\nTi2O4\nTi\n2a\nO\n4f 0.30"


def test_known_texts():
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    assert wyckoff.encode_formula(rutile).split("\n")[:6] == RUTILE.split("\n")[:6]
    # the conventional cell's counts (4 + 4), the primitive cell decoded (1 + 1), cations first
    rock = wyckoff.encode_formula(bulk("NaCl", "rocksalt", a=5.64))
    assert rock.split("\n")[2] == "Na4Cl4" and rock.split("\n")[3::2] == ["Na", "Cl"]
    assert len(wyckoff.decode_formula(rock)) == 2 and len(wyckoff.decode_formula(RUTILE)) == 6


def test_the_same_crystals_as_wyckoff_mult(mp20_structures):
    """Every shipped structure decodes to the wyckoff_mult crystal, and the grammar, with and without the formula
    and group asked, accepts its text."""
    from pymatgen.io.ase import AseAtomsAdaptor

    codec, mult = get_codec("wyckoff_formula"), get_codec("wyckoff_mult")
    plain = codec.grammar(max_atoms=20)
    for atoms in mp20_structures:
        text = codec.encode(codec.ordered(atoms, "electronegativity"))
        back, back_mult = codec.decode(text), mult.decode(mult.encode(atoms))
        assert sorted(back.get_chemical_symbols()) == sorted(back_mult.get_chemical_symbols())
        assert np.allclose(back.cell, back_mult.cell)
        counts = Composition(text.split("\n")[2])
        factor = len(wyckoff.decode_formula(text)) / counts.num_atoms
        assert Composition(back.get_chemical_formula()) == counts * factor
        assert plain.can_end(plain.advance(plain.start, text)), text
        formula = AseAtomsAdaptor.get_structure(atoms).composition.formula.replace(" ", "")
        asked = codec.grammar(max_atoms=20, formula=formula, spacegroup=int(text.split("\n")[0]))
        assert asked.can_end(asked.advance(asked.start, text)), text


def test_the_grammar_writes_a_formula_its_orbits_can_make_and_then_makes_it():
    g = wyckoff.grammar_formula(("Na", "Cl", "O"), max_atoms=8, spacegroup=225)
    cell = g.advance(g.start, "225\n5.6\n")
    assert cell.phase == "formula"
    assert g.advance(cell, "Na4Cl4\n") is not None
    assert g.advance(cell, "Cl4Na4") is None  # formula order: cations first
    # F-centred: conventional counts of 4 (Na1 may still become Na12, three primitive sites)
    assert g.advance(cell, "Na1\n") is None and g.advance(cell, "Na2Cl") is None and g.advance(cell, "Na6") is None
    assert g.advance(cell, "Na12Cl4\n") is not None
    assert g.advance(cell, "Na4Na") is None and g.advance(cell, "Xx") is None and g.advance(cell, "4") is None
    assert g.advance(cell, "Na36") is None  # 9 primitive sites: more than max_atoms
    assert g.advance(cell, "Na4\n") is not None and g.advance(cell, "Na4Cl4O") is not None
    small = wyckoff.grammar_formula(("Na", "Cl", "O"), max_atoms=3, spacegroup=225)
    small_cell = small.advance(small.start, "225\n5.6\n")
    # 4a and 4b hold Na and Cl; the other orbits have 2 primitive sites or more: no room for O in 3 sites
    assert small.advance(small_cell, "Na4O") is not None and small.advance(small_cell, "Na4Cl4O") is None
    body = g.advance(cell, "Na4Cl4\n")
    assert body.target == (("Na", 1), ("Cl", 1))
    assert g.advance(body, "O\n") is None and g.advance(body, "Na\n4a\nNa\n") is None
    assert not g.can_end(g.advance(body, "Na\n4a")) and g.can_end(g.advance(body, "Na\n4a\nCl\n4b"))
    # A formula asked for holds the line to whole units of it, in its order.
    asked = wyckoff.grammar_formula(max_atoms=20, formula="TiO2", spacegroup=136)
    cell = asked.advance(asked.start, "136\n4.6 3.0\n")
    assert asked.advance(cell, "Ti2O4\n") is not None and asked.advance(cell, "Ti4O8\n") is not None
    assert asked.advance(cell, "Ti2O2") is None and asked.advance(cell, "Ti2\n") is None
    rng = np.random.default_rng(0)
    for formula, group in (("TiO2", 136), ("MgSiO3", 62), ("Fe2O3", 2)):
        grammar = wyckoff.grammar_formula(max_atoms=20, formula=formula, spacegroup=group)
        text = wyckoff.random_text(grammar, rng, grammar.elements, plausible=True)
        atoms = wyckoff.decode_formula(text)
        assert Composition(atoms.get_chemical_formula()).reduced_formula == Composition(formula).reduced_formula


def test_many_sites_asked_for_with_many_elements():
    """Whether a formula line can still reach ``min_atoms`` depends on its counts, not on which elements follow:
    the grammar's memo stays small (it grew with the elements' combinations before)."""
    g = wyckoff.grammar_formula(max_atoms=20, min_atoms=16)
    before = g._can_finish.cache_info().currsize  # the memo is shared by the grammars of this process
    cell = g.advance(g.start, "1\n5.0 5.0 5.0 90 90 90\n")
    assert [e for e in ("Li", "O", "Na") if g.advance(cell, e)] == ["Li", "O", "Na"]
    assert g.advance(cell, "Li1O1\n") is None and g.advance(cell, "Li8O8\n") is not None
    assert g._can_finish.cache_info().currsize - before < 2_000


def test_random_legal_texts_decode_to_their_formula_line():
    rng = np.random.default_rng(3)
    for grammar in (
        wyckoff.grammar_formula(("O", "Na", "Ti", "Fe"), max_atoms=12, min_atoms=5),
        wyckoff.grammar_formula(("Li", "Cl"), max_atoms=6),
    ):
        for _ in range(15):
            text = wyckoff.random_text(grammar, rng, grammar.elements, plausible=True)
            atoms = wyckoff.decode_formula(text)  # which checks the line against the orbits
            assert grammar.min_atoms <= len(atoms) <= grammar.max_atoms, text


def test_parse_errors_name_the_line():
    for bad, match in (
        ("136\n4.6 3.0\nTi2O2\nTi\n2a\nO\n4f 0.30", "line 3.*the sites make Ti2O4"),
        ("136\n4.6 3.0\nO4Ti2\nTi\n2a\nO\n4f 0.30", "line 3.*formula order.*Ti2O4"),
        ("136\n4.6 3.0\nTiO2\nTi\n2a\nO\n4f 0.30", "line 3.*not a formula"),
        ("136\n4.6 3.0\nTi2O04\nTi\n2a\nO\n4f 0.30", "line 3.*not a formula"),
        ("136\n4.6 3.0\nTi\n2a\nO\n4f 0.30", "line 3"),
        ("136\n4.6 3.0\nTi2O4\nTi\n2a\nO\n8f 0.30", "line 7.*multiplicity 4"),
        ("136\n4.6 3.0\nTi2O4", "3 line"),
        ("136\n4.6 3.0\nTi2O2O2\nTi\n2a\nO\n4f 0.30", "line 3.*names O more than once"),
        ("136\n4.6 3.0\nTi" + "9" * 5000 + "O4\nTi\n2a\nO\n4f 0.30", "line 3.*not a formula"),
    ):
        with pytest.raises(CrystalTextError, match=match):
            wyckoff.decode_formula(bad)


def test_a_model_of_the_format(tmp_path):
    """A model learns the format (no infill: the formula line would show the masked element; a GA search that
    would infill with it is refused) and samples it."""
    from ase_llmgen.ga.search import SearchSettings, build_search
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sources import generate_atoms
    from ase_llmgen.training import train

    with pytest.raises(ValueError, match="'wyckoff_formula' cannot mask elements: set infill_fraction = 0"):
        train(tiny_config(tmp_path / "infill", codec="wyckoff_formula"), progress=False)
    out = tmp_path / "formula"
    config = tiny_config(out, codec="wyckoff_formula", site_order="electronegativity", infill_fraction=0.0, epochs=1)
    assert train(config, progress=False)["status"] == "finished"
    bundle = load_model(out / "model")
    with pytest.raises(ValueError, match="'wyckoff_formula' codec, which has no infill"):
        build_search(SearchSettings(system="Na-Cl", max_atoms=4, operators="llm", model=str(out / "model")))
    samples = list(generate_atoms(3, bundle, max_atoms=6, batch_size=4, seed=0))
    assert len(samples) == 3
    for atoms in samples:
        line = atoms.info["text"].split("\n")[2]
        assert Composition(line).reduced_formula == Composition(atoms.get_chemical_formula()).reduced_formula
