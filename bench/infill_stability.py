"""The paper's infill experiment: LLM infill vs uniform substitution offspring of MP-20 test crystals, CHGNet-relaxed.

Usage: nice -n 10 python bench/infill_stability.py [--n 200] [--model default] [--out runs/infill_stability]
       python bench/infill_stability.py --report [--out runs/infill_stability]

For each of ``--n`` MP-20 test crystals (a seeded random choice), one offspring per operator:

* ``llm_infill`` -- :class:`LLMInfillMutation`: one element is masked, the model proposes ``--candidates``
  replacements (temperature ``--temperature``), those with an ionic radius within 0.1 A in the same
  oxidation state that keep the composition charge neutral qualify, one is drawn;
* ``uniform`` -- :class:`UniformSubstitution`: a uniform draw from the same radius table and filters.

Both use the same seeded rng per crystal.  Each offspring is relaxed with CHGNet (FIRE, fmax 0.1, at most
500 steps / 60 s) and its E_hull computed against the MP-20 reference hull (metrics.stability).  Reported
per operator, with 95% Wilson intervals: offspring made, metastable (E_hull < 0.1 eV/atom) and stable
(E_hull < 0) rates among relaxed offspring and among all parents tried, and novelty: the offspring's
reduced formula absent from MP-20 (train+val+test), and its relaxed structure matching no MP-20 crystal of
that formula (pymatgen StructureMatcher, default tolerances).

Results are appended to ``results.jsonl`` as each offspring finishes; a rerun skips what is there (kill it
at any time).  ``--report`` writes ``report.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from bench_io import read_jsonl, wilson  # bench/ is on the path when run as a script

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OPERATORS = ("llm_infill", "uniform")


def mp20_by_formula() -> dict[str, list[str]]:
    """Reduced formula -> CIFs of every MP-20 crystal (train, val, test)."""
    by: dict[str, list[str]] = defaultdict(list)
    csv.field_size_limit(10**8)
    for split in ("train", "val", "test"):
        with open(SHARED / "mp_20" / f"{split}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                by[row["pretty_formula"]].append(row["cif"])
    return by


def novelty(atoms, known: dict[str, list[str]]) -> tuple[bool, bool]:
    """(new composition, new structure) against MP-20."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    from ase_llmgen.convert import to_structure

    s = to_structure(atoms)
    formula = s.composition.reduced_formula
    cifs = known.get(formula, [])
    if not cifs:
        return True, True
    matcher = StructureMatcher()
    return False, not any(matcher.fit(s, Structure.from_str(c, fmt="cif")) for c in cifs)


def run(args: argparse.Namespace) -> None:
    from pymatgen.core import Structure
    from tqdm import tqdm

    from ase_llmgen.convert import to_atoms
    from ase_llmgen.ga.operators import LLMInfillMutation, UniformSubstitution
    from ase_llmgen.metrics.stability import chgnet_model, default_reference_hull, relax
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {(r["index"], r["operator"]) for r in read_jsonl(results)}
    csv.field_size_limit(10**8)
    with open(SHARED / "mp_20" / "test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = sorted(np.random.default_rng(args.seed).choice(len(rows), size=args.n, replace=False).tolist())
    hull = default_reference_hull()
    known = mp20_by_formula()
    model = chgnet_model()
    sampler = Sampler(
        load_model(args.model), SampleSettings(temperature=args.temperature, top_p=args.top_p, batch_size=16), args.seed
    )
    todo = [(i, op) for i in picked for op in OPERATORS if (i, op) not in done]
    with open(results, "a") as fh, tqdm(total=len(picked) * len(OPERATORS), initial=len(done), desc="offspring") as bar:
        for index, op_name in todo:
            row = rows[index]
            parent = to_atoms(Structure.from_str(row["cif"], fmt="cif"))
            rng = np.random.RandomState([args.seed, index])  # the same draws for both operators
            sampler.batches = 1_000 * index  # seeded per crystal: a resumed run draws what it would have
            if op_name == "llm_infill":
                op = LLMInfillMutation(sampler, n_candidates=args.candidates, tolerance=0.1, rng=rng)
            else:
                op = UniformSubstitution(tolerance=0.1, rng=rng)
            started = time.perf_counter()
            child = op.mutate(parent)
            record: dict = {
                "index": index,
                "material_id": row["material_id"],
                "parent": row["pretty_formula"],
                "operator": op_name,
                "made": child is not None,
                "mutate_seconds": round(time.perf_counter() - started, 3),
            }
            if child is None:
                record["reason"] = op.last_reason
            else:
                record["substitution"] = child.info.get("substitution")
                try:
                    res = relax(child, fmax=0.1, steps=500, time_limit=60.0, model=model, threads=1)
                    relaxed = res["atoms"]
                    formula = relaxed.get_chemical_formula()
                    e_form = hull.formation_energy(formula, res["energy_per_atom"])
                    record.update(
                        formula=relaxed.get_chemical_formula(mode="metal", empirical=True),
                        energy_per_atom=res["energy_per_atom"],
                        e_form=e_form,
                        e_hull=hull.e_above_hull(formula, e_form),
                        relax_steps=res["steps"],
                        relax_converged=res["converged"],
                        relax_seconds=round(res["seconds"], 2),
                    )
                    record["new_composition"], record["new_structure"] = novelty(relaxed, known)
                except Exception as exc:  # one crystal CHGNet cannot handle must not end the run
                    record["relax_error"] = f"{type(exc).__name__}: {exc}"[:200]
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            bar.update(1)
    report(args)


def report(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    records = read_jsonl(out / "results.jsonl")
    table: dict = {}
    for op in OPERATORS:
        recs = [r for r in records if r["operator"] == op]
        tried = len(recs)
        relaxed = [r for r in recs if "e_hull" in r]
        meta = sum(r["e_hull"] < 0.1 for r in relaxed)
        stable = sum(r["e_hull"] < 0.0 for r in relaxed)
        new_comp = sum(bool(r.get("new_composition")) for r in relaxed)
        new_struct = sum(bool(r.get("new_structure")) for r in relaxed)
        meta_new = sum(r["e_hull"] < 0.1 and bool(r.get("new_structure")) for r in relaxed)
        n = len(relaxed)
        table[op] = {
            "parents_tried": tried,
            "offspring_made": sum(r["made"] for r in recs),
            "relaxed": n,
            "metastable_rate": round(meta / n, 4) if n else None,
            "metastable_ci95": wilson(meta, n),
            "stable_rate": round(stable / n, 4) if n else None,
            "stable_ci95": wilson(stable, n),
            "metastable_per_parent": round(meta / tried, 4) if tried else None,
            "metastable_per_parent_ci95": wilson(meta, tried),
            "new_composition_rate": round(new_comp / n, 4) if n else None,
            "new_structure_rate": round(new_struct / n, 4) if n else None,
            "new_structure_ci95": wilson(new_struct, n),
            "metastable_and_new_rate": round(meta_new / n, 4) if n else None,
            "metastable_and_new_ci95": wilson(meta_new, n),
            "median_e_hull": round(float(np.median([r["e_hull"] for r in relaxed])), 4) if n else None,
            "median_relax_seconds": round(float(np.median([r["relax_seconds"] for r in relaxed])), 2) if n else None,
        }
    # Paired view: parents where both operators made a relaxed offspring, and among those with different
    # substitutions, the exact McNemar test of "metastable" (discordant pairs only).
    by_parent: dict = defaultdict(dict)
    for r in records:
        if "e_hull" in r:
            by_parent[r["index"]][r["operator"]] = r
    pairs = [(v["llm_infill"], v["uniform"]) for v in by_parent.values() if len(v) == 2]
    different = [(a, b) for a, b in pairs if a["substitution"] != b["substitution"]]
    llm_only = sum(a["e_hull"] < 0.1 <= b["e_hull"] for a, b in different)
    uniform_only = sum(b["e_hull"] < 0.1 <= a["e_hull"] for a, b in different)
    n_disc, k = llm_only + uniform_only, min(llm_only, uniform_only)
    p_value = min(1.0, 2 * sum(math.comb(n_disc, i) for i in range(k + 1)) / 2**n_disc) if n_disc else None
    table["paired"] = {
        "n": len(pairs),
        "same_substitution": len(pairs) - len(different),
        "different_substitution": len(different),
        "metastable_llm_of_different": sum(a["e_hull"] < 0.1 for a, _ in different),
        "metastable_uniform_of_different": sum(b["e_hull"] < 0.1 for _, b in different),
        "discordant_llm_only": llm_only,
        "discordant_uniform_only": uniform_only,
        "mcnemar_exact_p": round(p_value, 4) if p_value is not None else None,
        "median_e_hull_difference_llm_minus_uniform": round(
            float(np.median([a["e_hull"] - b["e_hull"] for a, b in pairs])), 4
        )
        if pairs
        else None,
    }
    (out / "report.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="MP-20 test crystals (parents)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    parser.add_argument("--candidates", type=int, default=16, help="model proposals per masked element")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/infill_stability")
    parser.add_argument("--report", action="store_true", help="only summarise what results.jsonl holds")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
