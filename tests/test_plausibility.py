"""The `plausible` check: contacts against covalent radii (ase_ga's blmin) and cell volume; as a redraw rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.db import connect

from ase_llmgen.checks.plausibility import check_plausible, min_contact_ratio, volume_ratio


def lifepo4_with_short_li_o() -> Atoms:
    # Li 0.9 A from an O: CDVAE-valid (> 0.5 A), but 0.46 x the Li-O covalent bond (1.28 + 0.66 A).
    return Atoms(
        "LiFePO4",
        cell=[4.7, 6.0, 10.3],
        scaled_positions=[
            [0, 0, 0],
            [0.28, 0.25, 0.97],
            [0.09, 0.25, 0.42],
            [0.9 / 4.7, 0, 0],
            [0.6, 0.5, 0.5],
            [0.1, 0.5, 0.2],
            [0.4, 0.8, 0.7],
        ],
        pbc=True,
    )


def test_known_crystals_are_plausible(sample_records):
    flagged = [r.properties["material_id"] for r in sample_records if not check_plausible(r.atoms)["plausible"]]
    # MP-20 crystals: all but mp-995393, Li2S8 at 10x its elements' usual volume, the sparsest crystal of MP-20
    # val (one of the 0.08% of MP-20 the volume rule flags; bench/plausibility.py).
    assert flagged == ["mp-995393"]
    for atoms in (bulk("Cu"), bulk("Fe"), bulk("NaCl", "rocksalt", a=5.64), bulk("Si")):
        out = check_plausible(atoms)
        assert out["plausible"] and 0.8 < out["volume_ratio"] < 1.4


def test_short_contacts_and_low_density_are_flagged():
    from ase_llmgen.checks.validity import structurally_valid

    short = lifepo4_with_short_li_o()
    assert structurally_valid(short)  # CDVAE lets it through...
    out = check_plausible(short)
    assert not out["plausible"] and out["min_contact_ratio"] == pytest.approx(0.9 / 1.94, abs=0.01)
    sparse = bulk("Cu")
    sparse.set_cell(sparse.cell * 4 ** (1 / 3), scale_atoms=True)  # a quarter of copper's density
    out = check_plausible(sparse)
    assert not out["plausible"] and out["volume_ratio"] == pytest.approx(4 * volume_ratio(bulk("Cu")), abs=1e-3)
    assert out["min_contact_ratio"] > 0.6  # nothing is close: the volume alone flags it


@pytest.mark.parametrize("ratio", [0.5, 0.6, 0.8])
def test_contacts_agree_with_ase_ga_blmin(ratio, sample_records):
    from ase_ga.utilities import atoms_too_close, closest_distances_generator

    cases = [r.atoms for r in sample_records] + [lifepo4_with_short_li_o()]
    for atoms in cases:
        blmin = closest_distances_generator(sorted(set(atoms.numbers)), ratio)
        assert atoms_too_close(atoms, blmin) == (min_contact_ratio(atoms) < ratio)


def test_check_command_stores_plausibility(tmp_path):
    from ase_llmgen.cli import main

    db = connect(tmp_path / "s.db")
    db.write(bulk("Cu"))
    db.write(lifepo4_with_short_li_o())
    assert main(["check", str(tmp_path / "s.db")]) == 0
    rows = list(connect(tmp_path / "s.db").select())
    assert [r.plausible for r in rows] == [True, False] and all("volume_ratio" in r for r in rows)
    assert [r.id for r in connect(tmp_path / "s.db").select("plausible=False")] == [2]


def test_requirement_runs_only_the_checks_it_needs():
    from ase_llmgen.checks.require import requirement

    accept = requirement(["plausible"])
    assert accept(bulk("Cu")) and not accept(lifepo4_with_short_li_o())
    assert requirement([]) is None
    with pytest.raises(KeyError, match="no registered check gives a key 'nonsense'"):
        requirement(["nonsense"])


def test_generate_require_counts_rejections_and_stops_at_the_budget(tmp_path, tiny_model_dir, capsys):
    from ase_llmgen.cli import main

    out = tmp_path / "g.db"
    args = ["generate", "-n", "2", "-o", str(out), "--model", str(tiny_model_dir), "--elements", "Na,Cl"]
    args += ["--max-atoms", "4", "--batch-size", "16", "-q", "--require", "plausible"]
    # A random tiny model writes vast cells: every valid sample is rejected, and each one is counted.
    assert main(args) == 1
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["rejected"] > 0 and summary["accepted"] == 0
    assert summary["drawn"] == summary["unparseable"] + summary["invalid"] + summary["rejected"]
    assert main([*args[:-1], "nonsense"]) == 1
    assert "no registered check gives a key 'nonsense'" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_require_plausible_with_the_shipped_model(tmp_path):
    from ase_llmgen.sampling.run import generate_to_file

    out = tmp_path / "g.db"
    summary = generate_to_file(out, 6, max_atoms=8, batch_size=16, require=("plausible",), progress=False)
    assert summary["complete"]
    rows = list(connect(out).select())
    assert len(rows) == 6 and all(r.plausible and r.struct_valid for r in rows)
    assert all(json.loads(r.request)["require"] == ["plausible"] for r in rows)  # part of the request: resumable
    assert np.all([r.min_contact_ratio >= 0.6 for r in rows])


def test_contacts_of_sheared_and_needle_cells_are_found_on_the_reduced_lattice():
    """Model output can be a cell sheared to 179 degrees or 0.01 A thin: the same contacts, found without a
    search over hundreds of thousands of images (which took seconds to minutes before)."""
    from ase.neighborlist import neighbor_list

    positions = np.random.default_rng(0).random((8, 3))
    sheared = Atoms("Na4Cl4", cell=[5.09, 5.09, 5.09, 90, 90, 178.87], scaled_positions=positions, pbc=True)
    i, j, d = neighbor_list("ijd", sheared, 3.1)  # the plain search, for comparison
    radii = np.array([1.66 if s == "Na" else 1.02 for s in sheared.get_chemical_symbols()])
    assert min_contact_ratio(sheared) == pytest.approx(float(np.min(d / (radii[i] + radii[j]))), rel=1e-9)
    needle = Atoms("Na4Cl4", cell=[5.09, 5.09, 5.09, 90, 90, 179.999], scaled_positions=positions, pbc=True)
    assert min_contact_ratio(needle) < 1e-3 and check_plausible(needle)["plausible"] is False
