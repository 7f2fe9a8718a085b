"""Site order of the training texts: as read (the paper) against sorted by fractional x, y, z.

Usage (after training both arms with bench/configs/spatial_order.toml and
archive/bench/configs/spatial_order_control.toml):
  python archive/bench/site_order.py --models runs/spatial_control/model runs/spatial/model --n 1000 --out OUT

Archived experiment (archive/README.md): kept runnable from the repository root against today's package,
but "default" is now the shipped spatial-order model, not the model the record measured.

For each model and temperature: draw --n samples with the grammar on and invalid draws kept (as bench/table1.py,
the model alone), then print structural and compositional validity, sites per cell and validity at MP-20 test's
mix of cell sizes, how close the closest pair of sites is in the invalid samples (< 0.01 A is one position
written twice), and the model's likelihood of the first --ipt test crystals, each written in the order the model
was trained on. Generation tops up, so an interrupted run resumes. Writes <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.db import connect

from ase_llmgen.data import read_records
from ase_llmgen.metrics.evaluate import cell_sizes
from ase_llmgen.metrics.likelihood import ipt
from ase_llmgen.models.bundle import load_model
from ase_llmgen.sampling.run import generate_to_file

# Closest pair of sites, in A, of structurally invalid samples.
CONTACT_BINS = [(0.0, 0.01), (0.01, 0.1), (0.1, 0.5)]


def closest_pair(atoms) -> float:
    """Shortest distance between two sites under periodic boundary conditions (inf for one site)."""
    if len(atoms) < 2:
        return float("inf")
    d = atoms.get_all_distances(mic=True)
    return float(d[np.triu_indices(len(atoms), 1)].min())


def summarise(db: Path, reference_sites: np.ndarray) -> dict:
    """Validity, cell sizes and the closest contacts of invalid samples in one sample database."""
    rows = list(connect(db).select())
    sites = np.array([row.natoms for row in rows])
    struct = np.array([bool(row.get("struct_valid", False)) for row in rows])
    comp = np.array([bool(row.get("comp_valid", False)) for row in rows])
    contacts = np.array([closest_pair(row.toatoms()) for row, ok in zip(rows, struct) if not ok])
    sizes = cell_sizes(sites, struct, reference_sites)
    return {
        "n": len(rows),
        "struct_valid": float(struct.mean()),
        "comp_valid": float(comp.mean()),
        "mean_sites": sizes["mean_sites"],
        "valid_at_test_mix": sizes["valid_at_reference_mix"],
        "valid_by_sites": {f"{b['sites'][0]}-{b['sites'][1]}": b["struct_valid"] for b in sizes["bins"]},
        "invalid_closest_pair": {
            f"{lo}-{hi} A": int(((contacts >= lo) & (contacts < hi)).sum()) for lo, hi in CONTACT_BINS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--temperatures", default="0.7,1.0")
    parser.add_argument("--ipt", type=int, default=200, help="test crystals for perplexity/IPT (0 = skip)")
    parser.add_argument("--test", default="../shared/data/mp_20/test.csv")
    parser.add_argument("--out", default="runs/site_order")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = read_records(args.test)[0]
    reference_sites = np.array([len(r.atoms) for r in test])
    results = {}
    for i, model_dir in enumerate(args.models):
        bundle = load_model(model_dir)
        arm = {"model": model_dir, "site_order": bundle.site_order}
        for t in (float(x) for x in args.temperatures.split(",")):
            db = out / f"model{i}_T{t}.db"
            generate_to_file(db, args.n, model=bundle, temperature=t, seed=0, require_valid=False)
            arm[f"T{t}"] = summarise(db, reference_sites)
        if args.ipt:
            arm["likelihood"] = ipt(bundle, [r.atoms for r in test[: args.ipt]], progress=True)
        results[model_dir] = arm
        print(json.dumps(arm, indent=1))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
