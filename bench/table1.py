"""The paper's Table 1 for a model: generate at each temperature, evaluate against MP-20 test.

Usage:
  python bench/table1.py --model default --n 1000 --temperatures 0.7,1.0 --relax 300 --out runs/table1

For each temperature: `generate` (grammar-constrained; only unparseable samples are redrawn, invalid ones are
kept so validity is measured, as in the paper; the distance guard is off unless --min-distance is given, so
the default measures the model alone), CHGNet relaxation of a seeded random subset of --relax valid samples
(`ase-llmgen relax --max N`), and the CDVAE metrics against the MP-20 test set shipped in the package, with
novelty against the shipped MP-20 train + val (the paper's protocol; pass --train for a model's own data).
Needs no ../shared. Writes <out>/T<temperature>/samples.db, <out>/results.json, <out>/report.md and plots.
Resumable: generation tops up, relaxation skips rows already relaxed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase_llmgen.metrics.evaluate import SHIPPED, evaluate, plot_validity_vs_temperature, plots, report_markdown
from ase_llmgen.models.bundle import read_meta, resolve
from ase_llmgen.relax.runner import relax_database
from ase_llmgen.sampling.run import generate_to_file
from ase_llmgen.sampling.settings import SampleSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--temperatures", default="0.7,1.0")
    parser.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    parser.add_argument(
        "--cell-temperature",
        dest="cell_temperature",
        default=None,
        help="temperature of the cell's lines: a number, or 'same' for each run's temperature throughout (the "
        "paper); default: the model's own (the built-in wyckoff model: 0.9), else 'same'",
    )
    parser.add_argument(
        "--min-distance",
        dest="min_distance",
        type=float,
        default=0.0,
        help="sampler's distance guard in A (default 0: the model alone, the paper's protocol)",
    )
    parser.add_argument(
        "--formula-first",
        dest="formula_first",
        action="store_true",
        help="the model writes a formula (and its formula units, if it learnt them) first, then the crystal "
        "(sampling/formula_first.py); still the model alone: every sample is kept as drawn",
    )
    parser.add_argument(
        "--relax", type=int, default=300, help="CHGNet-relax a seeded random subset of this many valid samples"
    )
    parser.add_argument("--max-reference", dest="max_reference", type=int, default=None)
    parser.add_argument(
        "--train",
        default=SHIPPED,
        help="training structures for novelty (default: MP-20 train + val, shipped; 'none' to skip)",
    )
    parser.add_argument("--max-train", dest="max_train", type=int, default=None)
    parser.add_argument("--out", default="runs/table1")
    args = parser.parse_args()
    out = Path(args.out)
    train = None if args.train == "none" else args.train
    runs, by_temperature = [], {}
    own = SampleSettings().for_model(read_meta(resolve(args.model)), where=args.model).cell_temperature
    for temperature in (float(t) for t in args.temperatures.split(",")):
        if args.cell_temperature == "same":
            cell_temperature = temperature
        else:
            cell_temperature = float(args.cell_temperature) if args.cell_temperature is not None else own
        folder = out / f"T{temperature}"
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "samples.db"
        started = time.perf_counter()
        gen = generate_to_file(
            db,
            args.n,
            model=args.model,
            temperature=temperature,
            top_p=args.top_p,
            seed=0,
            require_valid=False,
            min_distance=args.min_distance,
            cell_temperature=cell_temperature,
            formula_first=args.formula_first,
        )
        gen["wall_seconds"] = time.perf_counter() - started
        if args.relax:
            relax_database(db, max_relax=args.relax, seed=0)
        results = evaluate(
            db,
            train=train,
            max_reference=args.max_reference,
            max_train=args.max_train,
        )
        results["generation"] = gen
        plots(results, folder)
        guard = f", guard {args.min_distance} A" if args.min_distance else ""
        guard += ", formula first" if args.formula_first else ""
        cell = f", cell tau {cell_temperature}" if cell_temperature not in (None, temperature) else ""
        runs.append((f"{args.model}, tau {temperature}{cell}{guard}", results))
        by_temperature[temperature] = results
    plot_validity_vs_temperature(by_temperature, out / "validity_vs_temperature.png")
    (out / "results.json").write_text(json.dumps({label: r for label, r in runs}, indent=2, default=str))
    report = report_markdown(runs)
    (out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
