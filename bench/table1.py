"""The paper's Table 1 for a shipped model: generate at each temperature, evaluate against MP-20 test.

Usage:
  python bench/table1.py --model default --n 1000 --temperatures 0.7,1.0 --relax 100 --out runs/table1

For each temperature: `generate` (grammar-constrained; only unparseable samples are redrawn, invalid ones are
kept so validity is measured, as in the paper; the distance guard is off unless --min-distance is given, so
the default measures the model alone), CDVAE metrics against ../shared/data/mp_20/test.csv with
novelty against val.csv (our training set), and CHGNet stability for the first --relax valid samples.
Writes <out>/T<temperature>/samples.db, <out>/results.json, <out>/report.md and plots. Resumable: generation
tops up, relaxation skips rows already relaxed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase_llmgen.metrics.evaluate import evaluate, plot_validity_vs_temperature, plots, report_markdown
from ase_llmgen.metrics.stability import reference_hull, stability
from ase_llmgen.sampling.run import generate_to_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--temperatures", default="0.7,1.0")
    parser.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    parser.add_argument(
        "--min-distance",
        dest="min_distance",
        type=float,
        default=0.0,
        help="sampler's distance guard in A (default 0: the model alone, the paper's protocol)",
    )
    parser.add_argument("--relax", type=int, default=100, help="CHGNet-relax this many valid samples per run")
    parser.add_argument("--max-reference", dest="max_reference", type=int, default=None)
    parser.add_argument(
        "--max-train",
        dest="max_train",
        type=int,
        default=2000,
        help="seeded subset of val.csv for novelty (fingerprinting all 9,047 takes ~20 min here)",
    )
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--out", default="runs/table1")
    args = parser.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    hull = reference_hull(
        shared / "mp_20" / "hull_reference.csv",
        shared / "mp_reference" / "2023-02-07-mp-elemental-reference-entries.json.gz",
    )
    runs, by_temperature = [], {}
    for temperature in (float(t) for t in args.temperatures.split(",")):
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
        )
        gen["wall_seconds"] = time.perf_counter() - started
        if args.relax:
            stability(db, hull, max_samples=args.relax)
        results = evaluate(
            db,
            reference=shared / "mp_20" / "test.csv",
            train=shared / "mp_20" / "val.csv",
            max_reference=args.max_reference,
            max_train=args.max_train,
        )
        results["generation"] = gen
        plots(results, folder)
        guard = f", guard {args.min_distance} A" if args.min_distance else ""
        runs.append((f"{args.model}, tau {temperature}{guard}", results))
        by_temperature[temperature] = results
    plot_validity_vs_temperature(by_temperature, out / "validity_vs_temperature.png")
    (out / "results.json").write_text(json.dumps({label: r for label, r in runs}, indent=2, default=str))
    report = report_markdown(runs)
    (out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
