"""Training-time augmentations of structures (Atoms in, Atoms out)."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def translate(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Shift all fractional coordinates by one uniform random vector (mod 1)."""
    out = atoms.copy()
    out.set_scaled_positions((atoms.get_scaled_positions(wrap=False) + rng.random(3)) % 1.0)
    return out


def permute(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Shuffle the order of the sites."""
    return atoms[rng.permutation(len(atoms))]
