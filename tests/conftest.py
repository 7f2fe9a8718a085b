"""Shared fixtures: offline mode, small structures shipped in tests/data, a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tiny models run fastest on one thread (and the sampler keeps a user's OMP_NUM_THREADS).
os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data (full datasets)")


@pytest.fixture(scope="session")
def sample_records():
    from ase_llmgen.data.readers import read_records

    records, skipped = read_records(DATA / "mp20_val_sample.csv")
    assert not skipped
    return records


@pytest.fixture(scope="session")
def mp20_structures():
    """The crystals of the shipped MP-20 excerpts (train and val), as ``ase.Atoms``."""
    from ase_llmgen.data.readers import read_records

    return [r.atoms for path in sorted(DATA.glob("mp20_*.csv")) for r in read_records(path, on_error="skip")[0]]


@pytest.fixture(scope="session")
def tiny_bundle():
    """A tiny randomly initialised small model (seeded): garbage text, but real code paths."""
    from ase_llmgen.models import scratch

    bundle = scratch.build(d_model=32, n_layers=1, n_heads=2, max_len=512, seed=0)
    bundle.model.eval()
    return bundle


@pytest.fixture(scope="session")
def tiny_coord_bundle():
    """The same tiny model with one token per fractional coordinate."""
    from ase_llmgen.models import scratch

    bundle = scratch.build(d_model=32, n_layers=1, n_heads=2, max_len=512, seed=0, coordinate_tokens=True)
    bundle.model.eval()
    return bundle


@pytest.fixture(params=["characters", "coordinates"])
def any_tiny_bundle(request):
    """Each tokenizer in turn: digit per token, and coordinate per token."""
    return request.getfixturevalue("tiny_bundle" if request.param == "characters" else "tiny_coord_bundle")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_bundle):
    from ase_llmgen.models import scratch

    path = tmp_path_factory.mktemp("tiny_model")
    scratch.save(tiny_bundle, path)
    return path


def tiny_config(out, **kw):
    """A training config for a tiny model on the shipped MP-20 excerpt; ``kw`` overrides."""
    from ase_llmgen.training import TrainConfig

    base = dict(
        data=str(DATA / "mp20_val_sample.csv"),
        out=str(out),
        d_model=32,
        n_layers=1,
        n_heads=2,
        max_len=512,
        epochs=2,
        batch_size=4,
        lr=3e-3,
        warmup_steps=1,
        val_fraction=0.2,
        eval_every=2,
        save_every=1,
        seed=0,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)
