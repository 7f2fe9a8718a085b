"""Build the MP-20 reference data shipped in ``ase_llmgen/metrics/data/mp_20/`` from ``shared/data``.

Usage:
  nice -n 10 python bench/build_reference_data.py --shared ../shared/data --work build/reference_data
  python bench/build_reference_data.py --pack-only   # after the fingerprints are done

Two stages:

1. fingerprints: every crystal of MP-20 test, val and train is described exactly as
   ``ase_llmgen.metrics.evaluate.reference_features`` would describe it (CrystalNN "ops" structure and
   Magpie composition fingerprints, validity, density, element and site counts), in chunks written to
   ``--work`` as they finish. Killed and rerun, it starts at the first missing chunk. Test takes ~15 min on
   two cores, train + val about four times that.
2. pack: the chunks become the package files (see ``ase_llmgen/metrics/reference.py`` for what each holds):
   ``test.csv.gz`` (the test crystals, CDVAE CSV), ``test_features.npz`` and ``train_val_features.npz``
   (fingerprints), ``hull_reference.csv.gz`` (hull entries) and ``mp_elemental_references.json.gz``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np

from ase_llmgen.metrics.evaluate import _stack, describe
from ase_llmgen.metrics.fingerprints import SYMPREC, _featurizers, parallel_map

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "ase_llmgen" / "metrics" / "data" / "mp_20"
SPLITS = ("test", "val", "train")
CHUNK = 256
TIME_LIMIT = 60.0


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe_cif(text: str) -> dict:
    """What ``reference_features`` computes for one crystal, from its CIF (parsed in the worker)."""
    from ase_llmgen.data.readers import _cif_to_atoms

    return describe(_cif_to_atoms(text), fingerprint="all", time_limit=TIME_LIMIT, symprec=SYMPREC)


def fingerprint_split(csv_path: Path, work: Path, n_jobs: int) -> Path:
    """Describe every crystal of ``csv_path`` into ``work/<split>/chunk_*.npz``; returns that folder."""
    folder = work / csv_path.stem
    folder.mkdir(parents=True, exist_ok=True)
    with open(csv_path, newline="") as handle:
        records = list(csv.DictReader(handle))
    (folder / "source.txt").write_text(f"{csv_path}\nsha256 {_sha(csv_path)}\nrows {len(records)}\n")
    ids = [r["material_id"] for r in records]
    n_chunks = (len(records) + CHUNK - 1) // CHUNK
    start = time.perf_counter()
    for i in range(n_chunks):
        target = folder / f"chunk_{i:05d}.npz"
        if target.exists():
            continue
        part = records[i * CHUNK : (i + 1) * CHUNK]
        descs = parallel_map(_describe_cif, [r["cif"] for r in part], n_jobs, progress=False)
        out = _stack(descs)
        out["material_id"] = np.array(ids[i * CHUNK : (i + 1) * CHUNK])
        tmp = target.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **out)
        tmp.replace(target)  # atomic: a killed run never leaves half a chunk
        print(
            f"{csv_path.stem}: chunk {i + 1}/{n_chunks} done ({time.perf_counter() - start:.0f} s this run)",
            flush=True,
        )
    return folder


def load_chunks(folder: Path) -> dict:
    """All chunks of one split, concatenated in order."""
    chunks = sorted(folder.glob("chunk_[0-9]*.npz"))
    if not chunks:
        raise FileNotFoundError(f"{folder}: no fingerprint chunks (run without --pack-only first)")
    parts = []
    for chunk in chunks:
        with np.load(chunk, allow_pickle=False) as data:
            parts.append({k: data[k] for k in data.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(SHARED), help="folder with mp_20/ and mp_reference/")
    parser.add_argument("--work", default=str(ROOT / "build" / "reference_data"), help="where chunks go")
    parser.add_argument("--out", default=str(OUT), help="package data folder to write")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--pack-only", action="store_true", help="only pack finished chunks")
    parser.add_argument("--tables-only", action="store_true", help="only the hull, elemental and test-set files")
    args = parser.parse_args()
    shared, work = Path(args.shared), Path(args.work)
    out = Path(args.out)
    pack_tables(shared, out)  # no fingerprints needed: written first
    if not args.tables_only:
        _featurizers()  # built once here, inherited by the worker processes
        if not args.pack_only:
            for split in args.splits.split(","):
                fingerprint_split(shared / "mp_20" / f"{split}.csv", work, args.jobs)
        pack_features(work, out)
    sizes(out)


def pack_features(work: Path, out: Path) -> None:
    """``test_features.npz.xz`` and ``train_val_features.npz.xz`` from the finished chunks."""
    from ase_llmgen.metrics.reference import TEST_FEATURES, TRAIN_FEATURES, save_features

    out.mkdir(parents=True, exist_ok=True)
    save_features(out / TEST_FEATURES.name, load_chunks(work / "test"))
    train_val: dict = {}
    for split in ("train", "val"):
        part = load_chunks(work / split)
        part["split"] = np.array([split] * len(part["density"]))
        for key, value in part.items():
            train_val.setdefault(key, []).append(value)
    save_features(out / TRAIN_FEATURES.name, {k: np.concatenate(v) for k, v in train_val.items()})


def _gzip_copy(src: Path, dst: Path) -> None:
    # No file name or time stamp in the header: a rebuild gives the same bytes.
    with open(src, "rb") as source, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as target:
            shutil.copyfileobj(source, target)


def pack_tables(shared: Path, out: Path) -> None:
    """The hull entries, the elemental references and the test crystals, compressed."""
    from ase_llmgen.metrics.reference import ELEMENTAL_REFERENCES, HULL_CSV, TEST_CSV

    out.mkdir(parents=True, exist_ok=True)
    _gzip_copy(shared / "mp_20" / "test.csv", out / TEST_CSV.name)
    _gzip_copy(shared / "mp_20" / "hull_reference.csv", out / HULL_CSV.name)
    shutil.copyfile(
        shared / "mp_reference" / "2023-02-07-mp-elemental-reference-entries.json.gz", out / ELEMENTAL_REFERENCES.name
    )


def sizes(out: Path) -> None:
    """Print what the package data costs."""
    total = 0
    for p in sorted(out.iterdir()):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.name}: {p.stat().st_size / 1e6:.2f} MB")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
