"""Evaluation on a user's machine: shipped MP-20 data, S.U.N. with denominators, report items, CIF = db."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.db import connect
from ase.io import write

from ase_llmgen.metrics import reference as shipped
from ase_llmgen.metrics.evaluate import evaluate, report_markdown

from conftest import DATA, SHARED, needs_shared


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASE_LLMGEN_CACHE", str(tmp_path / "cache"))


def coincident() -> Atoms:
    # Two Cl on one spot: structurally invalid (CDVAE); a CIF reader that merges sites would hide it.
    return Atoms("NaClCl", cell=[4, 4, 4], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], pbc=True)


def test_validity_is_the_same_from_a_db_and_from_cifs(tmp_path):
    samples = [bulk("NaCl", "rocksalt", a=5.64), coincident(), bulk("Cu")]
    db = connect(tmp_path / "s.db")
    for atoms in samples:
        db.write(atoms)
    (tmp_path / "cifs").mkdir()
    for i, atoms in enumerate(samples):
        write(tmp_path / "cifs" / f"{i}.cif", atoms)
    kwargs = {"reference": None, "train": None, "n_jobs": 1, "progress": False, "unique": False}
    from_db = evaluate(tmp_path / "s.db", **kwargs)
    from_cifs = evaluate(tmp_path / "cifs", **kwargs)
    assert from_db["validity"] == from_cifs["validity"]
    assert from_db["validity"]["struct_valid"] == pytest.approx(2 / 3)


def sun_db(path, train_atoms: Atoms):
    """Five samples with stored relaxation results: the S.U.N. verdict of each is known (see the test)."""
    db = connect(path)
    common = {"relaxed": True, "potential": "chgnet", "potential_settings": "{}", "hull": "mp20", "relax_fmax": 0.1,
              "relax_max_steps": 500, "relax_pool": 4, "relax_selected": 4, "relax_seed": 0}  # fmt: skip
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    db.write(nacl, model="m", temperature=0.7, e_above_hull=-0.01, **common)  # stable, unique, novel: S.U.N.
    db.write(nacl, model="m", temperature=0.7, e_above_hull=-0.02, **common)  # a duplicate of row 1
    db.write(train_atoms, model="m", temperature=0.7, e_above_hull=0.05, **common)  # in the training set
    db.write(bulk("KCl", "rocksalt", a=6.3), model="m", temperature=0.7, e_above_hull=0.3, **common)  # unstable
    db.write(coincident(), model="m", temperature=0.7)  # invalid: never relaxed
    return path


def test_sun_counts_denominators_and_write_back(tmp_path, sample_records):
    train_atoms = sample_records[3].atoms  # Zn6N4 from tests/data, also the training set here
    path = sun_db(tmp_path / "s.db", train_atoms)
    r = evaluate(path, reference=None, train=DATA / "mp20_val_sample.csv", n_jobs=1, progress=False)
    s = r["sun"]
    assert s["n_samples"] == 5 and s["n_relaxed"] == 4 and s["n_candidates"] == 4 and s["exact"]
    assert s["counts"] == {"stable": 2, "metastable": 3, "unique": 3, "novel": 3, "sun": 1, "msun": 1}
    assert s["rates_relaxed"]["sun"] == pytest.approx(1 / 4)
    assert s["rates_all_samples"]["sun"] == pytest.approx(1 / 5)  # all 4 candidates relaxed, of 5 samples
    assert s["p1"]["n_valid"] == 4 and s["p1"]["valid"] == 0.0 and s["p1"]["n_sun"] == 1
    assert s["relaxation"]["potentials"] == {"chgnet {}": 4}
    rows = {row.id: row for row in connect(path).select()}
    assert [rows[i].unique for i in (1, 2, 3, 4)] == [True, False, True, True]
    assert [rows[i].novel for i in (1, 2, 3, 4)] == [True, True, False, True]
    assert "unique" not in rows[5] and "novel" not in rows[5]  # invalid: no verdict
    assert r["label"] == "m, tau 0.7"
    text = report_markdown(r)
    assert "**m, tau 0.7**" in text and "## S.U.N. (stable, unique, novel)" in text
    assert "| **S.U.N.** | 1 | 25.0% | 20.0% |" in text and "eV/atom" in text and "g/cm³" in text
    assert "chgnet (default settings), 4 rows" in text and "hull: mp20" in text
    assert "all 4 valid candidates" in text and "5 (0)" in text  # samples (unreadable)


def test_sun_estimates_from_a_random_subset(tmp_path, sample_records):
    path = sun_db(tmp_path / "s.db", sample_records[3].atoms)
    db = connect(path)
    for row in db.select("relaxed=True"):
        db.update(row.id, relax_pool=8, relax_selected=4)  # as if 4 of 8 candidates had been relaxed
    r = evaluate(path, reference=None, train=DATA / "mp20_val_sample.csv", n_jobs=1, progress=False, write_back=False)
    s = r["sun"]
    assert not s["exact"] and s["rates_all_samples"]["sun"] == pytest.approx(1 / 4 * 8 / 5)
    assert "a random subset of 4 of the 8 valid candidates (seed 0)" in report_markdown(r)
    for row in db.select("relaxed=True"):
        db.update(row.id, relax_pool=8, relax_selected=8)  # all 8 picked, the run stopped after 4
    text = report_markdown(evaluate(path, reference=None, train=None, n_jobs=1, progress=False, write_back=False))
    assert "4 of the 8 valid candidates so far (a run over all of them, unfinished, in row order)" in text
    assert "unique" not in connect(path).get(id=1)  # write_back=False leaves the db alone


def test_no_training_set_means_no_novelty_and_no_sun_count(tmp_path, sample_records):
    path = sun_db(tmp_path / "s.db", sample_records[3].atoms)
    r = evaluate(path, reference=None, train=None, n_jobs=1, progress=False, label="mine")
    assert r["sun"]["counts"]["novel"] is None and r["sun"]["counts"]["sun"] is None
    assert r["sun"]["counts"]["stable"] == 2 and r["label"] == "mine"
    assert "| **S.U.N.** | n/a | n/a | n/a |" in report_markdown(r)


def test_unreadable_samples_are_counted_in_the_markdown(tmp_path):
    (tmp_path / "cifs").mkdir()
    write(tmp_path / "cifs" / "ok.cif", bulk("Cu"))
    (tmp_path / "cifs" / "broken.cif").write_text("data_x\n_cell_length_a 4\n")
    r = evaluate(tmp_path / "cifs", reference=None, train=None, n_jobs=1, progress=False)
    assert r["n_unreadable"] == 1 and r["label"] == "cifs"
    assert "| cifs | 1 (1) |" in report_markdown(r) and "1 unreadable samples are left out" in report_markdown(r)


# --- the shipped MP-20 data ------------------------------------------------------------------------


def test_shipped_data_is_in_the_package_and_modest():
    files = [shipped.HULL_CSV, shipped.ELEMENTAL_REFERENCES, shipped.TEST_CSV, shipped.TEST_FEATURES]
    assert all(f.is_file() for f in files)
    assert (shipped.DATA_DIR / "SOURCES.md").read_text().count("CC BY 4.0") >= 1
    total = sum(p.stat().st_size for p in shipped.DATA_DIR.iterdir())
    assert total < 15e6


def test_shipped_test_features_match_the_test_set():
    import csv
    import gzip

    from ase_llmgen.data.readers import _cif_to_atoms

    feats = shipped.test_features()
    assert len(feats["density"]) == 9046 == len(feats["material_id"])
    assert feats["struct_fp"].shape == (9046, 61) and feats["comp_fp"].shape == (9046, 132)
    with gzip.open(shipped.TEST_CSV, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["material_id"] for r in rows] == feats["material_id"].tolist()  # same crystals, same order
    for k in (0, 9045):  # spot checks: site counts and densities as the describe() of evaluation gives them
        atoms = _cif_to_atoms(rows[k]["cif"])
        assert feats["n_sites"][k] == len(atoms)
        assert feats["density"][k] == pytest.approx(atoms.get_masses().sum() / atoms.get_volume() * 1.66054, rel=1e-4)


@pytest.mark.skipif(not shipped.TRAIN_FEATURES.is_file(), reason="train+val fingerprints not built into this tree")
def test_shipped_train_features_cover_train_and_val():
    feats = shipped.train_features()
    splits, counts = np.unique(feats["split"], return_counts=True)
    assert dict(zip(splits.tolist(), counts.tolist(), strict=True)) == {"train": 27096, "val": 9047}
    assert feats["struct_fp"].shape[1] == 61 and np.mean(feats["struct_ok"]) > 0.99


def test_evaluate_needs_no_reference_argument(tmp_path, monkeypatch):
    # A fresh machine: no shared/ data anywhere above the working directory, nothing in the environment.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASE_LLMGEN_DATA", str(tmp_path / "nonexistent"))
    from ase_llmgen.cli import main

    db = connect(tmp_path / "s.db")
    for a in (5.64, 5.5, 6.0):
        db.write(bulk("NaCl", "rocksalt", a=a), model="default", temperature=1.0)
    assert main(["evaluate", "s.db", "--jobs", "1", "--json", "r.json"]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["reference"]["source"] == shipped.TEST_NAME and r["coverage"]["n_reference"] > 0
    assert r["label"] == "default, tau 1.0" and r["plausibility"]["plausible"] == 1.0
    if shipped.TRAIN_FEATURES.is_file():
        assert r["train"]["source"] == shipped.TRAIN_NAME and "novelty" in r


def test_shipped_hull_gives_e_hull_without_shared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASE_LLMGEN_DATA", str(tmp_path / "nonexistent"))
    from ase_llmgen.metrics.stability import default_reference_hull

    hull = default_reference_hull()
    assert len(hull.mu) == 89
    # NaCl: MP formation energy -2.07 eV/atom is on the MP-20 hull.
    assert hull.e_above_hull("NaCl", -2.2) < 0 < hull.e_above_hull("NaCl", -1.9)


@needs_shared
def test_shipped_hull_and_test_set_are_the_shared_ones():
    import gzip

    with gzip.open(shipped.HULL_CSV, "rb") as handle:
        assert handle.read() == (SHARED / "mp_20" / "hull_reference.csv").read_bytes()
    with gzip.open(shipped.TEST_CSV, "rb") as handle:
        assert handle.read() == (SHARED / "mp_20" / "test.csv").read_bytes()
