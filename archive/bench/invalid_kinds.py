"""Where a wyckoff model's structurally invalid samples fail (issue 14, session 18).

A sample is structurally invalid (CDVAE: any two atoms closer than 0.5 A) for one of two reasons in the
wyckoff format: one orbit whose free coordinates put two of its own images together (a general or lower-symmetry
position written at, or next to, a special one), or two orbits written on top of each other (one site written
twice, or two neighbours too close). This samples a model unconditionally (the model alone: grammar on, invalid
samples kept, as ``bench/cell_size.py``), expands each orbit of every invalid sample on its own, and counts which
closest pair is to blame (and whether two orbits sit at one place, within 0.1 A), by crystal system, beside the
share of samples of each system.

    python archive/bench/invalid_kinds.py --model runs/wyckoff_tokens/best --temperature 1.0 --n 2000
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
from ase.geometry import get_distances
from group_marginal import SYSTEMS  # a sibling script: python puts archive/bench on sys.path

from ase_llmgen.checks.validity import structurally_valid
from ase_llmgen.models.bundle import load_model
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.text.wyckoff import decode, parse

CUTOFF = 0.5  # CDVAE's structural validity


def system_of(number: int) -> str:
    """The crystal system of a space group number."""
    return next(name for name, (lo, hi) in SYSTEMS.items() if lo <= number <= hi)


def orbit_images(text: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The primitive cell and each orbit's Cartesian positions: every orbit decoded on its own, as a text of the
    group, the lattice and that orbit alone (so exactly as ``text.wyckoff.decode`` expands it)."""
    lines = text.strip("\n").split("\n")
    head, body = lines[:2], lines[2:]
    orbits = [decode("\n".join([*head, *body[i : i + 2]])) for i in range(0, len(body), 2)]
    return orbits[0].cell.array, [atoms.positions for atoms in orbits]


def closest(a: np.ndarray, b: np.ndarray | None, cell: np.ndarray) -> float:
    """The shortest periodic distance within ``a`` (b None: between distinct atoms) or between ``a`` and ``b``."""
    _, d = get_distances(a, b, cell=cell, pbc=True)
    if b is None:
        d = d + np.eye(len(a)) * 1e9
    return float(d.min())


def blame(text: str) -> str:
    """Why an invalid sample fails: 'one orbit' (its own images meet), 'a site twice' (two orbits within 0.1 A:
    one position written twice) or 'two orbits' (two orbits closer than 0.5 A); the first that applies."""
    cell, orbits = orbit_images(text)
    if any(len(o) > 1 and closest(o, None, cell) < CUTOFF for o in orbits):
        return "one orbit"
    between = min(
        (closest(orbits[i], orbits[j], cell) for i in range(len(orbits)) for j in range(i + 1, len(orbits))),
        default=np.inf,
    )
    return "a site twice" if between < 0.1 else "two orbits" if between < CUTOFF else "neither"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wyckoff")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--cell-temperature", dest="cell_temperature", type=float, default=None)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    bundle = load_model(args.model)
    cell_temperature = args.temperature if args.cell_temperature is None else args.cell_temperature
    settings = SampleSettings(
        temperature=args.temperature, top_p=0.9, cell_temperature=cell_temperature, require_valid=False, batch_size=100
    )
    structures, _ = Sampler(bundle, settings, seed=args.seed).sample(args.n, progress=True)
    systems: Counter = Counter()
    per_system: dict[str, Counter] = {}
    for atoms in structures:
        text = atoms.info["text"]
        system = system_of(parse(text).group.number)
        systems[system] += 1
        if structurally_valid(atoms):
            continue
        per_system.setdefault(system, Counter())[blame(text)] += 1
    kinds = sum(per_system.values(), Counter())
    invalid = sum(kinds.values())
    print(f"{args.model} tau {args.temperature} cell tau {cell_temperature}: {len(structures)} samples, {invalid} bad")
    print("| system | share of samples | invalid (share of the system's) | one orbit | a site twice | two orbits |")
    print("|---|---|---|---|---|---|")
    for system in SYSTEMS:
        k = per_system.get(system, Counter())
        n = systems[system]
        total = sum(k.values())
        print(
            f"| {system} | {n / len(structures):.3f} | {total} ({total / max(n, 1):.3f}) | {k['one orbit']} | "
            f"{k['a site twice']} | {k['two orbits']} |"
        )
    print(json.dumps({"model": args.model, "n": len(structures), "kinds": dict(kinds), "systems": dict(systems)}))


if __name__ == "__main__":
    main()
