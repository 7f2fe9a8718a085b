"""Structures into ASE databases with searchable check results, and re-checking.

Key-value pairs written for every structure (all searchable with ``ase db``):

* requested conditions: ``req_formula``, ``req_spacegroup``, ``req_formation_energy``,
  ``req_band_gap``, ``req_e_above_hull``
* check results (see :mod:`ase_llmgen.checks.builtin` and any plugin checks):
  ``sg_number``, ``sg_match``, ``sg_symprec``, ``formula_match``, ``struct_valid``,
  ``comp_valid``, ``valid``, ``reduced_formula``, ``density``, ...
* provenance: ``model``, ``temperature``, ``top_p``, ``seed``, ``task``, ``constrained``,
  ``formula_enforced``, ``min_distance``

e.g. ``ase db out.db 'sg_match=True,valid=True'``. Formulas that would read as numbers are
written with explicit counts (``reduced_formula=Na1N1`` for NaN, see :func:`db_safe_pairs`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from pathlib import Path

from ase import Atoms
from ase.db import connect
from pymatgen.core import Structure

from ase_llmgen.checks.symmetry import DEFAULT_SYMPREC
from ase_llmgen.convert import to_atoms
from ase_llmgen.plugins import checks

CONDITION_KEYS = ("formula", "spacegroup", "formation_energy", "band_gap", "e_above_hull")
PROVENANCE_KEYS = (
    "model",
    "temperature",
    "top_p",
    "seed",
    "batch",
    "task",
    "constrained",
    "formula_enforced",
    "min_distance",
    "operator",
)


def db_safe_pairs(pairs: dict) -> dict:
    """Key-value pairs ASE db will store, whatever the model wrote.

    ASE db refuses strings that read as numbers, and some formulas do: ``NaN`` is
    sodium nitride, ``InF`` indium fluoride. Such formulas (keys containing
    "formula") are written with explicit counts (``Na1N1``, still a formula for
    pymatgen and ASE); any other numeric string is stored as the number it reads as.
    """
    out = {}
    for key, value in pairs.items():
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if "formula" in key:
                    from pymatgen.core import Composition

                    value = Composition(value).formula.replace(" ", "")
                else:
                    value = number
        out[key] = value
    return out


def condition_pairs(conditions: dict) -> dict:
    """Requested conditions as ``req_*`` key-value pairs."""
    return {f"req_{k}": v for k, v in conditions.items() if k in CONDITION_KEYS and v is not None}


def conditions_from_pairs(pairs: dict) -> dict:
    """The inverse of :func:`condition_pairs`."""
    return {k: pairs[f"req_{k}"] for k in CONDITION_KEYS if f"req_{k}" in pairs}


def run_checks(atoms: Atoms, conditions: dict, symprec: float = DEFAULT_SYMPREC) -> dict:
    """Run every registered check; a failing check is recorded, not raised."""
    out: dict = {}
    for name, check in checks().items():
        try:
            options = {"symprec": symprec} if _takes_symprec(check.run) else {}
            out.update(check.run(atoms, conditions, **options))
        except Exception as exc:  # one broken check must not lose the structure
            out[f"check_error_{name}"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


@functools.lru_cache(maxsize=64)
def _takes_symprec(run) -> bool:
    try:
        params = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): call it plainly
        return False
    return any(p.name == "symprec" or p.kind is p.VAR_KEYWORD for p in params)


def row_pairs(atoms: Atoms, symprec: float = DEFAULT_SYMPREC, extra: dict | None = None) -> tuple[dict, dict]:
    """Key-value pairs and data for one structure from its ``atoms.info`` provenance."""
    info = atoms.info
    conditions = dict(info.get("conditions") or {})
    pairs = condition_pairs(conditions)
    pairs.update({k: info[k] for k in PROVENANCE_KEYS if isinstance(info.get(k), (int, float, str, bool))})
    pairs.update(run_checks(atoms, conditions, symprec))
    pairs.update(extra or {})
    data = {"text": info["text"]} if "text" in info else {}
    return db_safe_pairs(pairs), data


def write_structures(
    db_path: str | Path,
    structures: Iterable[Atoms | Structure],
    symprec: float = DEFAULT_SYMPREC,
    extra: dict | None = None,
) -> list[int]:
    """Check and write structures (``ase.Atoms`` or pymatgen ``Structure``) to an ASE database.

    Each row is committed as it comes, so an interruption loses at most the structure in hand.
    A ``Structure``'s provenance is read from its ``.properties``, as generate_structures leaves it.
    """
    ids = []
    db = connect(db_path)
    for atoms in structures:
        if isinstance(atoms, Structure):
            atoms, properties = to_atoms(atoms), atoms.properties
            atoms.info = dict(properties)
        pairs, data = row_pairs(atoms, symprec, extra)
        clean = Atoms(
            atoms.get_chemical_symbols(), cell=atoms.cell, scaled_positions=atoms.get_scaled_positions(), pbc=True
        )
        ids.append(db.write(clean, key_value_pairs=pairs, data=data))
    return ids


def select_rows(db, selection: str | None, where: str | Path = "") -> list:
    """``db.select(selection)`` as a list, with a bad selection named in the error."""
    try:
        return list(db.select(selection))
    except (ValueError, KeyError, SyntaxError) as exc:
        raise ValueError(f"{where}: bad selection {selection!r} ({exc}); e.g. 'natoms<10,valid=True'") from exc


def is_crystal(atoms: Atoms) -> bool:
    """Whether a row holds a 3D-periodic structure with atoms (ase_ga's first row, molecules, slabs: no)."""
    return len(atoms) > 0 and bool(atoms.pbc.all())


def check_database(
    db_path: str | Path, selection: str | None = None, symprec: float = DEFAULT_SYMPREC
) -> tuple[int, int]:
    """Re-run every check over an existing database (any ASE db) and update rows in place.

    All updates happen in one transaction: an error leaves the database as it was.
    Requested conditions are read back from ``req_*`` keys when present; rows that are
    not 3D-periodic crystals (molecules, slabs) are left alone.
    Returns ``(updated, skipped)`` row counts.
    """
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no such database")
    db = connect(db_path)
    rows = select_rows(db, selection, db_path)
    updated = 0
    with db:  # one transaction (SQLite): all rows or none
        for row in rows:
            atoms = row.toatoms()
            if not is_crystal(atoms):
                continue
            conditions = conditions_from_pairs(row.key_value_pairs)
            db.update(row.id, **db_safe_pairs(run_checks(atoms, conditions, symprec)))
            updated += 1
    return updated, len(rows) - updated
