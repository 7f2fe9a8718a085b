"""Kill the real CLI (SIGKILL) in the middle of generate, mutate and check, rerun it, and count.

Each run is a subprocess with a timeout, so a run that hangs (e.g. on a lock a killed run left)
fails the test instead of blocking the suite.  A tiny random model keeps generation fast.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ase.build import bulk
from ase.db import connect

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds per CLI run: far above what each takes, so only a hang reaches it


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ase_llmgen.cli", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def _count(path: Path, selection: str | None = None) -> int:
    try:
        return connect(path).count(selection) if path.exists() else 0
    except sqlite3.OperationalError:  # polled while the child is still creating the tables
        return 0


def _kill_when(proc: subprocess.Popen, ready, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to ``proc`` as soon as ``ready()`` holds (the run failing first fails the test)."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never got far enough to be killed")
        time.sleep(0.05)
    proc.send_signal(signum)
    proc.communicate(timeout=TIMEOUT)


def _no_lock_left(path: Path) -> None:
    assert not path.with_name(path.name + ".lock").exists()


def _draws(path: Path) -> Counter:
    return Counter((row.batch, row.sample) for row in connect(path).select())


GENERATE = ("--max-atoms", "4", "--keep-invalid", "--seed", "3", "-q")


def test_generate_killed_then_rerun_loses_and_repeats_nothing(tmp_path, tiny_model_dir):
    out = tmp_path / "g.db"
    args = ("generate", "-o", str(out), "--model", str(tiny_model_dir), *GENERATE)
    # One batch of 64: before crystals were written as they finished, nothing reached the file before
    # the whole batch was done; now the first rows are there while the batch is still being decoded.
    proc = subprocess.Popen(_cli(*args, "-n", "2000", "--batch-size", "64"), env=_env(), stdout=subprocess.PIPE)
    _kill_when(proc, lambda: _count(out) >= 2)
    _no_lock_left(out)
    killed = _count(out)
    assert killed < 40 and {b for b, _ in _draws(out)} == {0}  # written one by one, from the first batch
    done = _run(*args, "-n", str(killed + 5), "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["already_there"] == killed and summary["written"] == 5 and summary["duplicates"] == 0
    draws = _draws(out)
    assert sum(draws.values()) == killed + 5 and max(draws.values()) == 1  # no row twice
    assert min(b for b, _ in draws if b > 0) >= 1  # the rerun drew new batches (new seeds)
    _no_lock_left(out)


def test_two_identical_generate_runs_at_once_write_n_distinct_rows(tmp_path, tiny_model_dir):
    out = tmp_path / "g.db"
    args = ("generate", "-o", str(out), "--model", str(tiny_model_dir), "-n", "16", "--batch-size", "4", *GENERATE)
    procs = [subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    draws = _draws(out)
    assert sum(draws.values()) == 16 and max(draws.values()) == 1  # before: every row twice
    assert sum(json.loads(o)["written"] for o in outputs) == 16
    _no_lock_left(out)
    from ase_llmgen.cli import main

    assert main(list(args)) == 0 and _count(out) == 16  # a rerun finds the work done


def test_mutate_killed_then_rerun_gives_each_parent_one_child(tmp_path):
    parents = tmp_path / "parents.db"
    with connect(parents) as db:
        for k in range(60):
            db.write(bulk("NaCl", "rocksalt", a=5.6 + 0.001 * k))
            db.write(bulk("MgO", "rocksalt", a=4.2 + 0.001 * k))
    out = tmp_path / "children.db"
    args = ("mutate", str(parents), "-o", str(out), "--operator", "uniform_substitution", "--seed", "1", "-q")
    proc = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.PIPE)
    _kill_when(proc, lambda: _count(out) >= 5)
    _no_lock_left(out)
    killed = _count(out)
    assert killed < 120
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    per_parent = Counter(row.parent_id for row in connect(out).select())
    assert max(per_parent.values()) == 1  # no parent mutated twice
    # Every parent has its child, or failed in the rerun (failures are tried again by the next rerun).
    assert summary["children"] + summary["failed"] == 120 - killed and len(per_parent) == killed + summary["children"]
    _no_lock_left(out)


def test_check_killed_mid_transaction_changes_nothing_and_rerun_completes(tmp_path):
    path = tmp_path / "c.db"
    with connect(path) as db:
        for k in range(150):
            db.write(bulk("NaCl", "rocksalt", a=5.6 + 0.001 * k), mark=k)
    journal = path.with_name(path.name + "-journal")
    proc = subprocess.Popen(_cli("check", str(path), "-q"), env=_env(), stdout=subprocess.PIPE)
    _kill_when(proc, journal.exists)  # the transaction has begun writing
    _no_lock_left(path)
    assert _count(path) == 150 and _count(path, "struct_valid") == 0  # rolled back: all or nothing
    done = _run("check", str(path), "-q")
    assert done.returncode == 0, done.stderr
    assert "checked 150 rows" in done.stdout
    assert _count(path) == 150 and _count(path, "struct_valid=True") == 150
    _no_lock_left(path)
