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


def sort_sites(atoms: Atoms) -> Atoms:
    """Order the sites by their written fractional coordinates (x, then y, then z), whatever the element.

    Sorting on the two-decimal values the text will show makes ties exact, so the
    order of a string is a function of the string alone. In this order two sites
    at (nearly) one position are neighbours in the text -- a collision the model
    can see locally instead of remembering every earlier site.
    """
    frac = np.round(np.mod(atoms.get_scaled_positions(wrap=False), 1.0), 2) % 1.0
    return atoms[np.lexsort((frac[:, 2], frac[:, 1], frac[:, 0]))]


SITE_ORDERS = ("as_read", "spatial")


def order_sites(atoms: Atoms, order: str) -> Atoms:
    """``atoms`` in a model's site order: "as_read" (unchanged) or "spatial" (:func:`sort_sites`)."""
    if order not in SITE_ORDERS:
        raise ValueError(f"unknown site order {order!r}: one of {SITE_ORDERS}")
    return sort_sites(atoms) if order == "spatial" else atoms
