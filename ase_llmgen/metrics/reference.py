"""MP-20 reference data shipped in the package, so evaluation and E_hull work on a fresh machine.

Files in ``ase_llmgen/metrics/data/mp_20/`` (built from the CDVAE MP-20 split by
``bench/build_reference_data.py``; sources and licence in ``SOURCES.md`` there):

* ``hull_reference.csv.gz``: composition and MP formation energy of all 45,229 MP-20
  materials (train, val, test): the reference convex hull;
* ``mp_elemental_references.json.gz``: MP's lowest-energy entry per element (89), for
  formation energies;
* ``test.csv.gz``: the 9,046 MP-20 test crystals (CDVAE CSV), the paper's evaluation set;
* ``test_features.npz.xz``: their fingerprints, validity, density and element/site counts,
  as :func:`ase_llmgen.metrics.evaluate.reference_features` computes them;
* ``train_val_features.npz.xz``: the same for MP-20 train + val (36,143 crystals), for novelty.

The paper's protocol: train on train, choose checkpoints on val, evaluate on test, and call a
sample novel when it matches no crystal of train + val. Structure fingerprints are stored as
float16 (CrystalNN "ops" values lie in [0, 1]: at most 2.4e-4 off each, a distance at most
~2e-3 off, against cutoffs of 0.1-0.4); everything else as computed.
"""

from __future__ import annotations

import io
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data" / "mp_20"
HULL_CSV = DATA_DIR / "hull_reference.csv.gz"
ELEMENTAL_REFERENCES = DATA_DIR / "mp_elemental_references.json.gz"
TEST_CSV = DATA_DIR / "test.csv.gz"
TEST_FEATURES = DATA_DIR / "test_features.npz.xz"
TRAIN_FEATURES = DATA_DIR / "train_val_features.npz.xz"

# Names under which shipped sets appear in reports.
TEST_NAME = "MP-20 test (shipped, 9,046 crystals)"
TRAIN_NAME = "MP-20 train + val (shipped, 36,143 crystals)"
HULL_NAME = "MP-20 hull (shipped: MP formation energies of 45,229 MP-20 materials, elements at 0)"

_FLOAT16 = ("struct_fp",)


def save_features(path: str | Path, features: dict) -> Path:
    """Write a features dict (arrays) as an xz-compressed ``.npz`` (structure fingerprints as float16)."""
    arrays = {}
    for key, value in features.items():
        if key == "cached":
            continue
        value = np.asarray(value)
        arrays[key] = value.astype(np.float16) if key in _FLOAT16 else value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", preset=9 | lzma.PRESET_EXTREME) as handle:
        handle.write(buffer.getvalue())
    tmp.replace(path)
    return path


def load_features(path: str | Path) -> dict:
    """Read :func:`save_features` output back (float arrays as float64, as computed ones are)."""
    path = Path(path)
    if not path.is_file():
        hint = "reinstall ase-llmgen, or build it with bench/build_reference_data.py"
        raise FileNotFoundError(f"{path}: shipped reference data missing ({hint})")
    with lzma.open(path, "rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    for key, value in out.items():
        if value.dtype.kind == "f":
            out[key] = value.astype(float)
    return out


@lru_cache(maxsize=1)
def test_features() -> dict:
    """Fingerprints and properties of the MP-20 test set (see :func:`reference_features` for the keys)."""
    return load_features(TEST_FEATURES)


@lru_cache(maxsize=1)
def train_features() -> dict:
    """Fingerprints and properties of MP-20 train + val (``split`` says which), for novelty."""
    return load_features(TRAIN_FEATURES)


def shipped_hull():
    """The MP-20 reference hull with MP elemental references (:class:`~.stability.ReferenceHull`)."""
    from ase_llmgen.metrics.stability import reference_hull

    return reference_hull(HULL_CSV, ELEMENTAL_REFERENCES)
