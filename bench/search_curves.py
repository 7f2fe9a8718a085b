"""Best E_hull found against the number of relaxations: LLM operator mix vs classical only, ase_ga + CHGNet.

Usage: nice -n 10 python bench/search_curves.py [--systems K2Mg2Sb2,Ti2O4,Zn2O2] [--seeds 0,1]
           [--population 6] [--generations 2] [--out runs/search_curves]
       python bench/search_curves.py --report [--out runs/search_curves]

Each (system, arm, seed) is one ``ase-llmgen search`` (:func:`ase_llmgen.ga.search.run_search`) into its own
database ``<out>/<system>_<arm>_s<seed>.db``, CHGNet relaxations scored by -E_hull against the MP-20 hull:

* ``mixed``: start population from the shipped model at the fixed composition, offspring from ase_ga's
  cut-and-splice pairing, strain, permutation and rattle mutations plus the model's regeneration mutation;
* ``classical``: random start population (ase_ga's ``StartGenerator``), ase_ga's operators only.

Default systems: K2Mg2Sb2 (KMgSb, mp-7089, P4/nmm, on the MP hull: an MP-20 *test* ternary whose formula
is in neither the train nor the val split), Ti2O4 (TiO2) and Zn2O2 (ZnO).  Runs are resumable (the search
databases are); a rerun with a larger ``--generations`` extends them.  ``--report`` reads every database:
the best E_hull after n relaxations (the running minimum, in relaxation order), per arm the mean over seeds
at each n, the final best, and the first n at which a metastable (< 0.1 eV/atom) candidate appeared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ARMS = ("mixed", "classical")


def curve(db_path: Path) -> list[float]:
    """Best E_hull after each relaxation, in relaxation order (failed relaxations keep the previous best)."""
    from ase.db import connect

    best, out = np.inf, []
    for row in connect(db_path).select("relaxed=1", sort="id"):
        if row.get("extinct", 0) == 0 and "e_above_hull" in row:
            best = min(best, float(row.e_above_hull))
        out.append(best)
    return out


def run(args: argparse.Namespace) -> None:
    from ase_llmgen.ga.search import SearchSettings, run_search

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for system in args.systems:
            for arm in ARMS:
                settings = SearchSettings(
                    composition=system,
                    population=args.population,
                    generations=args.generations,
                    operators=arm,
                    calculator="chgnet",
                    score="e_hull",
                    seed=seed,
                    temperature=args.temperature,
                    fmax=0.1,
                    steps=args.steps,
                )
                db = out / f"{system}_{arm}_s{seed}.db"
                summary = run_search(db, settings)
                print(json.dumps({"db": str(db), "best": summary["best"][:1], "seconds": summary["seconds"]}))
    report(args)


def report(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    table: dict = {}
    for db in sorted(out.glob("*.db")):
        system, arm, seed = db.stem.rsplit("_", 2)
        table.setdefault(system, {}).setdefault(arm, {})[seed] = curve(db)
    result: dict = {}
    for system, arms in table.items():
        result[system] = {}
        for arm, runs in arms.items():
            n = min(len(c) for c in runs.values())
            stacked = np.array([c[:n] for c in runs.values()])
            finite = np.where(np.isfinite(stacked), stacked, np.nan)
            first_meta = [next((i + 1 for i, v in enumerate(c) if v < 0.1), None) for c in runs.values()]
            result[system][arm] = {
                "seeds": sorted(runs),
                "relaxations": n,
                "final_best_e_hull": [round(float(c[-1]), 4) for c in runs.values()],
                "mean_final_best": round(float(np.nanmean(finite[:, -1])), 4),
                "mean_best_at": {
                    str(k): round(float(np.nanmean(finite[:, k - 1])), 4) for k in sorted({n // 3, 2 * n // 3, n}) if k
                },
                "first_metastable_at": first_meta,
            }
    (out / "report.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="K2Mg2Sb2,Ti2O4,Zn2O2", type=lambda s: s.split(","))
    parser.add_argument("--seeds", default="0,1", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=300, help="relaxation steps at most")
    parser.add_argument("--out", default="runs/search_curves")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
