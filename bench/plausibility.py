"""Calibrate the ``plausible`` check on MP-20 and write its per-element volumes.

Usage:
  python bench/plausibility.py --shared ../shared/data            # volumes + volume ratios (seconds)
  nice -n 10 python bench/plausibility.py --contacts               # also contact ratios of test (~10 CPU-min)

1. Per-element volumes: a non-negative least-squares fit of ``V_cell = sum_i n_i v_i`` over the
   MP-20 train crystals (cell volume and composition read from the CIFs' ``_cell_volume`` and
   ``_chemical_formula_sum``), written to ``ase_llmgen/checks/data/atomic_volumes_mp20.json``.
2. The distribution of ``V_cell / sum_i n_i v_i`` on MP-20 val and test (held out from the fit),
   and with ``--contacts`` of the shortest contact over the covalent-radius sum on test: the
   percentiles the thresholds in :mod:`ase_llmgen.checks.plausibility` were chosen from.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "ase_llmgen" / "checks" / "data" / "atomic_volumes_mp20.json"
PERCENTILES = (0, 0.01, 0.1, 1, 50, 99, 99.9, 99.99, 100)

csv.field_size_limit(1 << 28)


def volumes_and_counts(path: Path) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Cell volumes (A^3) and compositions of a CDVAE CSV, from the CIF header lines."""
    volumes, comps = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            cif = row["cif"]
            volume = float(re.search(r"_cell_volume\s+([0-9.eE+-]+)", cif).group(1))
            found = re.search(r"_chemical_formula_sum\s+(?:'([^']+)'|(\S+))", cif)
            formula = found.group(1) or found.group(2)
            comp = {}
            for part in formula.split():
                symbol, count = re.fullmatch(r"([A-Z][a-z]?)([0-9.]*)", part).groups()
                comp[symbol] = comp.get(symbol, 0.0) + float(count or 1)
            volumes.append(volume)
            comps.append(comp)
    return np.array(volumes), comps


def fit_volumes(volumes: np.ndarray, comps: list[dict[str, float]]) -> dict[str, float]:
    """Per-element volumes from ``V = sum_i n_i v_i`` (non-negative least squares, relative residuals)."""
    from scipy.optimize import nnls

    elements = sorted({el for c in comps for el in c})
    index = {el: k for k, el in enumerate(elements)}
    matrix = np.zeros((len(comps), len(elements)))
    for row, comp in enumerate(comps):
        for el, n in comp.items():
            matrix[row, index[el]] = n
    # Divide each equation by its volume: every crystal weighs the same whatever its size.
    solution, _ = nnls(matrix / volumes[:, None], np.ones(len(volumes)), maxiter=50 * len(elements))
    return {el: round(float(solution[index[el]]), 4) for el in elements}


def ratios(volumes: np.ndarray, comps: list[dict[str, float]], per_element: dict[str, float]) -> np.ndarray:
    from ase_llmgen.checks.plausibility import expected_volume

    return np.array([v / expected_volume(c, per_element) for v, c in zip(volumes, comps, strict=True)])


def contact_ratios(path: Path) -> np.ndarray:
    from ase_llmgen.checks.plausibility import min_contact_ratio
    from ase_llmgen.data.readers import read_records

    records, _ = read_records(path)
    return np.array([min_contact_ratio(r.atoms) for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--contacts", action="store_true", help="also contact ratios of MP-20 test (slow)")
    args = parser.parse_args()
    shared = Path(args.shared) / "mp_20"
    volumes, comps = volumes_and_counts(shared / "train.csv")
    per_element = fit_volumes(volumes, comps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "description": "per-element volumes (A^3/atom) fit to MP-20 train: V_cell = sum_i n_i v_i, "
                "non-negative least squares on relative residuals (bench/plausibility.py)",
                "n_crystals": len(volumes),
                "volumes": per_element,
            },
            indent=1,
        )
    )
    report: dict = {"fit_on": f"train ({len(volumes)} crystals)", "n_elements": len(per_element)}
    for split in ("train", "val", "test"):
        v, c = (volumes, comps) if split == "train" else volumes_and_counts(shared / f"{split}.csv")
        r = ratios(v, c, per_element)
        report[f"volume_ratio_{split}"] = {str(q): round(float(np.percentile(r, q)), 3) for q in PERCENTILES}
    if args.contacts:
        r = contact_ratios(shared / "test.csv")
        report["contact_ratio_test"] = {str(q): round(float(np.percentile(r, q)), 3) for q in PERCENTILES}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
