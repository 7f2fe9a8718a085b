"""A bulk-crystal genetic search with ``ase_ga``, seeded and mutated by a language model.

The layout follows ASE's bulk GA tutorial (``PrepareDB`` -> relax the start
population -> ``Population`` + ``OperationSelector`` loop), with three changes:

* the start population comes from the model (:class:`LLMStartGenerator`, fixed
  stoichiometry, atoms in the stoichiometry's order); when the model gives no
  acceptable crystal within its budget, the classic random ``StartGenerator``
  fills in (``ase db ga.db source=fallback`` lists those);
* the operator mix adds the paper's infill mutation (:class:`LLMInfillMutation`:
  the model proposes a replacement for one element, kept if its metallic radius
  is within 0.1 A) and :class:`LLMRegenerationMutation` (a fresh crystal of the
  parent's formula) to ``CutAndSplicePairing`` and ``StrainMutation``;
* candidates relax with EMT (ASE's effective-medium potential for Al, Ni, Cu,
  Pd, Ag, Pt, Au).  EMT puts each fcc element at ~0 eV/atom, so the energy per
  atom is a formation-energy-like score that stays comparable when an infill
  mutation changes the composition: ``raw_score = -energy per atom``.

Because infill changes the composition, pairing only crosses parents with
identical atomic numbers (``CutAndSplicePairing``'s requirement), and the
comparator only compares structures with identical atomic numbers.

Run it::

    python docs/examples/ga_llm_search.py                       # shipped model, a few minutes
    python docs/examples/ga_llm_search.py --quick --model PATH  # CI size, well under a minute
    ase db ga_llm.db relaxed=1 -s raw_score- -c formula,raw_score,origin,source,substitution
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from ase import Atoms

EMT_METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model folder or 'default' (the shipped model)")
    p.add_argument("--db", default="ga_llm.db", help="output ASE database (must not exist yet)")
    p.add_argument("--stoichiometry", default="Cu6Au2", help="atoms per cell, in this order (EMT metals only)")
    p.add_argument("--population", type=int, default=12, help="population size")
    p.add_argument("--generations", type=int, default=4, help="generations (population-size offspring each)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 0.7 or 1.0)")
    p.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fmax", type=float, default=0.05, help="relaxation force limit (eV/A)")
    p.add_argument("--steps", type=int, default=200, help="relaxation steps per round")
    p.add_argument("--quick", action="store_true", help="reduced size for CI: population 4, 1 generation")
    p.add_argument("--overwrite", action="store_true", help="delete --db first if it exists")
    args = p.parse_args(argv)
    args.rounds = 3
    if args.quick:
        args.population, args.generations, args.steps, args.fmax, args.rounds = 4, 1, 15, 0.2, 1
    return args


def relax(atoms: Atoms, cellbounds, fmax: float, steps: int, rounds: int = 3) -> None:
    """Relax positions and cell with EMT; leave a single-point calculator with the results."""
    from ase.build import niggli_reduce
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms.calc = EMT()
    for _ in range(rounds):
        # A sheared cell slows the relaxation down: reduce it between rounds, as ASE's tutorial does.
        if not cellbounds.is_within_bounds(atoms.cell):
            niggli_reduce(atoms)
        opt = FIRE(FrechetCellFilter(atoms), maxstep=0.2, logfile=None)
        if opt.run(fmax=fmax, steps=steps):
            break
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)


def evaluate(atoms: Atoms, cellbounds, args: argparse.Namespace) -> bool:
    """Relax and score ``atoms``; ``False`` when it failed or left the cell bounds."""
    try:
        relax(atoms, cellbounds, args.fmax, args.steps, args.rounds)
        energy = atoms.get_potential_energy()
        ok = bool(np.isfinite(energy)) and cellbounds.is_within_bounds(atoms.cell)
    except Exception as exc:  # a pathological candidate must not end the search
        print(f"  relaxation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        energy, ok = 1e9, False
    kvp = atoms.info["key_value_pairs"]
    kvp["raw_score"] = -energy / len(atoms) if ok else -1e9
    kvp["energy_per_atom"] = energy / len(atoms) if ok else 1e9
    return ok


class SameNumbersComparator:
    """Compare only structures with identical atomic numbers (OFPComparator asserts on others)."""

    def __init__(self, comparator):
        self.comparator = comparator

    def looks_like(self, a1: Atoms, a2: Atoms) -> bool:
        if not np.array_equal(a1.numbers, a2.numbers):
            return False
        return self.comparator.looks_like(a1, a2)


def load_sampler(args: argparse.Namespace, natoms: int):
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings

    try:
        bundle = load_model(args.model)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load model {args.model!r} ({exc}); pass --model PATH to a model folder") from exc
    settings = SampleSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=8 if args.quick else 32,
        max_atoms=natoms,
        elements=EMT_METALS,
    )
    return Sampler(bundle, settings, seed=args.seed)


def main(argv: list[str] | None = None) -> dict:
    """Run the search; returns a summary (also printed)."""
    from ase.data import atomic_numbers
    from ase.symbols import string2symbols
    from ase_ga.cutandsplicepairing import CutAndSplicePairing
    from ase_ga.data import DataConnection, PrepareDB
    from ase_ga.offspring_creator import OperationSelector
    from ase_ga.ofp_comparator import OFPComparator
    from ase_ga.population import Population
    from ase_ga.standardmutations import StrainMutation
    from ase_ga.startgenerator import StartGenerator
    from ase_ga.utilities import CellBounds, closest_distances_generator

    from ase_llmgen.ga.operators import (
        LLMInfillMutation,
        LLMRegenerationMutation,
        LLMStartGenerator,
        provenance_pairs,
    )

    args = parse_args(argv)
    started = time.time()
    db_path = Path(args.db)
    if db_path.exists():
        if not args.overwrite:
            raise SystemExit(f"{db_path} exists (use --overwrite, or another --db)")
        db_path.unlink()
    symbols = string2symbols(args.stoichiometry)
    if not set(symbols) <= set(EMT_METALS):
        raise SystemExit(f"EMT supports {', '.join(EMT_METALS)}; got {args.stoichiometry}")
    numbers = [atomic_numbers[s] for s in symbols]
    n_top = len(numbers)
    rng = np.random.RandomState(args.seed)  # ase_ga uses the legacy numpy API

    sampler = load_sampler(args, n_top)
    # Every EMT metal may enter through infill, so the distance limits cover all of them.
    blmin = closest_distances_generator([atomic_numbers[s] for s in EMT_METALS], ratio_of_covalent_radii=0.6)
    cellbounds = CellBounds(
        bounds={"phi": [30, 150], "chi": [30, 150], "psi": [30, 150], "a": [2, 30], "b": [2, 30], "c": [2, 30]}
    )
    slab = Atoms("", pbc=True)

    # 1. The start population: from the model, the classic random generator as fallback.
    classic = StartGenerator(
        slab,
        numbers,
        blmin,
        box_volume=14.0 * n_top,
        number_of_variable_cell_vectors=3,
        cellbounds=cellbounds,
        splits={(2,): 1, (1,): 1},
        rng=rng,
    )
    starter = LLMStartGenerator(
        sampler,
        stoichiometry=numbers,
        blmin=blmin,
        cellbounds=cellbounds,
        max_draws=8 if args.quick else 64,
        fallback=classic,
    )
    prep = PrepareDB(str(db_path), simulation_cell=slab, stoichiometry=numbers)
    for _ in range(args.population):
        candidate = starter.get_new_candidate()
        prep.add_unrelaxed_candidate(candidate, **provenance_pairs(candidate))
    print(f"start population: {dict(starter.counts)}")

    da = DataConnection(str(db_path))
    while da.get_number_of_unrelaxed_candidates() > 0:
        a = da.get_an_unrelaxed_candidate()
        ok = evaluate(a, cellbounds, args)
        da.add_relaxed_step(a)
        if not ok:
            da.kill_candidate(a.info["confid"])

    # 2. Operators: ASE's bulk operators plus the two LLM mutations.
    comparator = SameNumbersComparator(
        OFPComparator(
            n_top=n_top,
            dE=1.0,
            cos_dist_max=1e-3,
            rcut=10.0,
            binwidth=0.05,
            pbc=[True] * 3,
            sigma=0.05,
            nsigma=4,
            recalculate=False,
        )
    )
    pairing = CutAndSplicePairing(
        slab,
        n_top,
        blmin,
        p1=1.0,
        p2=0.0,
        minfrac=0.15,
        number_of_variable_cell_vectors=3,
        cellbounds=cellbounds,
        rng=rng,
    )
    strain = StrainMutation(blmin, stddev=0.7, cellbounds=cellbounds, number_of_variable_cell_vectors=3, rng=rng)
    infill = LLMInfillMutation(
        sampler, n_candidates=8 if args.quick else 16, tolerance=0.1, elements=EMT_METALS, rng=rng
    )
    regenerate = LLMRegenerationMutation(
        sampler, blmin=blmin, cellbounds=cellbounds, max_draws=8 if args.quick else 64, rng=rng
    )
    # The quick (CI) run is short: even weights make it likely to exercise every operator.
    weights = [1.0, 1.0, 1.0, 1.0] if args.quick else [3.0, 2.0, 2.0, 1.0]
    operators = OperationSelector(weights, [pairing, strain, infill, regenerate], rng=rng)
    population = Population(da, args.population, comparator, use_extinct=True, rng=rng)
    current = population.get_current_population()
    strain.update_scaling_volume(current, w_adapt=0.5, n_adapt=4)
    pairing.update_scaling_volume(current, w_adapt=0.5, n_adapt=4)

    # 3. The search: one offspring at a time (steady state), population-size offspring per generation.
    failures: Counter = Counter()
    for step in range(args.generations * args.population):
        child, description = None, ""
        for _ in range(50):  # operators may fail (None); try again with new parents and operator
            a1, a2 = population.get_two_candidates()
            op = operators.get_operator()
            if op.min_inputs == 2 and not np.array_equal(a1.numbers, a2.numbers):
                failures["pairing: parents differ in composition"] += 1
                continue
            child, description = op.get_new_individual([a1, a2])
            if child is not None:
                break
            failures[description.split(" (")[0]] += 1
        if child is None:
            print(f"step {step}: no operator produced an offspring in 50 tries")
            continue
        da.add_unrelaxed_candidate(child, description=description)
        ok = evaluate(child, cellbounds, args)
        da.add_relaxed_step(child)
        if not ok:
            da.kill_candidate(child.info["confid"])
        population.update()
        if step % args.population == args.population - 1:
            current = population.get_current_population()
            strain.update_scaling_volume(current, w_adapt=0.5, n_adapt=4)
            pairing.update_scaling_volume(current, w_adapt=0.5, n_adapt=4)
        kvp = child.info["key_value_pairs"]
        print(f"step {step:3d}: {child.get_chemical_formula():10s} {kvp['energy_per_atom']:+.4f} eV/atom {description}")

    best = population.get_current_population()[:5]
    summary = {
        "db": str(db_path),
        "seconds": round(time.time() - started, 1),
        "relaxed": da.c.count(relaxed=1),
        "origins": dict(Counter(row.get("origin", "?") for row in da.c.select(relaxed=1))),
        "start": dict(starter.counts),
        "infill": dict(infill.counts),
        "regeneration": dict(regenerate.counts),
        "failed_tries": dict(failures),
        "best": [(a.get_chemical_formula(), round(a.info["key_value_pairs"]["energy_per_atom"], 4)) for a in best],
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"query: ase db {db_path} relaxed=1 -s raw_score- -c formula,raw_score,origin,source,substitution")
    return summary


if __name__ == "__main__":
    main()
