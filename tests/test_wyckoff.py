"""The wyckoff codec: known Wyckoff descriptions, round trips, the grammar's guarantees, and a tiny model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Lattice, Structure

from ase_llmgen.text import wyckoff
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.prompts import MASK, generation_prompt

from conftest import DATA, tiny_config

MP20_TOP20 = (225, 12, 139, 194, 62, 166, 63, 221, 123, 2, 14, 129, 216, 15, 1, 189, 164, 71, 191, 8)  # MP-20 test.csv

ELEMENTS = ("O", "Na", "Mg", "Si", "Ti", "Fe", "Cu", "Sr")


def _records():
    from ase_llmgen.data.readers import read_records

    out = []
    for path in sorted(DATA.glob("*.csv")):
        records, _ = read_records(path, on_error="skip")
        out += [r.atoms for r in records]
    return out


def test_known_wyckoff_descriptions():
    # NaCl: Fm-3m, Na and Cl on 4a and 4b, no free coordinates; the cubic lattice has one parameter.
    assert wyckoff.encode(bulk("NaCl", "rocksalt", a=5.64)) in ("225\n5.6\nNa\na\nCl\nb", "225\n5.6\nCl\na\nNa\nb")
    # Rutile: P4_2/mnm, Ti on 2a, O on 4f = (x, x, 0) with x = 0.305 (written 0.30 or 0.31); a c.
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    text = wyckoff.encode(rutile)
    assert text.split("\n")[:5] == ["136", "4.6 3.0", "Ti", "a", "O"] and text.split("\n")[5] in ("f 0.30", "f 0.31")
    # Wurtzite: P6_3mc, Zn and O on 2b = (1/3, 2/3, z), one free coordinate each; hexagonal a c.
    wurtzite = Structure.from_spacegroup(
        "P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]
    )
    lines = wyckoff.encode(wurtzite).split("\n")
    assert lines[:2] == ["186", "3.2 5.2"] and lines[2::2] == ["O", "Zn"]
    assert [line.split(" ")[0] for line in lines[3::2]] == ["b", "b"]
    z_o, z_zn = (float(line.split(" ")[1]) for line in lines[3::2])
    assert abs(((z_o - z_zn) % 1.0) - 0.382) < 0.011 or abs(((z_zn - z_o) % 1.0) - 0.382) < 0.011
    for structure, number in ((bulk("NaCl", "rocksalt", a=5.64), 225), (rutile, 136), (wurtzite, 186)):
        atoms = wyckoff.decode(wyckoff.encode(structure))
        assert wyckoff.spacegroup_number(atoms) == number and len(atoms) == len(structure)


def test_round_trip_of_the_shipped_structures():
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = StructureMatcher()
    structures = _records()
    assert len(structures) > 20
    for atoms in structures:
        text = wyckoff.encode(atoms)
        back = wyckoff.decode(text)
        assert matcher.fit(AseAtomsAdaptor.get_structure(atoms), AseAtomsAdaptor.get_structure(back)), text
        assert wyckoff.spacegroup_number(back) == wyckoff.spacegroup_number(atoms), text
        assert len(back) == len(atoms)  # the primitive cell (the shipped structures are primitive)


def test_random_representatives_write_the_same_crystal_in_other_words():
    """Each orbit from a random one of its representatives: other texts, one crystal; the smallest is encode's."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = StructureMatcher()
    rng = np.random.default_rng(0)
    varied = 0
    for atoms in _records()[:12]:
        write = wyckoff.random_texts(atoms)
        texts = {write(rng) for _ in range(12)}
        canonical = wyckoff.encode(atoms)
        varied += len(texts) > 1
        for text in texts:
            assert text.split("\n")[:2] == canonical.split("\n")[:2]  # group and lattice are the crystal's own
            back = wyckoff.decode(text)
            assert matcher.fit(AseAtomsAdaptor.get_structure(atoms), AseAtomsAdaptor.get_structure(back)), text
            assert len(back) == len(atoms)
    assert varied >= 6  # most crystals have an orbit with free coordinates, hence more than one text
    # Rutile's O on 4f = (x, x, 0): x = 0.30 is also (-x, -x, 0), written 0.70; encode writes the smaller.
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.3, 0.3, 0]]
    )
    seen = {wyckoff.random_texts(rutile)(np.random.default_rng(i)).split("\n")[5] for i in range(30)}
    assert seen == {"f 0.30", "f 0.70"} and wyckoff.encode(rutile).split("\n")[5] == "f 0.30"


def test_the_curriculum_draws_random_representatives_only_when_asked(sample_records):
    from ase_llmgen.data.curriculum import CurriculumConfig, training_texts

    fixed = CurriculumConfig(
        translate=False, codec="wyckoff", site_order="letter", infill_fraction=0, conditional=False
    )
    random = dataclasses.replace(fixed, random_representatives=True)
    by_epoch = [sorted(training_texts(sample_records, 0, epoch, fixed, cache={})) for epoch in (0, 1)]
    assert by_epoch[0] == by_epoch[1]  # one text per crystal
    cache: dict = {}
    drawn = [sorted(training_texts(sample_records, 0, epoch, random, cache=cache)) for epoch in (0, 1)]
    assert drawn[0] != drawn[1]  # another epoch, other representatives, from the crystals analysed once
    assert drawn[1] == sorted(training_texts(sample_records, 0, 1, random))  # the same with or without the cache
    with pytest.raises(ValueError, match="one text per crystal"):
        CurriculumConfig(codec="paper", random_representatives=True)
    # A training config (a recipe file's key) reaches the curriculum.
    from ase_llmgen.training.config import TrainConfig

    settings = TrainConfig(
        codec="wyckoff",
        site_order="letter",
        translate=False,
        infill_fraction=0,
        conditional=False,
        random_representatives=True,
    )
    assert CurriculumConfig.of(settings.to_dict()) == random


def test_the_grammar_accepts_every_encoded_text():
    from pymatgen.io.ase import AseAtomsAdaptor

    for atoms in _records()[::3]:
        text = wyckoff.encode(atoms)
        number = int(text.split("\n")[0])
        formula = AseAtomsAdaptor.get_structure(atoms).composition.formula.replace(" ", "")
        for grammar in (
            wyckoff.grammar(max_atoms=len(atoms), min_atoms=len(atoms)),
            wyckoff.grammar(max_atoms=20, spacegroup=number),
            wyckoff.grammar(max_atoms=20, formula=formula, spacegroup=number),
        ):
            assert grammar.can_end(grammar.advance(grammar.start, text)), (text, grammar.signature())
        if len(atoms) > 1:  # one site fewer allowed: refused
            assert not wyckoff.grammar(max_atoms=len(atoms) - 1).can_end(
                wyckoff.grammar(max_atoms=len(atoms) - 1).advance(wyckoff.grammar().start, text)
            )


def test_the_grammar_keeps_to_the_group():
    g = wyckoff.grammar(ELEMENTS + ("Cl",), max_atoms=8, spacegroup=225)
    assert g.advance(g.start, "221") is None and g.advance(g.start, "22") is not None
    rock = g.advance(g.start, "225\n5.6\nNa\na\nCl\n")
    assert g.advance(rock, "a") is None  # 4a is taken: no free coordinate, so only once
    assert g.can_end(g.advance(rock, "b"))
    assert g.advance(rock, "e 0.25") is not None and g.advance(rock, "b 0.25") is None  # free coordinates only on e
    assert g.advance(g.start, "225\n5.6 5.6") is None  # cubic: one lattice parameter
    assert g.advance(g.start, "225\n5.6\nNa\nq") is None  # no such letter in Fm-3m
    # 24d has 6 sites in the primitive cell: with 4a (1) and 4b (1) that is 8; a second d would be 14 > 8
    full = g.advance(rock, "b\nNa\nd\n")
    assert full is None or g.advance(full, "Na\nd") is None
    # Any group when none is asked; none that cannot hold the sites.
    free = wyckoff.grammar(ELEMENTS, max_atoms=4)
    assert free.advance(free.start, "2\n") is not None and free.advance(free.start, "231") is None
    assert free.advance(free.start, "0") is None and 230 not in free.groups  # Ia-3d: 8 sites at least
    with pytest.raises(ValueError, match="no Wyckoff positions"):
        wyckoff.grammar(max_atoms=4, spacegroup=230)


@pytest.mark.parametrize("number", MP20_TOP20)
def test_random_legal_texts_have_the_requested_symmetry(number):
    """Random legal texts (random allowed pieces at each step, a plausible lattice) decode; every structurally
    valid one has all of the requested group's operations (spglib at symprec 0.1): the group, or a supergroup
    where coordinates fall on special values (docs/design.md). How often spglib reports exactly the group is a
    measurement, not a guarantee: bench/codec_wyckoff.py (53-100% of random texts, by group)."""
    from ase_llmgen.checks.validity import structurally_valid

    grammar = wyckoff.grammar(ELEMENTS, max_atoms=20, min_atoms=2, spacegroup=number)
    rng = np.random.default_rng([1, number])
    valid = 0
    for _ in range(6):
        text = wyckoff.random_text(grammar, rng, ELEMENTS, plausible=True)
        atoms = wyckoff.decode(text)
        assert 2 <= len(atoms) <= 20 and text.startswith(f"{number}\n")
        if structurally_valid(atoms):
            valid += 1
            assert wyckoff.has_symmetry_of(atoms, number), text
    assert valid


def test_the_formula_is_met_through_multiplicities():
    from pymatgen.core import Composition

    from ase_llmgen.checks.validity import structurally_valid

    rng = np.random.default_rng(0)
    for number, formula, max_atoms in ((225, "NaCl", 8), (62, "MgSiO3", 20), (194, "TiO2", 12), (2, "Fe2O3", 10)):
        grammar = wyckoff.grammar(max_atoms=max_atoms, formula=formula, spacegroup=number)
        for _ in range(4):
            atoms = wyckoff.decode(wyckoff.random_text(grammar, rng, grammar.elements, plausible=True))
            got = Composition(atoms.get_chemical_formula()).reduced_formula
            assert got == Composition(formula).reduced_formula and len(atoms) <= max_atoms
            if structurally_valid(atoms):
                assert wyckoff.has_symmetry_of(atoms, number)


def test_parse_errors_name_the_line():
    good = "136\n4.6 3.0\nTi\na\nO\nf 0.30"
    assert len(wyckoff.decode(good)) == 6
    for bad, line in (
        ("231\n4.6 3.0\nTi\na\nO\nf 0.30", 1),
        ("136\n4.6\nTi\na\nO\nf 0.30", 2),
        ("136\n4.6 3.0\nXx\na\nO\nf 0.30", 3),
        ("136\n4.6 3.0\nTi\nz\nO\nf 0.30", 4),
        ("136\n4.6 3.0\nTi\na 0.10\nO\nf 0.30", 4),
        ("136\n4.6 3.0\nTi\na\nO\nf", 6),
        ("136\n4.6 3.0\nTi\na\nO\na", 6),
        ("136\n4.6 3.0\nTi\n\nO\nf 0.30", 4),
    ):
        with pytest.raises(CrystalTextError, match=f"line {line}"):
            wyckoff.decode(bad)


def test_absurd_fields_are_refused_naming_their_line():
    """Fields like those the fuzz campaign writes (ase_llmgen.fuzz.random_wyckoff): each absurd one is a
    CrystalTextError naming its line."""
    lattice, site = "4.6 3.0", "Ti\na\nO\nf 0.30"
    for group in ("0", "231", "-1", "-136", "+136", "0136", "136.0", "1" * 400, "\u0661\u0663\u0666"):
        with pytest.raises(CrystalTextError, match="line 1"):
            wyckoff.decode(f"{group}\n{lattice}\n{site}")
    for bad in ("1e300 3.0", "nan 3.0", "inf 3.0", "0 3.0", "0.0 3.0", "4.6 " + "1" * 400, "4.6 1000.1", "-4.6 3.0"):
        with pytest.raises(CrystalTextError, match="line 2"):
            wyckoff.decode(f"136\n{bad}\n{site}")
    with pytest.raises(CrystalTextError, match="line 2"):  # triclinic angles that close no cell
        wyckoff.decode("2\n5.0 5.0 5.0 60 60 120\nSi\ni 0.10 0.20 0.30")
    for line in ("A", "aa", "\u03b1", "f", "f 0.30 0.30", "a 0.30", "f nan", "f 1e300", "f " + "1" * 400, "f 100.01"):
        with pytest.raises(CrystalTextError, match="line 6"):
            wyckoff.decode(f"136\n{lattice}\nTi\na\nO\n{line}")
    # thousands of orbits are a crystal of that many sites
    assert len(wyckoff.decode("1\n5.0 5.0 5.0 90 90 90" + "\nSi\na 0.10 0.20 0.30" * 3000)) == 3000


def test_mask_and_codec_registration():
    from ase_llmgen.plugins import codecs, get_codec

    codec = get_codec("wyckoff")
    assert "wyckoff" in codecs() and codec.grammar_conditions == ("spacegroup",)
    text = "136\n4.6 3.0\nTi\na\nO\nf 0.30"
    assert codec.masked(text, "O") == f"136\n4.6 3.0\nTi\na\n{MASK}\nf 0.30"
    with pytest.raises(ValueError):
        codec.masked(text, "S")
    assert codec.site_orders == ("letter", "electronegativity") and codec.text_limit(20) >= len(text)
    # Paper-format texts are not wyckoff texts.
    with pytest.raises(CrystalTextError):
        codec.decode("3.9 3.9 3.9\n90 90 90\nSr\n0.00 0.00 0.00")


def test_a_tiny_wyckoff_model_trains_samples_in_the_group_and_infills(tmp_path, sample_records):
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings
    from ase_llmgen.sampling.sources import generate_atoms, generate_structures
    from ase_llmgen.training import train

    state = train(tiny_config(tmp_path / "run", codec="wyckoff", epochs=1), progress=False)
    assert state["status"] == "finished"
    meta = json.loads((tmp_path / "run" / "model" / "ase_llmgen.json").read_text())
    assert meta["codec"] == "wyckoff" and meta["train_config"]["site_order"] == "letter"
    bundle = load_model(tmp_path / "run" / "model")
    assert bundle.codec_name == "wyckoff"

    # With a formula whose only description in Fm-3m is rock salt (one Na, one Cl: 4a and 4b): exactly 225.
    for atoms in generate_atoms(4, bundle, formula="NaCl", spacegroup=225, max_atoms=2, batch_size=8, seed=0):
        assert atoms.info["text"].startswith("225\n") and wyckoff.spacegroup_number(atoms) == 225
    # Any composition: every sample has Fm-3m's operations (225 itself, or a supergroup; docs/design.md).
    structures = generate_structures(4, bundle, spacegroup=225, max_atoms=4, batch_size=8, seed=1)
    assert len(structures) == 4
    for structure in structures:
        from pymatgen.io.ase import AseAtomsAdaptor

        assert wyckoff.has_symmetry_of(AseAtomsAdaptor.get_atoms(structure), 225)

    # Infill: the parent written and masked in the wyckoff format; the model names an element.
    sampler = Sampler(bundle, SampleSettings(batch_size=4, max_atoms=4), seed=0)
    parent = sample_records[0].atoms
    element = parent.get_chemical_symbols()[0]
    masked = sampler.masked_text(parent, element)
    assert f"\n{MASK}\n" in masked and masked.split("\n")[0].isdigit()
    answers = sampler.infill(masked, 4)
    assert answers and all(a in wyckoff.ELEMENTS for a in answers)

    # The cell temperature covers the group and lattice lines: greedy there, one header for every sample.
    hot = Sampler(bundle, SampleSettings(batch_size=8, max_atoms=4, temperature=2.0, cell_temperature=0.0), seed=0)
    texts = [t for t in hot.complete(generation_prompt(), 8, hot.grammar(), 200) if t is not None]
    assert len(texts) >= 4 and len({tuple(t.split("\n")[:2]) for t in texts}) == 1
