"""A bulk-crystal genetic search with ``ase_ga``, seeded and mutated by a language model.

A thin driver over :func:`ase_llmgen.ga.search.run_search` (what ``ase-llmgen search`` runs),
with ASE's EMT potential instead of CHGNet so that it runs in a minute:

* the start population comes from the model at a fixed stoichiometry (``LLMStartGenerator``);
  when the model gives no acceptable crystal within its budget, ``ase_ga``'s random
  ``StartGenerator`` fills in (``ase db ga_llm.db source=fallback`` lists those);
* offspring come from ``ase_ga``'s cut-and-splice pairing and strain, permutation and rattle
  mutations, and from the model: the paper's infill mutation (the model proposes a
  replacement for one element, kept if its metallic radius is within 0.1 A, so the
  composition may change within the EMT metals) and the regeneration mutation (a fresh
  crystal of the parent's formula);
* candidates relax with EMT (Al, Ni, Cu, Pd, Ag, Pt, Au).  EMT puts each fcc element at
  ~0 eV/atom, so the energy per atom is a formation-energy-like score that stays comparable
  when infill changes the composition: ``raw_score = -energy per atom``.

Operators are drawn in proportion to their weights without replacement within each round,
so even the four offspring of ``--quick`` include both LLM mutations.  (Before, each
operator was an independent weighted draw: with seed 0 the four draws were pairing, strain,
pairing, pairing, and the quick run ended with ``infill: {}`` and ``regeneration: {}``.)

Run it::

    python docs/examples/ga_llm_search.py                       # shipped model, a few minutes
    python docs/examples/ga_llm_search.py --quick --model PATH  # CI size, about a minute
    ase db ga_llm.db relaxed=1 -s raw_score- -c formula,raw_score,origin,operator,source,substitution
"""

from __future__ import annotations

import argparse
from pathlib import Path

EMT_METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model folder or 'default' (the shipped model)")
    p.add_argument("--db", default="ga_llm.db", help="output ASE database (a rerun continues it)")
    p.add_argument("--stoichiometry", default="Cu6Au2", help="atoms per cell of the start population (EMT metals)")
    p.add_argument("--population", type=int, default=12, help="population size")
    p.add_argument("--generations", type=int, default=4, help="generations (population-size offspring each)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 0.7 or 1.0)")
    p.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fmax", type=float, default=0.05, help="relaxation force limit (eV/A)")
    p.add_argument("--steps", type=int, default=300, help="relaxation steps")
    p.add_argument("--quick", action="store_true", help="reduced size for CI: population 4, 1 generation")
    p.add_argument("--overwrite", action="store_true", help="delete --db first if it exists")
    args = p.parse_args(argv)
    if args.quick:
        args.population, args.generations, args.steps, args.fmax = 4, 1, 15, 0.2
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the search; returns a summary (also printed)."""
    from ase.calculators.emt import EMT
    from ase.symbols import string2symbols

    from ase_llmgen.ga.search import SearchSettings, run_search

    args = parse_args(argv)
    if not set(string2symbols(args.stoichiometry)) <= set(EMT_METALS):
        raise SystemExit(f"EMT supports {', '.join(EMT_METALS)}; got {args.stoichiometry}")
    db_path = Path(args.db)
    if db_path.exists() and args.overwrite:
        db_path.unlink()
    # The quick (CI) run has four offspring: one round of four operators, two of them the model's.
    weights = (
        {"pairing": 1, "strain": 1, "infill": 1, "regeneration": 1}
        if args.quick
        else {"pairing": 3, "strain": 2, "permutation": 1, "infill": 2, "regeneration": 1}
    )
    settings = SearchSettings(
        composition=args.stoichiometry,
        system="-".join(EMT_METALS),  # infill may bring in any EMT metal
        population=args.population,
        generations=args.generations,
        weights=weights,
        calculator="emt",  # recorded in the database; the factory below is what runs
        score="energy",
        model=args.model,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=8 if args.quick else 32,
        max_draws=8 if args.quick else 64,
        seed=args.seed,
        fmax=args.fmax,
        steps=args.steps,
    )
    summary = run_search(db_path, settings, calculator=EMT)
    counts = summary.pop("operator_counts")
    summary["infill"] = counts.get("infill", {})
    summary["regeneration"] = counts.get("regeneration", {})
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"query: ase db {db_path} relaxed=1 -s raw_score- -c formula,raw_score,origin,operator,source,substitution")
    return summary


if __name__ == "__main__":
    main()
