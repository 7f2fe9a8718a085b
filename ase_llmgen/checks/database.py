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
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ase import Atoms
from ase.db import connect
from pymatgen.core import Structure

from ase_llmgen.checks.symmetry import DEFAULT_SYMPREC
from ase_llmgen.convert import to_atoms
from ase_llmgen.plugins import checks

CONDITION_KEYS = ("formula", "spacegroup", "formation_energy", "band_gap", "e_above_hull", "formula_units")
PROVENANCE_KEYS = (
    "model",
    "temperature",
    "top_p",
    "cell_temperature",
    "seed",
    "batch",
    "task",
    "constrained",
    "formula_enforced",
    "min_distance",
    "formula_first",
    "written_formula",  # formula first: what the model wrote into its own prompt
    "written_formula_units",
    "operator",
    "sample",
)
# ASE holds its lock file for one write call; one older than this was left by a killed process.
STALE_LOCK_SECONDS = 60.0


def open_db(path: str | Path, write: bool = False):
    """The ASE database at ``path``, checked to be one, without ASE's lock file.

    ASE's lock file (``X.db.lock``) outlives a process killed with SIGKILL, and ASE then waits
    for it forever.  SQLite locks the database itself (the kernel drops those locks when a
    process dies), so writers here make none, and a stale one (older than
    :data:`STALE_LOCK_SECONDS`) is removed so that ASE's own tools do not hang on it either.
    A file that is no database (binary junk, a CSV named ``.db``) is a ``ValueError`` naming it.
    ``write``: the database may be created, and a new one is set up in one locked step, so two
    processes creating it at once do not both create its tables.
    """
    path = Path(path)
    if not write and not path.exists():
        raise FileNotFoundError(f"{path}: no such database")
    _remove_stale_lock(path)
    db = connect(str(path), use_lock_file=False)
    try:
        if write and path.suffix == ".db":
            with transaction(db, immediate=True):
                db.metadata  # noqa: B018  (sets the tables up inside the transaction)
        else:
            db.count()
    except sqlite3.OperationalError as exc:  # e.g. "database is locked" after SQLite's 20 s wait
        raise ValueError(f"{path}: {exc}") from exc
    except (sqlite3.DatabaseError, ValueError, KeyError) as exc:  # junk: SQLite's or ASE's JSON reader's complaint
        raise ValueError(f"{path}: not an ASE database ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:  # ASE: a newer or older database format
        raise ValueError(f"{path}: {exc}") from exc
    return db


def _remove_stale_lock(path: Path) -> None:
    lock = path.with_name(path.name + ".lock")
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
        warnings.warn(f"removed {lock}, left {age:.0f} s ago by an interrupted ASE process", stacklevel=3)


@contextmanager
def transaction(db, immediate: bool = False) -> Iterator:
    """Everything written to ``db`` inside commits together, or not at all.

    ASE's ``with db:`` commits on its own every 5,000 uses of the connection (about 1,700
    row updates), so a failure after that left a half-updated database; here nothing is
    committed before the end.  ``immediate`` takes SQLite's write lock at the start, so a
    count followed by a write is atomic against other processes.
    """
    if not hasattr(type(db), "managed_connection"):  # not SQLite (a JSON database): ASE's own
        with db:
            yield db
        return
    with db:
        if immediate:
            db.connection.execute("BEGIN IMMEDIATE")
        db.managed_connection = functools.partial(type(db).managed_connection, db, commit_frequency=sys.maxsize)
        try:
            yield db
        finally:
            del db.managed_connection


CLAIMS_TABLE = "ase_llmgen_batches"


def claim_batch(db, request: str, at_least: int = 0) -> int:
    """Claim the next batch number of ``request`` (at least ``at_least``) in ``db``, atomically.

    Two runs of one request at once then draw different batches (different seeds) instead of
    writing the same crystals twice.  Claims live in their own table, beside ASE's.
    """
    with transaction(db, immediate=True):
        con = db.connection
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} (request TEXT, batch INTEGER, PRIMARY KEY (request, batch))"
        )
        (top,) = con.execute(f"SELECT MAX(batch) FROM {CLAIMS_TABLE} WHERE request = ?", (request,)).fetchone()
        batch = max(at_least, -1 if top is None else top + 1)
        con.execute(f"INSERT INTO {CLAIMS_TABLE} VALUES (?, ?)", (request, batch))
    return batch


def write_below(db, atoms: Atoms, pairs: dict, data: dict, limit: int, **selection) -> int | None:
    """Write one row unless ``db`` already holds ``limit`` rows matching ``selection`` (checked atomically).

    Returns the new id, or ``None`` when the database is full (another run filled it).
    """
    with transaction(db, immediate=True):
        if db.count(**selection) >= limit:
            return None
        return db.write(atoms, key_value_pairs=pairs, data=data)


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
    db = open_db(db_path, write=True)
    for atoms in structures:
        clean, pairs, data = checked_row(atoms, symprec, extra)
        ids.append(db.write(clean, key_value_pairs=pairs, data=data))
    return ids


def checked_row(atoms: Atoms | Structure, symprec: float = DEFAULT_SYMPREC, extra: dict | None = None):
    """``(atoms, key_value_pairs, data)`` of one structure as a row: bare atoms, checks and provenance."""
    if isinstance(atoms, Structure):
        atoms, properties = to_atoms(atoms), atoms.properties
        atoms.info = dict(properties)
    pairs, data = row_pairs(atoms, symprec, extra)
    clean = Atoms(
        atoms.get_chemical_symbols(), cell=atoms.cell, scaled_positions=atoms.get_scaled_positions(), pbc=True
    )
    return clean, pairs, data


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
    db_path: str | Path, selection: str | None = None, symprec: float = DEFAULT_SYMPREC, progress: bool = False
) -> tuple[int, int]:
    """Re-run every check over an existing database (any ASE db) and update rows in place.

    All updates happen in one transaction: an error or a kill (even SIGKILL) leaves the
    database as it was, and a rerun does the whole work again.
    Requested conditions are read back from ``req_*`` keys when present; rows that are
    not 3D-periodic crystals (molecules, slabs) are left alone.
    Returns ``(updated, skipped)`` row counts.
    """
    from tqdm.auto import tqdm

    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no such database")
    db = open_db(db_path, write=True)
    rows = select_rows(db, selection, db_path)
    updated = 0
    with transaction(db):  # all rows or none
        for row in tqdm(rows, disable=not progress, desc="check"):
            atoms = row.toatoms()
            if not is_crystal(atoms):
                continue
            conditions = conditions_from_pairs(row.key_value_pairs)
            db.update(row.id, **db_safe_pairs(run_checks(atoms, conditions, symprec)))
            updated += 1
    return updated, len(rows) - updated
