"""Space-group detection with spglib, tolerant of its two ways of failing."""

from __future__ import annotations

from typing import Any, NamedTuple

import spglib

from ase_llmgen.convert import to_atoms

# The paper checks space-group conditioning with symprec 0.2 A.
DEFAULT_SYMPREC = 0.2


class SpaceGroup(NamedTuple):
    """A space group: its International Tables number (1-230) and Hermann-Mauguin symbol."""

    number: int
    symbol: str


def detect_spacegroup(obj: Any, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = -1.0) -> SpaceGroup | None:
    """The space group of a crystal, or ``None`` when spglib cannot determine it.

    spglib returns ``None`` on failure, or raises ``SpglibError`` once ASE has
    switched its error handling on in this process: both mean "unknown".
    """
    if not symprec > 0:  # spglib crashes the interpreter on a negative tolerance
        raise ValueError(f"symprec must be a positive distance in A, got {symprec}")
    atoms = to_atoms(obj)
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    try:
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle_tolerance)
    except (spglib.SpglibError, ValueError, TypeError):
        return None
    if dataset is None:
        return None
    return SpaceGroup(int(dataset.number), str(dataset.international))
