"""Compare two ML potentials' E_hull on the same crystals: MP-20 test crystals and generated ones.

Usage:
  # 100 random MP-20 test crystals (seeded), relaxed with each potential, compared with each other and with DFT:
  nice -n 10 python bench/potentials.py mp20 --n 100 --out runs/potentials
  # generated crystals: relax the same rows with both (ase-llmgen relax ... -o), then compare by source row:
  python bench/potentials.py compare runs/sun/chgnet.db runs/sun/sevenn.db

Both use ``ase-llmgen relax``'s runner (FIRE + FrechetCellFilter, fmax 0.1 eV/A, 500 steps, 60 s per
crystal) and the shipped MP-20 hull. Reported: pairs, E_hull MAE and mean difference (B - A), agreement on
metastable (E_hull <= 0.1 eV/atom) and on stable (<= 0), seconds per relaxation; for MP-20 also each
potential's E_hull MAE against the DFT e_above_hull of the test set (where known).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.db import connect

ROOT = Path(__file__).resolve().parents[1]


def by_source(path: Path) -> dict[int, dict]:
    """Relaxed rows of an ``ase-llmgen relax -o`` database (or relaxed in place) by source row id."""
    out = {}
    for row in connect(path, use_lock_file=False).select("relaxed=True"):
        kvp = row.key_value_pairs
        if kvp.get("e_above_hull") is not None:
            out[int(kvp.get("source_id", row.id))] = kvp
    return out


def compare(a: Path, b: Path, dft: dict[int, float] | None = None, dft_form: dict[int, float] | None = None) -> dict:
    """E_hull of the rows both databases relaxed (matched by source row); with DFT values, each against them."""
    ra, rb = by_source(a), by_source(b)
    ids = sorted(set(ra) & set(rb))
    if not ids:
        raise ValueError(f"{a} and {b} share no relaxed source rows")
    ea = np.array([ra[i]["e_above_hull"] for i in ids])
    eb = np.array([rb[i]["e_above_hull"] for i in ids])
    names = (ra[ids[0]].get("potential"), rb[ids[0]].get("potential"))
    out = {
        "potentials": names,
        "n": len(ids),
        "mae_e_hull": float(np.mean(np.abs(eb - ea))),
        "median_abs_diff": float(np.median(np.abs(eb - ea))),
        "mean_diff_b_minus_a": float(np.mean(eb - ea)),
        "agree_metastable": float(np.mean((ea <= 0.1) == (eb <= 0.1))),
        "agree_stable": float(np.mean((ea <= 0.0) == (eb <= 0.0))),
        "metastable": [int(np.sum(ea <= 0.1)), int(np.sum(eb <= 0.1))],
        "stable": [int(np.sum(ea <= 0.0)), int(np.sum(eb <= 0.0))],
        "converged": [sum(bool(r[i].get("relax_converged")) for i in ids) for r in (ra, rb)],
        "median_seconds": [float(np.median([r[i]["relax_seconds"] for i in ids])) for r in (ra, rb)],
    }
    if dft:
        known = [k for k, i in enumerate(ids) if dft.get(i) is not None]
        d = np.array([dft[ids[k]] for k in known])
        out["n_with_dft"] = len(known)
        out["mae_vs_dft"] = [float(np.mean(np.abs(ea[known] - d))), float(np.mean(np.abs(eb[known] - d)))]
        out["agree_metastable_with_dft"] = [float(np.mean((e[known] <= 0.1) == (d <= 0.1))) for e in (ea, eb)]
    if dft_form:
        # Formation energies against MP's: tests that a potential's energies are on MP's corrected scale.
        fa = np.array([ra[i]["e_form"] for i in ids])
        fb = np.array([rb[i]["e_form"] for i in ids])
        d = np.array([dft_form[i] for i in ids])
        out["mae_e_form_vs_dft"] = [float(np.mean(np.abs(fa - d))), float(np.mean(np.abs(fb - d)))]
        out["mean_e_form_minus_dft"] = [float(np.mean(fa - d)), float(np.mean(fb - d))]
    return out


def mp20(n: int, seed: int, out: Path, potentials: list[str]) -> dict:
    """Relax ``n`` random MP-20 test crystals with each potential and compare."""
    from ase_llmgen.checks.database import write_structures
    from ase_llmgen.data.readers import read_records
    from ase_llmgen.metrics.reference import TEST_CSV
    from ase_llmgen.relax.runner import relax_database

    out.mkdir(parents=True, exist_ok=True)
    src = out / "mp20_test.db"
    records, _ = read_records(TEST_CSV)
    pick = sorted(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    if not src.exists():
        structures = []
        for i in pick:
            atoms = records[i].atoms
            atoms.info = {}
            structures.append(atoms)
        write_structures(src, structures)
    dft, dft_form = {}, {}
    for row, i in zip(connect(src).select(), pick, strict=True):
        dft[row.id] = records[i].properties.get("e_above_hull")
        dft_form[row.id] = records[i].properties.get("formation_energy")
    for name in potentials:
        # every test crystal, valid or not (a few MP crystals fail SMACT's rule)
        relax_database(src, out / f"mp20_{name}.db", calculator=name, only_valid=False)
    return compare(out / f"mp20_{potentials[0]}.db", out / f"mp20_{potentials[1]}.db", dft, dft_form)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("mp20")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "runs" / "potentials"))
    p.add_argument("--potentials", default="chgnet,sevenn")
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    args = parser.parse_args()
    if args.what == "mp20":
        result = mp20(args.n, args.seed, Path(args.out), args.potentials.split(","))
    else:
        result = compare(Path(args.a), Path(args.b))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
