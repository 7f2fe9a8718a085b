"""Symmetry detection and checks wired into ASE databases, queried with `ase db`."""

import subprocess
import sys

import pytest
import spglib
from ase import Atoms
from ase.build import bulk
from ase.db import connect

from ase_llmgen.checks import symmetry
from ase_llmgen.checks.database import check_database, write_structures
from ase_llmgen.checks.symmetry import detect_spacegroup
from ase_llmgen.checks.validity import compositionally_valid, structurally_valid


def test_detects_rocksalt():
    sg = detect_spacegroup(bulk("NaCl", "rocksalt", a=5.64))
    assert sg.number == 225 and sg.symbol == "Fm-3m"


def test_tolerance_matters():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[0] += [0.05, 0, 0]
    assert detect_spacegroup(atoms, symprec=0.2).number == 225
    assert detect_spacegroup(atoms, symprec=1e-3).number != 225


def test_spglib_failures_mean_unknown(monkeypatch):
    atoms = bulk("Cu", "fcc", a=3.6)
    monkeypatch.setattr(spglib, "get_symmetry_dataset", lambda *a, **k: None)
    assert detect_spacegroup(atoms) is None

    def boom(*a, **k):
        raise spglib.SpglibError("spglib failed")

    monkeypatch.setattr(symmetry.spglib, "get_symmetry_dataset", boom)
    assert detect_spacegroup(atoms) is None


def test_validity():
    assert structurally_valid(bulk("NaCl", "rocksalt", a=5.64))
    overlapping = Atoms("NaCl", cell=[4, 4, 4], scaled_positions=[[0, 0, 0], [0.05, 0, 0]], pbc=True)
    assert not structurally_valid(overlapping)
    assert compositionally_valid(["Na", "Cl"]) and not compositionally_valid(["Na", "Cl", "Cl"])


def _every_combination(symbols, use_pauling):
    """CDVAE's loop, verbatim in spirit: try every oxidation-state combination of the reduced formula."""
    import itertools
    from math import gcd

    import smact
    from smact.screening import pauling_test

    elements = sorted(set(symbols))
    divisor = 0
    for e in elements:
        divisor = gcd(divisor, symbols.count(e))
    stoich = [symbols.count(e) // divisor for e in elements]
    space = smact.element_dictionary(elements)
    if len(elements) == 1 or all(e in smact.metals for e in elements):
        return True
    enegs = [space[e].pauling_eneg for e in elements]
    for states in itertools.product(*[space[e].oxidation_states_smact14 or [] for e in elements]):
        if sum(o * s for o, s in zip(states, stoich)) == 0:
            if not use_pauling:
                return True
            try:
                if pauling_test(states, enegs):
                    return True
            except TypeError:
                return True
    return False


def test_composition_check_agrees_with_every_combination_and_stays_fast_on_many_elements():
    """The pruned search gives CDVAE's answer; a sample with 20 elements (untrusted model output) is answered."""
    import random

    from ase.data import chemical_symbols

    rng = random.Random(0)
    pool = chemical_symbols[1:95]
    seen = set()
    for k in range(400):
        elements = rng.sample(pool, rng.randint(2, 5)) + (["Pm"] if k % 9 == 0 else [])  # Pm: no electronegativity
        symbols = [e for e in elements for _ in range(rng.randint(1, 4))]
        use_pauling = k % 3 != 0
        expected = _every_combination(symbols, use_pauling)
        assert compositionally_valid(symbols, use_pauling=use_pauling) == expected, (symbols, use_pauling)
        seen.add(expected)
    assert seen == {True, False}
    # 20 elements (no noble gas, which would end it at once): ~10^12 combinations for the loop above.
    twenty = [e for e in pool[:30] if e not in ("He", "Ne", "Ar")][:20]
    assert compositionally_valid(twenty) is True
    assert compositionally_valid(twenty * 2 + ["F"] * 7) is False
    assert compositionally_valid(twenty * 2 + ["F"] * 7, use_pauling=False) is False


def _generated(atoms, **conditions):
    atoms = atoms.copy()
    atoms.info.update(conditions=conditions, model="test", temperature=0.7, top_p=0.9, seed=1, text="t")
    return atoms


def test_database_rows_answer_ase_db_queries(tmp_path):
    db_path = tmp_path / "out.db"
    nacl = _generated(bulk("NaCl", "rocksalt", a=5.64), formula="NaCl", spacegroup=225)
    wrong_sg = _generated(bulk("NaCl", "rocksalt", a=5.64), formula="NaCl", spacegroup=221)
    wrong_formula = _generated(bulk("Cu", "fcc", a=3.6), formula="NaCl", spacegroup=225)
    write_structures(db_path, [nacl, wrong_sg, wrong_formula])
    db = connect(db_path)
    assert db.count("sg_match=True") == 2
    assert db.count("formula_match=True") == 2
    assert db.count("sg_match=True,formula_match=True") == 1
    row = db.get(id=1)
    assert row.req_spacegroup == 225 and row.sg_number == 225 and row.sg_symprec == 0.2
    assert row.valid and row.model == "test" and row.temperature == 0.7 and row.data["text"] == "t"
    # The same query through ASE's own command line, as a user would type it.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ase",
            "db",
            str(db_path),
            "sg_match=True,formula_match=True",
            "-c",
            "id,formula,sg_number",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "Rows: 1" in out.stdout and "NaCl" in out.stdout


def test_formulas_that_read_as_numbers_are_stored(tmp_path):
    # Sodium nitride's reduced formula is "NaN" and indium fluoride's "InF": ASE db refuses
    # both as strings. A model sampled NaN during session 4 and stopped `generate`.
    db_path = tmp_path / "out.db"
    nan = _generated(bulk("NaN", "rocksalt", a=4.8), formula="NaN", spacegroup=225)
    inf = _generated(bulk("InF", "rocksalt", a=5.0), formula="InF", spacegroup=225)
    write_structures(db_path, [nan, inf])
    db = connect(db_path)
    assert db.count("reduced_formula=Na1N1,formula_match=True") == 1
    assert db.get(id=2).req_formula == "In1F1" and db.get(id=2).formula_match
    assert check_database(db_path) == (2, 0)  # re-checking reads them back
    assert db.count("formula_match=True") == 2
    from ase_llmgen.data.readers import read_records

    assert [r.properties["formula"] for r in read_records(db_path)[0]] == ["NaN", "InF"]


def test_check_command_updates_foreign_database_in_place(tmp_path):
    db_path = tmp_path / "foreign.db"
    db = connect(db_path)
    db.write(bulk("NaCl", "rocksalt", a=5.64), req_spacegroup=225, note="kept")
    db.write(bulk("Cu", "fcc", a=3.6))
    from ase_llmgen.cli import main

    assert main(["check", str(db_path)]) == 0
    first, second = connect(db_path).get(id=1), connect(db_path).get(id=2)
    assert first.sg_match is True and first.note == "kept" and second.sg_number == 225
    assert "sg_match" not in second.key_value_pairs  # nothing was requested


def test_check_is_transactional(tmp_path, monkeypatch):
    db_path = tmp_path / "x.db"
    db = connect(db_path)
    for _ in range(3):
        db.write(bulk("Cu", "fcc", a=3.6))
    from ase_llmgen.checks import database

    calls = {"n": 0}

    def flaky(atoms, conditions, symprec=0.2):
        calls["n"] += 1
        # 'id' is a reserved key: ASE refuses the update of the third row.
        return {"ok": True} if calls["n"] < 3 else {"id": 5}

    monkeypatch.setattr(database, "run_checks", flaky)
    with pytest.raises(TypeError):  # ASE refuses reserved keys
        check_database(db_path)
    assert all("ok" not in row.key_value_pairs for row in connect(db_path).select())


def test_check_missing_database_is_an_error(tmp_path):
    from ase_llmgen.cli import main

    assert main(["check", str(tmp_path / "nope.db")]) == 1


def test_check_leaves_non_crystal_rows_alone(tmp_path):
    from ase.build import molecule

    db_path = tmp_path / "mixed.db"
    db = connect(db_path)
    db.write(molecule("H2O"))
    db.write(bulk("Cu", "fcc", a=3.6))
    assert check_database(db_path) == (1, 1)
    assert "sg_number" not in connect(db_path).get(id=1).key_value_pairs
    assert connect(db_path).get(id=2).sg_number == 225
