"""Conditioning success of a model: formula and space-group prompts, with and without formula enforcement.

Usage: python bench/conditioning.py [--model default] [--formulas 16] [--spacegroups 225,221,194,62,139,12]
       [--per-condition 8] [--out runs/conditioning]

Formulas are drawn (seeded) from MP-20 test.csv -- used only as *requests*, never for training or tuning --
and asked for twice: prompt only (the paper's measure of how well the model follows the text) and prompt plus
the composition grammar (what `ase-llmgen generate --formula` does by default). Space groups are prompt-only
for a paper-format model (no grammar can enforce them); a wyckoff model writes the group's orbits, and samples
in which spglib finds a supergroup are kept, so its rate is the model's own. Success is judged with pymatgen
SpacegroupAnalyzer, symprec 0.2 A, as in the paper. Samples are kept even when structurally invalid, so the
rates are per sample drawn and parsed. The model's own sampling defaults apply (the wyckoff model's cell
temperature).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from ase_llmgen.metrics.evaluate import conditioning_success
from ase_llmgen.models.bundle import load_model
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
    bundle = load_model(args.model)  # once, for all requests
    started = time.perf_counter()

    def draw(db_name: str, conditions: Conditions, seed: int, enforce_formula: bool = True) -> None:
        # exact_spacegroup=False: a supergroup found by spglib is kept (and counted a miss), not redrawn.
        # One db per arm; the rows of each request are counted separately, so each call adds per_condition rows.
        generate_to_file(
            out / db_name,
            args.per_condition,
            model=bundle,
            conditions=conditions,
            temperature=args.temperature,
            seed=seed,
            require_valid=False,
            enforce_formula=enforce_formula,
            exact_spacegroup=False,
            progress=False,
        )

    for i, formula in enumerate(picked):
        draw("formula_prompt_only.db", Conditions(formula=formula), i, enforce_formula=False)
        draw("formula_enforced.db", Conditions(formula=formula), i)
    for j, number in enumerate(int(s) for s in args.spacegroups.split(",")):
        draw("spacegroup.db", Conditions(spacegroup=number), j)
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
