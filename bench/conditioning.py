"""Conditioning success of a model: formula and space-group prompts, with and without formula enforcement.

Usage: python bench/conditioning.py [--model default] [--formulas 16] [--spacegroups 225,221,194,62,139,12]
       [--per-condition 8] [--out runs/conditioning]

Formulas are drawn (seeded) from MP-20 test.csv -- used only as *requests*, never for training or tuning --
and asked for twice: prompt only (the paper's measure of how well the model follows the text) and prompt plus
the composition grammar (what `ase-llmgen generate --formula` does by default). Space groups are prompt-only
(no grammar can enforce them); success is judged with pymatgen SpacegroupAnalyzer, symprec 0.2 A, as in the
paper. Samples are kept even when structurally invalid, so the rates are per sample drawn and parsed.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from ase_llmgen.metrics.evaluate import conditioning_success
from ase_llmgen.sampling.run import generate_to_file
from ase_llmgen.text.prompts import Conditions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--formulas", type=int, default=16)
    parser.add_argument("--spacegroups", default="225,221,194,62,139,12")
    parser.add_argument("--per-condition", dest="per_condition", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--test-csv", dest="test_csv", default=str(SHARED / "mp_20" / "test.csv"))
    parser.add_argument("--out", default="runs/conditioning")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with open(args.test_csv, newline="") as fh:
        formulas = sorted({row["pretty_formula"] for row in csv.DictReader(fh)})
    picked = [str(f) for f in np.random.default_rng(0).choice(formulas, size=args.formulas, replace=False)]
    started = time.perf_counter()
    for i, formula in enumerate(picked):
        for name, enforce in (("formula_prompt_only", False), ("formula_enforced", True)):
            db = out / f"{name}.db"
            generate_to_file(
                db,
                args.per_condition,  # one db per arm; rows of each request are counted separately
                model=args.model,
                conditions=Conditions(formula=formula),
                temperature=args.temperature,
                seed=i,
                require_valid=False,
                enforce_formula=enforce,
                progress=False,
            )
    for j, number in enumerate(int(s) for s in args.spacegroups.split(",")):
        generate_to_file(
            out / "spacegroup.db",
            args.per_condition,
            model=args.model,
            conditions=Conditions(spacegroup=number),
            temperature=args.temperature,
            seed=j,
            require_valid=False,
            progress=False,
        )
    results = {
        "model": args.model,
        "temperature": args.temperature,
        "formulas": picked,
        "spacegroups": args.spacegroups,
        "per_condition": args.per_condition,
        "formula_prompt_only": conditioning_success(out / "formula_prompt_only.db")["formula"],
        "formula_enforced": conditioning_success(out / "formula_enforced.db")["formula"],
        "spacegroup": conditioning_success(out / "spacegroup.db")["spacegroup"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
