"""Crystals with their check results into files other than databases (CIF, extxyz, any ASE format).

A database row keeps its checks as key-value pairs; a file keeps them where the format can:

* CIF: one block per crystal, written by pymatgen's ``CifWriter`` (coordinates to 8 significant
  figures, not ASE's float repr: ``0.88000000``, never ``0.8799999999999999``), with the pairs as
  data items ``_ase_llmgen_<key>`` (``ase.io.read(f, store_tags=True)`` reads them back into ``info``);
* extxyz and xyz: in each frame's comment line, frame by frame as crystals arrive;
* other formats: in ``atoms.info``, written at the end (whatever ASE keeps of it).

Floats are written to 10 significant digits.  Crystals are written as they come for CIF and
extxyz, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ase import Atoms

CIF_PREFIX = "_ase_llmgen_"
_STREAMED = {"extxyz", "xyz"}  # formats ASE appends frame by frame


def _tidy(value):
    return float(f"{value:.10g}") if isinstance(value, float) else value


def _cif_value(value) -> str:
    """A CIF value: numbers as they read, text quoted (or as a text field when it holds quotes or lines)."""
    value = _tidy(value)
    if isinstance(value, bool | int | float):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[^\s'\";#_$\[\]][^\s]*", text):
        return text
    if "\n" not in text and "'" not in text:
        return f"'{text}'"
    if "\n" not in text and '"' not in text:
        return f'"{text}"'
    return "\n;" + text.replace("\n;", "\n ;") + "\n;"


def cif_block(atoms: Atoms, pairs: dict, name: str) -> str:
    """One CIF data block ``data_<name>`` of ``atoms`` with ``pairs`` as ``_ase_llmgen_<key>`` items."""
    from pymatgen.io.cif import CifWriter

    from ase_llmgen.convert import to_structure

    text = str(CifWriter(to_structure(atoms)))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    head = next(i for i, line in enumerate(lines) if line.startswith("data_"))
    items = [f"{CIF_PREFIX}{key}   {_cif_value(value)}" for key, value in pairs.items()]
    return "\n".join(lines[:head] + [f"data_{name}"] + items + lines[head + 1 :]) + "\n"


def _format(path: Path) -> str | None:
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        return filetype(path, read=False)
    except UnknownFileTypeError:
        return None


def write_crystal_file(path: str | Path, crystals: Iterable[tuple[Atoms, dict]]) -> int:
    """Write ``(atoms, pairs)`` to ``path`` (overwritten), each as it comes where the format allows.

    Returns how many crystals were written.  On an interruption, what came before it is written.
    """
    from ase.io import write

    path = Path(path)
    kind = _format(path)
    streamed = kind == "cif" or kind in _STREAMED
    if streamed:
        path.write_text("")
    pending: list[Atoms] = []
    count = 0
    try:
        for atoms, pairs in crystals:
            count += 1
            if kind == "cif":
                formula = atoms.get_chemical_formula(empirical=True) or "empty"
                with open(path, "a") as handle:
                    handle.write(cif_block(atoms, pairs, f"{count}_{formula}"))
                continue
            out = Atoms(atoms.get_chemical_symbols(), cell=atoms.cell, positions=atoms.positions, pbc=atoms.pbc)
            out.info = {k: _tidy(v) for k, v in pairs.items()}
            if streamed:
                write(path, out, format=kind, append=True)
            else:
                pending.append(out)
    finally:
        if pending:
            write(path, pending)
    return count
