"""Two built-in models side by side, unconditional: speed, text length and the space groups they write.

Usage:
  python bench/codec_models.py --models default,wyckoff --n 512 --rounds 4 --out runs/codec_models
  python bench/codec_models.py --report-only --dbs runs/table1_wyckoff/T1.0/samples.db,runs/other/samples.db

For each model, `generate_to_file` with `ase-llmgen generate`'s default settings (grammar on, structurally invalid
samples redrawn, tau 0.7, top-p 0.9), --n crystals drawn in --rounds rounds taken in turns (round 1 of every
model, then round 2, ...) so a drift in the machine's speed hits every arm alike. Reported per model:

* crystals/s and valid crystals/s (`valid`: structurally and compositionally valid) over the timed rounds;
* tokens per crystal: each written crystal encoded again in the model's own codec and site order, then
  tokenized by its tokenizer (the text the model writes for that crystal, up to spglib's choice of setting);
* the space groups (spglib at --symprec, default 0.1 A) of the structurally valid rows against MP-20 test's:
  P1 share, the top 10 of each, and the total variation distance between the two distributions.

`--report-only --dbs a.db,b.db` gives the space-group part for databases made elsewhere (e.g. bench/table1.py).
Writes <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from ase.db import connect
from spacegroup_success import found_groups, test_group_counts  # bench/, beside this script

from ase_llmgen.models.bundle import load_model, token_ids
from ase_llmgen.sampling.run import generate_to_file


def spacegroups(db: Path, symprec: float) -> Counter:
    """spglib's group for every structurally valid row of ``db`` (0: undetermined)."""
    return found_groups(db, symprec, "struct_valid=True")


def compare(found: Counter, reference: Counter) -> dict:
    n, m = sum(found.values()), sum(reference.values())
    groups = set(found) | set(reference)
    tvd = 0.5 * sum(abs(found[g] / n - reference[g] / m) for g in groups) if n else None
    return {
        "n_valid": n,
        "p1_share": round(found[1] / n, 4) if n else None,
        "top10": [(g, round(k / n, 4)) for g, k in found.most_common(10)],
        "distinct_groups": len([g for g in found if g]),
        "total_variation_vs_test": round(tvd, 4) if tvd is not None else None,
    }


def tokens_per_crystal(db: Path, bundle) -> float | None:
    codec, order = bundle.codec, bundle.site_order
    lengths = []
    for row in connect(db).select():
        try:
            text = codec.encode(codec.ordered(row.toatoms(), order))
        except Exception:  # a crystal the codec cannot write back (rare): left out
            continue
        lengths.append(len(token_ids(bundle.tokenizer, text, eos=True)))
    return round(sum(lengths) / len(lengths), 1) if lengths else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,wyckoff")
    parser.add_argument("--n", type=int, default=512, help="crystals per model")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--symprec", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/codec_models")
    parser.add_argument("--report-only", dest="report_only", action="store_true")
    parser.add_argument("--dbs", help="comma-separated databases, with --report-only")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = test_group_counts()
    results: dict = {"symprec": args.symprec, "test": compare(reference, reference)}

    if args.report_only:
        for db in args.dbs.split(","):
            results[db] = compare(spacegroups(Path(db), args.symprec), reference)
            print(json.dumps({db: results[db]}), flush=True)
    else:
        names = args.models.split(",")
        bundles = {name: load_model(name) for name in names}
        timing = {name: {"seconds": 0.0, "written": 0, "drawn": 0, "valid": 0} for name in names}
        per_round = args.n // args.rounds
        for r in range(args.rounds):
            for name in names:
                db = out / f"{name}_r{r}.db"
                db.unlink(missing_ok=True)
                started = time.perf_counter()
                summary = generate_to_file(
                    db, per_round, model=bundles[name], temperature=args.temperature, seed=args.seed + r,
                    progress=False,
                )  # fmt: skip
                t = timing[name]
                t["seconds"] += time.perf_counter() - started
                t["written"] += summary["written"]
                t["drawn"] += summary["drawn"]
                t["valid"] += summary["rows_valid"]
        for name in names:
            t = timing[name]
            found, tokens = Counter(), []
            for r in range(args.rounds):
                db = out / f"{name}_r{r}.db"
                found += spacegroups(db, args.symprec)
                tokens.append(tokens_per_crystal(db, bundles[name]))
            results[name] = {
                "codec": bundles[name].codec_name,
                **t,
                "crystals_per_s": round(t["written"] / t["seconds"], 2),
                "valid_crystals_per_s": round(t["valid"] / t["seconds"], 2),
                "tokens_per_crystal": round(sum(x for x in tokens if x) / max(1, len([x for x in tokens if x])), 1),
                **compare(found, reference),
            }
            print(json.dumps({name: results[name]}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({"test": results["test"]}))


if __name__ == "__main__":
    main()
