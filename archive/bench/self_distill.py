"""One self-distillation round: train the default model on MP-20 val plus its own valid samples.

Usage: python archive/bench/self_distill.py --out runs/selfdistill
       (then bench/table1.py --model runs/selfdistill/train/model)

Archived experiment (archive/README.md): kept runnable from the repository root against today's package,
but "default" is now the shipped spatial-order model, not the model the record measured.

1. Sample at tau 1.0 (top-p 0.9) with invalid draws redrawn, so the samples follow the model's distribution
   given structural validity. The model's valid samples are small cells (median 4 sites against 10 in MP-20,
   archive/benchmarks_by_session.md section 8), so larger cells are also drawn with the grammar held to >= 9, 13
   and 17 sites.
2. Pick samples so that their number of sites per cell follows MP-20 val's (no sample is used twice): without
   this the round would teach the model to write even smaller cells, which raises validity by shrinking them.
3. Continue training from the model (archive/bench/configs/default_selfdistill.toml: same validation split of MP-20
   val, the samples train only). Every stage resumes: generation tops up its databases, training its checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from ase.db import connect

from ase_llmgen.data.readers import read_records
from ase_llmgen.metrics.evaluate import cell_sizes
from ase_llmgen.sampling.run import generate_to_file
from ase_llmgen.training import TrainConfig, train

# (file stem, crystals wanted, seed, min_atoms): the draws of session 4 (the first ran through the CLI).
DRAWS = (("samples_t1", 8000, 101, 1), ("samples_t1_min9", 900, 201, 9), ("samples_t1_min13", 450, 202, 13))
DRAWS += (("samples_t1_min17", 450, 203, 17),)


def balanced(sample_dbs: list[Path], data: Path, total: int, seed: int, out: Path) -> dict:
    """Write to ``out`` at most ``total`` distinct samples whose sites-per-cell histogram follows ``data``'s."""
    sites = Counter(len(r.atoms) for r in read_records(data)[0])
    pool: dict[int, list] = {}
    seen: set[str] = set()
    for path in sample_dbs:
        for row in connect(path).select(struct_valid=True):
            text = row.data.get("text", "")
            if text not in seen:
                seen.add(text)
                pool.setdefault(row.natoms, []).append(row)
    rng = np.random.default_rng(seed)
    n_data = sum(sites.values())
    out.unlink(missing_ok=True)
    picked = {}
    with connect(out) as db:
        for n in sorted(sites):
            rows = pool.get(n, [])
            want = min(len(rows), round(total * sites[n] / n_data))
            for i in sorted(rng.permutation(len(rows))[:want]):
                db.write(rows[i].toatoms(), key_value_pairs=rows[i].key_value_pairs, data=rows[i].data)
            picked[n] = (want, len(rows), round(total * sites[n] / n_data))
    return picked


def sites_report(sample_dbs: list[Path], reference: Path) -> str:
    """Sites per cell of samples (all draws kept, e.g. bench/table1.py's) against ``reference``, with validity.

    A table of :func:`ase_llmgen.metrics.evaluate.cell_sizes` per database, bin by bin.
    """
    ref = np.array([len(r.atoms) for r in read_records(reference)[0]])
    runs = []
    for path in sample_dbs:
        rows = list(connect(path).select())
        n = np.array([row.natoms for row in rows])
        ok = np.array([bool(row.get("struct_valid", False)) for row in rows])
        runs.append((path, ok.mean(), cell_sizes(n, ok, ref)))
    bins = runs[0][2]["bins"] if runs else []
    head = " | ".join(f"{b['sites'][0]}-{b['sites'][1]} sites: share (valid)" for b in bins)
    lines = [f"| samples | mean sites | {head} | struct. valid | valid at the reference's mix |"]
    lines.append("|---" * (len(bins) + 4) + "|")
    share = " | ".join(f"{b['reference_share']:.3f}" for b in bins)
    lines.append(f"| {reference.name} | {ref.mean():.2f} | {share} | | |")
    for path, valid, sizes in runs:
        cells = [f"{b['share']:.3f} ({b['struct_valid']:.2f})" if b["share"] else "0" for b in sizes["bins"]]
        mixed = sizes["valid_at_reference_mix"]
        lines.append(f"| {path} | {sizes['mean_sites']:.2f} | " + " | ".join(cells) + f" | {valid:.3f} | {mixed:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/mp_20/val.csv")
    parser.add_argument("--out", default="runs/selfdistill")
    parser.add_argument("--total", type=int, default=8000, help="samples to pick for training")
    parser.add_argument("--config", default="archive/bench/configs/default_selfdistill.toml")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="DB",
        help="only print sites per cell and validity of these sample databases against --reference",
    )
    parser.add_argument("--reference", default="../shared/data/mp_20/test.csv")
    args = parser.parse_args()
    if args.report:
        print(sites_report([Path(p) for p in args.report], Path(args.reference)))
        return
    out = Path(args.out)
    dbs = []
    for stem, n, seed, min_atoms in DRAWS:
        path = out / f"{stem}.db"
        summary = generate_to_file(path, n, temperature=1.0, top_p=0.9, seed=seed, min_atoms=min_atoms)
        print(json.dumps(summary))
        dbs.append(path)
    picked = balanced(dbs, Path(args.data), args.total, seed=0, out=out / "balanced.db")
    print("sites: (picked, available, wanted)", json.dumps(picked))
    if not args.skip_train:
        config = TrainConfig.from_file(args.config, extra_data=[str(out / "balanced.db")], out=str(out / "train"))
        print(json.dumps({k: v for k, v in train(config).items() if k != "history"}))


if __name__ == "__main__":
    main()
