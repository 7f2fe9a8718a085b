"""`ase-llmgen relax`: any registered calculator, keys in the db, seeded subsets, resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.db import connect

from ase_llmgen.metrics.stability import ReferenceHull

# A test plugin: ASE's EMT (fast, metals) as a registered calculator, slowed down per call so a
# relaxation run lasts long enough to be killed in the middle.
PLUGIN = textwrap.dedent(
    """
    import time

    import pluggy
    from ase.calculators.emt import EMT

    from ase_llmgen.registry import CalculatorSpec

    hookimpl = pluggy.HookimplMarker("ase_llmgen")


    class SlowEMT(EMT):
        def __init__(self, delay=0.0, **kwargs):
            super().__init__(**kwargs)
            self.delay = delay

        def calculate(self, *args, **kwargs):
            time.sleep(self.delay)
            super().calculate(*args, **kwargs)


    @hookimpl
    def register_calculators():
        return [CalculatorSpec("emt_test", SlowEMT, "ASE EMT, optionally slowed (test plugin)")]
    """
)


def _install_plugin(tmp_path: Path) -> dict:
    (tmp_path / "emt_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "emt_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: emt-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ase_llmgen]\nemt_test = emt_test_plugin\n")
    (info / "RECORD").write_text("")
    return dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def emt_registered(tmp_path, monkeypatch):
    """The EMT test plugin registered in this process too (the plugin manager is rebuilt around it)."""
    from ase_llmgen import plugins

    site = tmp_path / "plugin_site"
    site.mkdir()
    env = _install_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    plugins.get_plugin_manager.cache_clear()
    yield env
    plugins.get_plugin_manager.cache_clear()


def metal_db(path: Path, n: int = 6) -> Path:
    """``n`` rattled, strained metal cells (EMT knows Cu, Al, Ni) plus one invalid and one molecule row."""
    db = connect(path)
    for i in range(n):
        atoms = bulk(("Cu", "Al", "Ni")[i % 3], "fcc", a=(3.7, 4.1, 3.6)[i % 3], cubic=True)
        atoms.rattle(0.05, seed=i)
        db.write(atoms, model="test", temperature=0.7)
    db.write(Atoms("Cu2", scaled_positions=[[0, 0, 0], [0.01, 0, 0]], cell=[4, 4, 4], pbc=True))  # invalid
    db.write(Atoms("Cu"))  # not a crystal
    return path


def metal_hull() -> ReferenceHull:
    # EMT energies are not MP's: these references only exercise the bookkeeping.
    return ReferenceHull.from_formation_energies([], mu={"Cu": 0.0, "Al": 0.0, "Ni": 0.0})


def test_relax_in_place_subset_and_resume(tmp_path, emt_registered):
    from ase_llmgen.relax.runner import relax_database

    db_path = metal_db(tmp_path / "s.db")
    first = relax_database(db_path, calculator="emt_test", max_relax=4, seed=3, hull=metal_hull(), progress=False)
    assert first["candidates"] == 6 and first["selected"] == 4 and first["relaxed_now"] == 4
    rows = list(connect(db_path).select("relaxed=True"))
    assert len(rows) == 4
    row = rows[0]
    assert row.potential == "emt_test" and json.loads(row.potential_settings) == {}
    assert row.relax_pool == 6 and row.relax_selected == 4 and row.relax_seed == 3 and row.hull == "custom"
    assert {"energy_per_atom", "e_form", "e_above_hull", "relax_steps", "relax_converged"} <= set(row.key_value_pairs)
    assert row.e_above_hull == pytest.approx(row.e_form)  # nothing but the elements on this hull
    assert row.data["relaxed_cell"].shape == (3, 3) and row.data["relaxed_positions"].shape == (len(row.numbers), 3)
    again = relax_database(db_path, calculator="emt_test", max_relax=4, seed=3, hull=metal_hull(), progress=False)
    assert again["already_done"] == 4 and again["relaxed_now"] == 0  # the same seeded subset, nothing to redo
    assert sorted(r.id for r in connect(db_path).select("relaxed=True")) == sorted(r.id for r in rows)
    with pytest.raises(ValueError, match="relax_fmax"):  # other settings are refused, not mixed in
        relax_database(db_path, calculator="emt_test", fmax=0.01, hull=metal_hull(), progress=False)


def test_relax_to_output_keeps_source_id_and_relaxed_atoms(tmp_path, emt_registered):
    from ase_llmgen.relax.runner import relax_database

    src = metal_db(tmp_path / "s.db")
    out = tmp_path / "relaxed.db"
    summary = relax_database(src, out, calculator="emt_test", hull=metal_hull(), progress=False)
    assert summary["relaxed_now"] == 6 and summary["failed_now"] == 0
    assert all("relaxed" not in r.key_value_pairs for r in connect(src).select())  # input untouched
    for row in connect(out).select():
        original = connect(src).get(id=row.source_id)
        assert row.formula == original.formula and row.model == "test"  # provenance copied
        assert row.energy == pytest.approx(row.energy_per_atom * row.natoms)  # energy attached to the atoms
        assert row.relax_converged and row.fmax < 0.1  # forces of the relaxed structure
        assert not np.allclose(row.positions, original.positions)  # the row holds the relaxed structure
        assert "valid" in row and "plausible" in row  # checks recomputed on it
    assert relax_database(src, out, calculator="emt_test", hull=metal_hull(), progress=False)["relaxed_now"] == 0


def _rows_written(path: Path) -> int:
    """Rows in an ASE SQLite db, read without ASE: its connect() would create the tables under the writer."""
    import contextlib
    import sqlite3

    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as con:
            return con.execute("SELECT count(*) FROM systems").fetchone()[0]
    except sqlite3.OperationalError:  # tables not made yet, or the writer is busy
        return 0


def test_relax_cli_killed_and_rerun_loses_and_repeats_nothing(tmp_path):
    env = _install_plugin(tmp_path)
    src = metal_db(tmp_path / "s.db", n=24)
    out = tmp_path / "out.db"
    cmd = [sys.executable, "-m", "ase_llmgen.cli", "relax", str(src), "-o", str(out), "--calculator", "emt_test"]
    cmd += ["--set", "delay=0.02", "--fmax", "0.02", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _rows_written(out) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not list(tmp_path.glob("*.lock"))  # no lock left behind
    done = connect(out).count()
    assert done >= 2
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)  # stdout holds only the summary
    assert summary["already_done"] == done and summary["relaxed_now"] == 24 - done
    ids = [row.source_id for row in connect(out).select()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 24  # none lost, none twice
    assert not list(tmp_path.glob("*.lock"))


def test_relax_cli_errors_name_the_problem(tmp_path, capsys):
    from ase_llmgen.cli import main

    assert main(["relax", str(tmp_path / "missing.db")]) == 1
    assert "missing.db: no such database" in capsys.readouterr().err
    src = metal_db(tmp_path / "s.db", n=1)
    assert main(["relax", str(src), "--calculator", "nope"]) == 1
    assert "unknown calculator 'nope'" in capsys.readouterr().err
    assert main(["relax", str(src), "--set", "oops"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_mp2020_correction_for_potentials_with_raw_energies():
    from ase_llmgen.plugins import calculators
    from ase_llmgen.relax.runner import energy_keys, mp2020_correction

    nio = bulk("NiO", "rocksalt", a=4.17)
    # MP2020: oxide anion correction -0.687 eV per O and the GGA/GGA+U mixing correction -2.541 eV per Ni (U = 6.2)
    assert mp2020_correction(nio, -5.0) == pytest.approx((-0.687 - 2.541) / 2, abs=0.01)
    assert mp2020_correction(bulk("Cu"), -4.0) == 0.0  # an element: nothing to correct
    hull = ReferenceHull.from_formation_energies([], mu={"Ni": -5.8, "O": -4.9})
    raw = energy_keys(nio, -5.0, hull, "raw")
    corrected = energy_keys(nio, -5.0, hull)
    assert raw["e_form"] == pytest.approx(corrected["e_form"] + raw["energy_correction"])
    assert calculators()["sevenn"].energy_scale == "raw" and calculators()["chgnet"].energy_scale == "mp2020"
    collapsed = energy_keys(nio, -2.4e7, hull)  # a potential that crushed the cell: an error, not an E_hull
    assert "e_above_hull" not in collapsed and "unphysical formation energy" in collapsed["relax_error"]


def test_relax_subset_is_seeded():
    from ase_llmgen.relax.runner import pick_subset

    assert pick_subset(10, 4, seed=1) == pick_subset(10, 4, seed=1) != pick_subset(10, 4, seed=2)
    assert pick_subset(10, None, 0) == list(range(10)) == pick_subset(10, 20, 0)


@pytest.mark.slow
def test_chgnet_is_the_default_and_stdout_is_only_json(tmp_path):
    from ase_llmgen.checks.database import write_structures
    from ase_llmgen.data.readers import read_records

    from conftest import DATA

    records, _ = read_records(DATA / "mp20_val_sample.csv")
    src = tmp_path / "s.db"
    write_structures(src, [r.atoms for r in records[:2]])
    run = subprocess.run(
        [sys.executable, "-m", "ase_llmgen.cli", "relax", str(src), "--steps", "5", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["potential"] == "chgnet" and summary["relaxed_now"] == 2
    rows = list(connect(src).select("relaxed=True"))
    # MP-20 crystals relaxed by CHGNet sit near the MP-20 hull (eV/atom).
    assert all(r.potential == "chgnet" and r.hull == "mp20" and -0.3 < r.e_above_hull < 0.3 for r in rows)


@pytest.mark.slow
def test_sevennet_relaxes_when_installed():
    pytest.importorskip("sevenn")
    from ase_llmgen.relax.runner import relax_atoms

    strained = bulk("NaCl", "rocksalt", a=5.9)
    res = relax_atoms(strained, "sevenn", {"device": "cpu"}, steps=60, time_limit=None)
    assert res["atoms"].get_volume() < strained.get_volume() and -4.5 < res["energy_per_atom"] < -2.5


def test_larger_subsets_extend_smaller_ones():
    from ase_llmgen.relax.runner import pick_subset

    for n, seed in ((50, 0), (837, 3)):
        previous: set = set()
        for k in (1, 2, 5, 20, 49):
            chosen = set(pick_subset(n, k, seed))
            assert len(chosen) == k and previous <= chosen
            previous = chosen
    assert pick_subset(5, 10, 0) == [0, 1, 2, 3, 4]
