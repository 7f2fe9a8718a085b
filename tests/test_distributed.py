"""`train` and `generate` under torchrun (2 CPU processes, gloo), as a user outgrowing one machine runs them."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ase.db import connect

from conftest import DATA

pytestmark = pytest.mark.slow
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, cwd):
    cmd = [
        TORCHRUN,
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "ase_llmgen.cli",
        *map(str, args),
    ]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_and_generate_data_parallel(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'data = "{DATA / "mp20_val_sample.csv"}"\nd_model = 32\nn_layers = 1\nn_heads = 2\n'
        f"epochs = 1\nbatch_size = 4\nval_fraction = 0.2\nthreads = 1\n"
    )
    torchrun("train", "--config", cfg, "--out", tmp_path / "run", cwd=tmp_path)
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["world"] == 2 and log[-1]["event"] == "finished"

    gen = [
        "generate",
        "-o",
        tmp_path / "g.db",
        "--model",
        tmp_path / "run" / "model",
        "--elements",
        "Na,Cl",
        "--max-atoms",
        "4",
        "--batch-size",
        "8",
        "-q",
    ]
    torchrun(*gen, "-n", "5", cwd=tmp_path)
    rows = list(connect(tmp_path / "g.db").select())
    assert len(rows) == 5 and {r.rank for r in rows} == {0, 1}
    torchrun(*gen, "-n", "7", cwd=tmp_path)  # top up: no duplicates, no gaps
    rows = list(connect(tmp_path / "g.db").select())
    assert len(rows) == 7 and len({r.data["text"] for r in rows}) == 7
    assert not list(tmp_path.glob("g.rank*.db"))
