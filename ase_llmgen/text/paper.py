"""The paper's crystal string (Gruver et al. 2024), the default codec.

::

    3.9 3.9 3.9          lattice lengths a b c in Angstrom, one decimal
    90 90 90             angles alpha beta gamma in degrees, integers (rounded)
    Sr                   then, per site, the element ...
    0.00 0.00 0.00       ... and its fractional coordinates, two decimals, in [0, 1)

The parser is strict: it returns a complete structure or raises
:class:`CrystalTextError` naming the line and what was expected there.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.geometry import cellpar_to_cell
from pymatgen.core import Lattice, Structure

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Codec
from ase_llmgen.text import augment
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.limits import angles_problem, coordinates_problem, lengths_problem
from ase_llmgen.text.prompts import MASK

ELEMENTS = frozenset(chemical_symbols[1:])  # no dummy 'X'
# Every fractional coordinate this format writes, in order (two decimals, wrapped into [0, 1)).
COORDINATES = tuple(f"0.{i:02d}" for i in range(100))
# Where a coordinate stands as a whole (not inside 10.25 or 0.125): what a tokenizer may keep as one token.
COORDINATE_PATTERN = r"(?<![0-9.])0\.[0-9]{2}(?![0-9])"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$", re.ASCII)  # ASCII: float() also reads other digits


def _cellpar(obj: Any) -> np.ndarray:
    if isinstance(obj, Structure):
        return np.array(obj.lattice.parameters)
    if isinstance(obj, Atoms):
        return obj.cell.cellpar()
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(obj).__name__}")


def _sites(obj: Any) -> tuple[list[str], np.ndarray]:
    if isinstance(obj, Structure):
        if not obj.is_ordered:
            raise ValueError("disordered structures (partial occupancies) cannot be written as text")
        return [site.specie.symbol for site in obj], obj.frac_coords
    return obj.get_chemical_symbols(), obj.cell.scaled_positions(obj.positions)


def encode(obj: Any) -> str:
    """Write ``ase.Atoms`` or a pymatgen ``Structure`` as the paper's crystal string."""
    a, b, c, alpha, beta, gamma = _cellpar(obj)
    symbols, frac = _sites(obj)
    if len(symbols) == 0:
        raise ValueError("cannot encode a structure with no atoms")
    # What the parser would refuse is not written either (e.g. a 2000 A cell).
    problem = lengths_problem([a, b, c]) or angles_problem([alpha, beta, gamma]) or coordinates_problem(frac.ravel())
    if problem:
        raise ValueError(f"cannot write this structure as text: {problem}")
    # Wrap after rounding so 0.999 is written 0.00, not 1.00.
    frac = np.round(np.mod(frac, 1.0), 2) % 1.0
    lines = [
        f"{a:.1f} {b:.1f} {c:.1f}",
        # Round, not truncate: the original int() turns 119.9999 into 119.
        " ".join(str(int(round(x))) for x in (alpha, beta, gamma)),
    ]
    for symbol, (x, y, z) in zip(symbols, frac):
        lines.append(symbol)
        lines.append(f"{x:.2f} {y:.2f} {z:.2f}")
    return "\n".join(lines)


def _numbers(line: str, lineno: int, what: str) -> list[float]:
    fields = line.split()
    if len(fields) != 3:
        raise CrystalTextError(f"got {len(fields)} fields {line!r}", lineno, f"3 numbers: {what}")
    for f in fields:
        if not _NUMBER.match(f):
            raise CrystalTextError(f"{f!r} is not a number", lineno, f"3 numbers: {what}")
    return [float(f) for f in fields]


def parse(text: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Parse crystal text into ``(cellpar, symbols, frac_coords)`` or raise ``CrystalTextError``."""
    if not isinstance(text, str):
        raise CrystalTextError(f"expected text, got {type(text).__name__}")
    lines = text.strip("\n").split("\n")
    if len(lines) < 4:
        raise CrystalTextError(f"only {len(lines)} line(s)", None, "lengths, angles, then element and coordinate lines")
    lengths = _numbers(lines[0], 1, "lattice lengths a b c")
    if min(lengths) <= 0:
        raise CrystalTextError("lattice lengths must be positive", 1)
    problem = lengths_problem(lengths)
    if problem:
        raise CrystalTextError(problem, 1)
    angles = _numbers(lines[1], 2, "lattice angles alpha beta gamma")
    problem = angles_problem(angles)
    if problem:
        raise CrystalTextError(problem, 2)
    body = lines[2:]
    if len(body) % 2:
        raise CrystalTextError("the last element has no coordinates", len(lines) + 1, "x y z fractional coordinates")
    symbols: list[str] = []
    frac: list[list[float]] = []
    for i in range(0, len(body), 2):
        symbol = body[i].strip()
        if symbol not in ELEMENTS:
            raise CrystalTextError(f"{symbol!r} is not a chemical element", i + 3, "an element symbol")
        symbols.append(symbol)
        xyz = _numbers(body[i + 1], i + 4, "fractional coordinates x y z")
        problem = coordinates_problem(xyz)
        if problem:
            raise CrystalTextError(problem, i + 4)
        frac.append(xyz)
    return np.array(lengths + angles), symbols, np.array(frac)


def decode(text: str) -> Atoms:
    """Parse the paper's crystal string into periodic ``ase.Atoms``."""
    cellpar, symbols, frac = parse(text)
    return Atoms(symbols=symbols, cell=cellpar_to_cell(cellpar), scaled_positions=frac % 1.0, pbc=True)


def decode_structure(text: str) -> Structure:
    """Parse the paper's crystal string into a pymatgen ``Structure``."""
    cellpar, symbols, frac = parse(text)
    return Structure(Lattice.from_parameters(*cellpar), symbols, frac % 1.0)


def mask_element(crystal_text: str, element: str) -> str:
    """Replace the element lines equal to ``element`` (whole lines only) by ``[MASK]``.

    ``str.replace`` would also hit Si, Sn and Sr when masking S; here only the
    element lines of the paper's format (3rd, 5th, ... line) are compared.
    """
    lines = crystal_text.split("\n")
    hits = 0
    for i in range(2, len(lines), 2):
        if lines[i].strip() == element:
            lines[i] = MASK
            hits += 1
    if not hits:
        raise ValueError(f"element {element!r} does not occur in the crystal text")
    return "\n".join(lines)


def grammar(elements=None, max_atoms: int = 20, min_atoms: int = 1, formula: str | None = None):
    """The sampling grammar of this format (:mod:`ase_llmgen.text.grammar`); with ``formula``, that composition."""
    from ase_llmgen.text.grammar import CompositionGrammar, CrystalGrammar

    if formula:
        return CompositionGrammar(formula, max_atoms, min_atoms)
    return CrystalGrammar(elements, max_atoms, min_atoms)


def filters(settings) -> list:
    """Per-sample filters for the sampling settings: the distance guard when ``min_distance`` > 0."""
    from ase_llmgen.text.geometry import guard

    return [guard(settings.min_distance)] if settings.min_distance > 0 else []


def max_length(max_atoms: int) -> int:
    """The sampler's length limit: ~16 characters per line pair (one token per character at worst)."""
    return 24 + 20 * max_atoms


@hookimpl
def register_codecs() -> list[Codec]:
    return [
        Codec(
            "paper",
            encode,
            decode,
            "Gruver et al. 2024: lengths, angles, element/xyz lines",
            grammar=grammar,
            filters=filters,
            mask=mask_element,
            site_orders=augment.SITE_ORDERS,
            order_sites=augment.order_sites,
            tokens=COORDINATES,
            token_pattern=COORDINATE_PATTERN,
            max_length=max_length,
        )
    ]
