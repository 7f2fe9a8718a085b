"""Atoms <-> Structure conversion that does not leak GA bookkeeping across."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from pymatgen.core import Lattice, Structure


def to_atoms(obj: Any) -> Atoms:
    """Return ``ase.Atoms`` for Atoms or a pymatgen ``Structure`` (periodic, no info copied)."""
    if isinstance(obj, Atoms):
        return obj
    if isinstance(obj, Structure):
        if not obj.is_ordered:
            raise ValueError("disordered structures (partial occupancies) have no ase.Atoms form: order them first")
        return Atoms(
            symbols=[site.specie.symbol for site in obj],
            cell=obj.lattice.matrix,
            scaled_positions=obj.frac_coords,
            pbc=True,
        )
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(obj).__name__}")


def to_structure(obj: Any) -> Structure:
    """Return a pymatgen ``Structure`` for Atoms or a Structure.

    Unlike ``AseAtomsAdaptor`` this does not copy ``atoms.info`` into
    ``Structure.properties``, so GA bookkeeping does not travel along.
    """
    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, Atoms):
        if not np.all(obj.pbc) or obj.cell.rank != 3:
            raise ValueError("a crystal needs a full 3D periodic cell (pbc=True and 3 cell vectors)")
        return Structure(
            Lattice(np.array(obj.cell)),
            obj.get_chemical_symbols(),
            obj.get_scaled_positions(wrap=False),
        )
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(obj).__name__}")
