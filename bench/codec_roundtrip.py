"""Round trip of every structure of the CDVAE test sets through the paper codec.

Usage: python bench/codec_roundtrip.py [--shared ../shared/data]
Prints max/mean errors per dataset and how the original int() truncation of angles compares with rounding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ase_llmgen.data.readers import read_records
from ase_llmgen.text import paper


def truncated_angles(atoms) -> np.ndarray:
    # The original code's int() on angles, for comparison.
    return np.array([int(x) for x in atoms.cell.cellpar()[3:]], dtype=float)


def measure(path: Path) -> dict:
    records, skipped = read_records(path, on_error="skip")
    len_err, ang_err, frac_err, trunc_err, species_ok = [], [], [], [], 0
    for record in records:
        atoms = record.atoms
        back = paper.decode(paper.encode(atoms))
        p0, p1 = atoms.cell.cellpar(), back.cell.cellpar()
        len_err.append(np.abs(p0[:3] - p1[:3]).max())
        ang_err.append(np.abs(p0[3:] - p1[3:]).max())
        trunc_err.append(np.abs(p0[3:] - truncated_angles(atoms)).max())
        d = (atoms.get_scaled_positions() - back.get_scaled_positions() + 0.5) % 1 - 0.5
        frac_err.append(np.abs(d).max())
        species_ok += atoms.get_chemical_symbols() == back.get_chemical_symbols()
    len_err, ang_err, frac_err, trunc_err = map(np.array, (len_err, ang_err, frac_err, trunc_err))
    return {
        "file": str(path),
        "structures": len(records),
        "skipped": len(skipped),
        "species_exact": species_ok / len(records),
        "length_err_max_A": float(len_err.max()),
        "length_err_mean_A": float(len_err.mean()),
        "angle_err_max_deg": float(ang_err.max()),
        "angle_err_mean_deg": float(ang_err.mean()),
        "frac_err_max": float(frac_err.max()),
        "frac_err_mean": float(frac_err.mean()),
        "within_tolerance": float(
            np.mean((len_err <= 0.05 + 1e-9) & (ang_err <= 0.5 + 1e-9) & (frac_err <= 0.005 + 1e-9))
        ),
        "truncated_angle_err_max_deg": float(trunc_err.max()),
        "truncated_angle_over_0.5deg": float(np.mean(trunc_err > 0.5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    shared = Path(args.shared)
    results = [measure(shared / name / "test.csv") for name in ("mp_20", "carbon_24", "perov_5")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
