"""Readers: one function per source kind, all yielding :class:`Record`.

Readers yield a :class:`DataError` in place of a bad row (so one bad row does
not end the file); :func:`read_records` raises it, naming the file and row, or,
with ``on_error="skip"``, counts it in the returned list of skipped rows:
nothing vanishes silently.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

csv.field_size_limit(1 << 28)  # CDVAE rows hold whole CIFs


class DataError(ValueError):
    """A row of an input file that cannot be used; the message names file and row."""


@dataclass
class Record:
    """One crystal with its known properties and where it came from."""

    atoms: Atoms
    properties: dict = field(default_factory=dict)  # keys of Conditions, plus material_id
    source: str = ""  # "file:row N"


def _float(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _cif_to_atoms(text: str) -> Atoms:
    # The CIF codec: bounded work and a named reason for a bad cell, disorder or a non-element.
    from ase_llmgen.text.cif import decode

    return decode(text)


def iter_csv(path: Path) -> Iterator[Record | DataError]:
    """CDVAE-style CSV (or gzipped, ``.csv.gz``): a ``cif`` column plus optional property columns."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        try:
            yield from _csv_records(path, csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error, OSError) as exc:  # binary junk, a NUL byte, a broken gzip, ...
            raise DataError(f"{path}: not a readable CSV text file ({exc})") from exc


def _csv_records(path: Path, reader: csv.DictReader) -> Iterator[Record | DataError]:
    if not reader.fieldnames or "cif" not in reader.fieldnames:
        raise DataError(f"{path}: no 'cif' column (columns: {reader.fieldnames})")
    for n, row in enumerate(reader, start=1):
        where = f"{path}: row {n}" + (f" ({row['material_id']})" if row.get("material_id") else "")
        try:
            atoms = _cif_to_atoms(row["cif"])
            sg = row.get("spacegroup.number") or row.get("space_group_number")
            props = {
                "material_id": row.get("material_id") or None,
                "formula": row.get("pretty_formula") or atoms.get_chemical_formula(mode="metal", empirical=True),
                "spacegroup": int(float(sg)) if sg not in (None, "") else None,
                "formation_energy": _float(row.get("formation_energy_per_atom")),
                "band_gap": _float(row.get("band_gap")),
                "e_above_hull": _float(row.get("e_above_hull") or row.get("energy_above_hull")),
            }
        except Exception as exc:
            yield DataError(f"{where}: {exc}")
            continue
        if len(atoms) == 0:
            yield DataError(f"{where}: structure has no atoms")
            continue
        yield Record(atoms, {k: v for k, v in props.items() if v is not None}, where)


def iter_ase_db(path: Path) -> Iterator[Record | DataError]:
    """Every row of an ASE database; key-value pairs become properties.

    Rows without atoms are not structures but bookkeeping (ase_ga's first row): they are passed over.
    """
    from ase_llmgen.checks.database import open_db

    for row in open_db(path).select():
        where = f"{path}: row id={row.id}"
        atoms = row.toatoms()
        if len(atoms) == 0:
            continue
        if not atoms.pbc.all():
            yield DataError(f"{where}: not a periodic crystal")
            continue
        kvp = dict(row.key_value_pairs)
        props = {
            k: kvp[k] for k in ("formula", "spacegroup", "formation_energy", "band_gap", "e_above_hull") if k in kvp
        }
        # Databases written by ase-llmgen carry its checks' keys (checks/database.py) instead.
        if "formula" not in props and "reduced_formula" in kvp:
            from pymatgen.core import Composition

            # back from the db-safe spelling (Na1N1 -> NaN)
            props["formula"] = Composition(kvp["reduced_formula"]).reduced_formula
        # sg_number 0 is how a check records "spglib could not tell": unknown, not a condition.
        if "spacegroup" not in props and 1 <= int(kvp.get("sg_number", 0)) <= 230:
            props["spacegroup"] = int(kvp["sg_number"])
        yield Record(atoms, props, where)


def _read_p1_cif(path: Path) -> list[Atoms] | None:
    """The crystals of a CIF whose every block is P1 (identity only), site by site; ``None`` otherwise.

    ASE's reader expands symmetry and merges sites that coincide, so a generated sample with two
    atoms on one spot would read back valid from a CIF while its database row is invalid. A P1
    file has nothing to expand: its sites are taken as written. A partially occupied block also
    gives ``None``: ASE's reader records the occupancies, so the disorder is named, not dropped.
    """
    from ase.io.cif import parse_cif

    images = []
    for block in parse_cif(str(path)):
        if not block.has_structure():
            continue
        ops = block._get_sitesym()  # the CIF's own symmetry operations, as written
        number = block._get_spacegroup_number()
        if (ops is not None and [op.replace(" ", "").lower() for op in ops] != ["x,y,z"]) or number not in (None, 1):
            return None
        if ops is None and number is None and block._get_spacegroup_name() not in (None, "P 1", "P1"):
            return None
        occupancies = block.get("_atom_site_occupancy")
        if occupancies is not None and any(float(str(x).split("(")[0]) != 1.0 for x in occupancies):
            return None
        atoms = block.get_unsymmetrized_structure()
        atoms.pbc = True
        images.append(atoms)
    return images


def iter_ase_file(path: Path) -> Iterator[Record | DataError]:
    """Any file ``ase.io.read`` understands (CIF, extxyz, POSCAR, ...); P1 CIFs keep coincident sites."""
    from ase.io import read

    try:
        images = _read_p1_cif(path) if path.suffix.lower() == ".cif" else None
        if images is None:
            images = read(path, index=":")
    except Exception as exc:
        raise DataError(f"{path}: ASE cannot read it: {exc}") from exc
    for n, atoms in enumerate(images, start=1):
        where = f"{path}: image {n}"
        if len(atoms) == 0 or not atoms.pbc.all():
            yield DataError(f"{where}: not a periodic crystal")
            continue
        disorder = _partial_occupancy(atoms)
        if disorder:
            yield DataError(f"{where}: {disorder}")
            continue
        yield Record(atoms, {}, where)


def _partial_occupancy(atoms: Atoms) -> str | None:
    """Why ``atoms`` is disordered, or ``None``.

    ASE's CIF reader keeps one species per partially occupied site (Na 0.5 / K 0.5 comes
    back as K alone) and records the occupancies in ``atoms.info["occupancy"]``: such a
    crystal is refused rather than silently changed.
    """
    for kind, occupancy in (atoms.info.get("occupancy") or {}).items():
        if len(occupancy) > 1 or abs(sum(occupancy.values()) - 1) > 1e-3:
            shares = " / ".join(f"{el} {share:g}" for el, share in occupancy.items())
            return (
                f"disordered: site kind {kind} is partially occupied ({shares}); only ordered crystals "
                "can be used (order it first, e.g. with pymatgen's OrderDisorderedStructureTransformation)"
            )
    return None


def read_records(path: str | Path, on_error: str = "raise") -> tuple[list[Record], list[str]]:
    """Read all crystals of ``path`` (CSV, ASE db or ASE-readable file).

    Returns ``(records, skipped)``; ``skipped`` lists the error of each row
    skipped with ``on_error="skip"`` (empty with ``"raise"``).
    """
    path = Path(path)
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.name.lower().endswith(".csv.gz"):
        suffix = ".csv"
    source = iter_csv if suffix == ".csv" else iter_ase_db if suffix in (".db", ".json") else iter_ase_file
    records: list[Record] = []
    skipped: list[str] = []
    for item in source(path):
        if isinstance(item, DataError):
            if on_error == "raise":
                raise item
            skipped.append(str(item))
        else:
            records.append(item)
    return records, skipped
