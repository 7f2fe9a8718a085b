"""The ``wyckoff`` crystal format: a crystal written in its symmetry, one line pair per Wyckoff orbit.

::

    136              space group number (International Tables, pyxtal's standard setting)
    4.6 3.0          only the crystal system's free lattice parameters (below)
    Ti               then, per Wyckoff orbit, the element ...
    a                ... and the Wyckoff letter with only its free coordinates
    O
    f 0.30           (rutile: O on 4f = (x, x, 0), x = 0.30)

Lattice line per crystal system (lengths in A with one decimal, angles in whole degrees, as in
the paper's format): cubic ``a``; tetragonal, trigonal and hexagonal ``a c`` (trigonal groups,
rhombohedral ones included, in the conventional hexagonal setting: gamma = 120); orthorhombic
``a b c``; monoclinic ``a b c beta`` (unique axis b); triclinic ``a b c alpha beta gamma``.
Free coordinates have two decimals in [0, 1), like the paper's.

Encoding runs spglib (at ``symprec`` 0.1 by default) in the setting pyxtal's tables use (origin
choice 2 where a group has two; spglib's default is choice 1): the standardized conventional cell,
each orbit's Wyckoff letter and a representative position, whose free parameters pyxtal reads.
Decoding expands each orbit with pyxtal's Wyckoff tables and returns the *primitive* cell (the
conventional orbit divided by the centering), so a text's atom count, ``max_atoms`` and ``len(atoms)``
all count sites of the primitive cell, as in the paper's format and MP-20.

The grammar (:class:`WyckoffGrammar`) writes only legal texts: only the requested space group's
number (any of 1-230 when none is requested), only its free lattice parameters, only letters of
that group, free coordinates exactly where the orbit has them, a letter without free parameters
at most once, a total multiplicity within ``min_atoms..max_atoms`` and, with a formula, exactly
that composition (a whole number of formula units).  What it cannot guarantee: free coordinates
that land on a special position (e.g. ``x = 0.00`` of ``x, 0, 0``) give a crystal of higher
symmetry, or two sites on one point (docs/design.md, "The wyckoff codec").
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Iterable
from functools import cache, lru_cache, partial
from typing import Any, NamedTuple

import numpy as np
import regex
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from ase.geometry import cellpar_to_cell

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Codec
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.grammar import _ANG, _CANON, _LEN, ALL_ELEMENTS, DEFAULT_ELEMENTS
from ase_llmgen.text.limits import angles_problem, coordinates_problem, lengths_problem
from ase_llmgen.text.paper import COORDINATE_PATTERN, COORDINATES, mask_element

ELEMENTS = frozenset(chemical_symbols[1:])
DEFAULT_SYMPREC = 0.1
# ``order_sites`` records the order in ``atoms.info`` under this key and ``encode`` reads it: orbits exist only
# after symmetry analysis, so the encoder, not the atoms' order, decides the order of the text.
ORDER_INFO_KEY = "wyckoff_site_order"

# The free lattice parameters per crystal system, in the order written ("L" length, "A" angle).
LATTICE_FIELDS = {
    "cubic": ("a",),
    "tetragonal": ("a", "c"),
    "trigonal": ("a", "c"),
    "hexagonal": ("a", "c"),
    "orthorhombic": ("a", "b", "c"),
    "monoclinic": ("a", "b", "c", "beta"),
    "triclinic": ("a", "b", "c", "alpha", "beta", "gamma"),
}
_ANGLES = {"alpha", "beta", "gamma"}

# Lattice centerings: the translations beside the identity, and the primitive basis (rows, in conventional
# fractional coordinates) -- the standard choices (ITA; spglib uses the same), not Wyckoff tables.
_CENTERING = {
    "P": ((), ((1, 0, 0), (0, 1, 0), (0, 0, 1))),
    "A": (((0, 0.5, 0.5),), ((1, 0, 0), (0, 0.5, 0.5), (0, -0.5, 0.5))),
    "B": (((0.5, 0, 0.5),), ((0.5, 0, 0.5), (0, 1, 0), (-0.5, 0, 0.5))),
    "C": (((0.5, 0.5, 0),), ((0.5, -0.5, 0), (0.5, 0.5, 0), (0, 0, 1))),
    "I": (((0.5, 0.5, 0.5),), ((-0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.5, 0.5, -0.5))),
    "F": (((0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)), ((0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0))),
    "R": (
        ((2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)),
        ((2 / 3, 1 / 3, 1 / 3), (-1 / 3, 1 / 3, 1 / 3), (-1 / 3, -2 / 3, 1 / 3)),
    ),
}


class Orbit(NamedTuple):
    """One Wyckoff position of a group: its letter, sites in the primitive cell, free coordinates, multiplicity."""

    letter: str
    sites: int  # multiplicity / centering: sites of the primitive cell
    dof: int  # free coordinates
    multiplicity: int  # sites of the conventional cell (International Tables: the 4 of 4f)

    @property
    def symbol(self) -> str:
        """The Wyckoff symbol, multiplicity and letter (``4f``): what the ``wyckoff_mult`` format writes."""
        return f"{self.multiplicity}{self.letter}"


class GroupInfo(NamedTuple):
    """What the format needs of a space group, read from pyxtal's tables."""

    number: int
    symbol: str
    system: str
    hall_number: int
    centering: str
    orbits: dict[str, Orbit]  # by letter


@cache
def _pyxtal_group(number: int):
    from pyxtal.symmetry import Group

    return Group(number)


@cache
def group_info(number: int) -> GroupInfo:
    """Space group ``number``'s crystal system, centering and Wyckoff positions (from pyxtal)."""
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space groups are numbered 1..230, got {number}")
    g = _pyxtal_group(int(number))
    centering = g.symbol[0]
    factor = 1 + len(_CENTERING[centering][0])  # lattice points per conventional cell
    orbits = {
        w.letter: Orbit(w.letter, w.multiplicity // factor, int(w.get_dof()), int(w.multiplicity))
        for w in g.Wyckoff_positions
    }
    system = g.lattice_type
    return GroupInfo(int(number), g.symbol, system, int(g.hall_number), centering, orbits)


def _centering_factor(number: int) -> int:
    """Lattice points per conventional cell of space group ``number`` (conventional / primitive sites)."""
    return 1 + len(_CENTERING[group_info(number).centering][0])


# ----------------------------------------------------------------------------------------------- encode


def _cell_of(obj: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        if not obj.is_ordered:
            raise ValueError("disordered structures (partial occupancies) cannot be written as text")
        return obj.lattice.matrix, obj.frac_coords, np.array([site.specie.Z for site in obj])
    if isinstance(obj, Atoms):
        return np.array(obj.cell), obj.get_scaled_positions(wrap=True), obj.numbers
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(obj).__name__}")


def symmetry_dataset(obj: Any, symprec: float = DEFAULT_SYMPREC):
    """spglib's symmetry dataset of ``obj`` in the setting of pyxtal's Wyckoff tables (or ``ValueError``)."""
    import spglib

    cell = _cell_of(obj)
    if len(cell[2]) == 0:
        raise ValueError("cannot encode a structure with no atoms")
    try:
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        if dataset is not None:
            hall = group_info(dataset.number).hall_number
            if hall != dataset.hall_number:
                dataset = spglib.get_symmetry_dataset(cell, symprec=symprec, hall_number=hall)
    except Exception as exc:  # spglib raises SpglibError, or returns None, by configuration
        raise ValueError(f"spglib found no symmetry: {exc}") from exc
    if dataset is None:
        raise ValueError("spglib found no symmetry (overlapping atoms?)")
    return dataset


def _representatives(wp, positions: np.ndarray, ops) -> tuple[tuple[float, ...], ...]:
    """Every (written) set of free coordinates of ``wp`` that gives ``positions``' orbit, sorted."""
    found = set()
    for pos in positions:
        for generator in wp.search_all_generators(pos, ops=ops, tol=1e-3):
            found.add(tuple(float(x) for x in np.round(np.mod(wp.get_free_xyzs(generator), 1.0), 2) % 1.0))
    if not found:
        raise ValueError(f"pyxtal found no generator of Wyckoff position {wp.letter} at {positions[0]}")
    return tuple(sorted(found))


def _number(value: float, angle: bool) -> str:
    return str(int(round(value))) if angle else f"{value:.1f}"


class _Analysis(NamedTuple):
    """A crystal as the format sees it: group, lattice line, and per orbit its letter, element and every
    representative's free coordinates (one orbit has as many texts as it has representatives)."""

    info: GroupInfo
    lattice: str
    orbits: tuple[tuple[str, str, tuple[tuple[float, ...], ...]], ...]  # (letter, element, representatives)
    site_order: str


def _analyse(obj: Any, symprec: float, site_order: str | None) -> _Analysis:
    from ase.geometry import cell_to_cellpar

    if site_order is None:
        site_order = getattr(obj, "info", {}).get(ORDER_INFO_KEY, SITE_ORDERS[0])
    if site_order not in SITE_ORDERS:
        raise ValueError(f"unknown site order {site_order!r}: one of {SITE_ORDERS}")

    ds = symmetry_dataset(obj, symprec)
    info = group_info(ds.number)
    g = _pyxtal_group(ds.number)
    ops = g[0].ops
    a, b, c, alpha, beta, gamma = cell_to_cellpar(ds.std_lattice)
    values = {"a": a, "b": b, "c": c, "alpha": alpha, "beta": beta, "gamma": gamma}
    params = [values[f] for f in LATTICE_FIELDS[info.system]]
    problem = lengths_problem([a, b, c]) or angles_problem([alpha, beta, gamma])
    if problem:
        raise ValueError(f"cannot write this structure as text: {problem}")
    std_positions = np.mod(ds.std_positions, 1.0)
    orbits = []
    for rep in sorted(set(int(i) for i in ds.equivalent_atoms)):
        members = {int(ds.mapping_to_primitive[i]) for i in np.flatnonzero(ds.equivalent_atoms == rep)}
        in_std = np.array([j for j, p in enumerate(ds.std_mapping_to_primitive) if int(p) in members])
        letter = ds.wyckoffs[rep]
        wp = g.get_wp_by_letter(letter)
        representatives = _representatives(wp, std_positions[in_std], ops)
        orbits.append((letter, chemical_symbols[int(ds.std_types[in_std[0]])], representatives))
    lattice = " ".join(_number(v, f in _ANGLES) for v, f in zip(params, LATTICE_FIELDS[info.system]))
    return _Analysis(info, lattice, tuple(orbits), site_order)


def _write(
    crystal: _Analysis,
    free_of: Callable[[tuple[tuple[float, ...], ...]], tuple[float, ...]],
    multiplicity: bool,
    formula_line: bool,
) -> str:
    """The text of ``crystal`` with each orbit written from ``free_of(its representatives)``."""
    info = crystal.info
    orbits = [(letter, symbol, free_of(reps)) for letter, symbol, reps in crystal.orbits]
    lines = [str(info.number), crystal.lattice]
    if formula_line:
        lines.append(cell_formula(cell_counts(info, ((symbol, letter) for letter, symbol, _ in orbits))))
    for letter, symbol, free in sorted(orbits, key=_ORBIT_KEYS[crystal.site_order]):
        lines.append(symbol)
        label = info.orbits[letter].symbol if multiplicity else letter
        lines.append(" ".join([label] + [f"{x:.2f}" for x in free]))
    return "\n".join(lines)


def encode(
    obj: Any,
    symprec: float = DEFAULT_SYMPREC,
    multiplicity: bool = False,
    site_order: str | None = None,
    formula_line: bool = False,
) -> str:
    """Write ``ase.Atoms`` or a pymatgen ``Structure`` in the wyckoff format (symmetry found at ``symprec``;
    ``multiplicity``: each site line starts with the Wyckoff symbol, ``4f``, the ``wyckoff_mult`` format;
    ``site_order``: one of :data:`SITE_ORDERS`, by default the one :func:`order_sites` recorded, else "letter";
    ``formula_line``: the conventional cell's formula after the lattice, the ``wyckoff_formula`` format).

    Each orbit is written from its representative with the smallest free coordinates, so a crystal has one text."""
    return _write(_analyse(obj, symprec, site_order), min, multiplicity, formula_line)


def random_texts(
    obj: Any,
    symprec: float = DEFAULT_SYMPREC,
    multiplicity: bool = False,
    site_order: str | None = None,
    formula_line: bool = False,
) -> Callable[[np.random.Generator], str]:
    """Analyse ``obj`` once (as :func:`encode`) and return a function that writes one of its equivalent texts per
    call: each orbit from a representative drawn by the given generator among all of its orbit's, not the smallest.

    A training augmentation, the wyckoff format's counterpart of the paper format's random translation: the
    texts differ only in which equivalent free coordinates they show, and all decode to the same crystal."""
    crystal = _analyse(obj, symprec, site_order)

    def write(rng: np.random.Generator) -> str:
        return _write(crystal, lambda reps: reps[int(rng.integers(len(reps)))], multiplicity, formula_line)

    return write


def element_rank(symbol: str) -> tuple[float, str]:
    """Where ``symbol`` stands in pymatgen's formula order: by electronegativity, ties and the elements without
    one (last) alphabetically."""
    if symbol not in ELEMENTS:
        raise ValueError(f"{symbol!r} is not a chemical element")
    return electronegativity(symbol), symbol


def cell_counts(info: GroupInfo, orbits: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Sites per element of the conventional cell that ``(element, letter)`` orbits of group ``info`` fill."""
    counts: dict[str, int] = {}
    for symbol, letter in orbits:
        counts[symbol] = counts.get(symbol, 0) + info.orbits[letter].multiplicity
    return counts


def cell_formula(counts: dict[str, int]) -> str:
    """The ``wyckoff_formula`` format's formula line: every element and its count, in :func:`element_rank`
    order, counts always written (``Ti2O4``)."""
    return "".join(f"{e}{counts[e]}" for e in sorted(counts, key=element_rank))


def _letter_order(letter: str) -> tuple[bool, str]:
    """Wyckoff letters in table order: a..z, then A (the 27th position of Pmmm)."""
    return letter.isupper(), letter


def _orbit_order(orbit: tuple[str, str, tuple[float, ...]]) -> tuple:
    letter, symbol, free = orbit
    # by letter, then by element, then by coordinates
    return (*_letter_order(letter), atomic_numbers[symbol], free)


@cache
def electronegativity(symbol: str) -> float:
    """Pauling electronegativity (pymatgen's), ``inf`` for the elements without one (noble gases)."""
    import warnings

    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns and returns NaN where there is none
        x = float(Element(symbol).X)
    return x if np.isfinite(x) else float("inf")


def _orbit_order_electronegativity(orbit: tuple[str, str, tuple[float, ...]]) -> tuple:
    letter, symbol, free = orbit
    # by element (formula order), then by letter, then by coordinates
    return (*element_rank(symbol), *_letter_order(letter), free)


# "letter": orbits by Wyckoff letter, then element; "electronegativity": by element, least electronegative first
# (pymatgen's formula order: cations before anions), then letter -- a model then writes the anions, whose count
# balances the charge, after the cations it has to balance.
_ORBIT_KEYS = {"letter": _orbit_order, "electronegativity": _orbit_order_electronegativity}
SITE_ORDERS = tuple(_ORBIT_KEYS)


def order_sites(atoms: Atoms, order: str) -> Atoms:
    """``atoms`` to be written in ``order``: unchanged for "letter" (the encoder's own order), else a copy
    that records ``order`` in its ``info`` for :func:`encode` (which sorts the orbits it finds)."""
    if order not in SITE_ORDERS:
        raise ValueError(f"unknown site order {order!r}: one of {SITE_ORDERS}")
    if order == SITE_ORDERS[0] and ORDER_INFO_KEY not in atoms.info:
        return atoms
    out = atoms.copy()
    if order == SITE_ORDERS[0]:
        del out.info[ORDER_INFO_KEY]  # an order recorded before (another call, a file read back) no longer holds
    else:
        out.info[ORDER_INFO_KEY] = order
    return out


# ----------------------------------------------------------------------------------------------- decode


class Parsed(NamedTuple):
    """A parsed wyckoff text: the group, the six cell parameters, and ``(element, letter, free)`` per orbit."""

    group: GroupInfo
    cellpar: tuple[float, ...]
    orbits: tuple[tuple[str, str, tuple[float, ...]], ...]


def _floats(fields: list[str], lineno: int, what: str) -> list[float]:
    out = []
    for f in fields:
        if not regex.fullmatch(r"[0-9]+(?:\.[0-9]+)?", f):
            raise CrystalTextError(f"{f!r} is not a number", lineno, what)
        out.append(float(f))
    return out


def parse(text: str, multiplicity: bool = False, formula_line: bool = False) -> Parsed:
    """Parse a wyckoff text (``multiplicity``: a ``wyckoff_mult`` one, ``4f`` for ``f``; ``formula_line``: a
    ``wyckoff_formula`` one) or raise :class:`CrystalTextError` naming the line and what was expected."""
    if not isinstance(text, str):
        raise CrystalTextError(f"expected text, got {type(text).__name__}")
    lines = text.strip("\n").split("\n")
    head_lines = 3 if formula_line else 2  # lines before the first element line
    if len(lines) < head_lines + 2:
        what = "space group, lattice, formula" if formula_line else "space group, lattice"
        raise CrystalTextError(f"only {len(lines)} line(s)", None, what + ", then element/site lines")
    head = lines[0].strip()
    if not regex.fullmatch(r"[0-9]{1,3}", head) or not 1 <= int(head) <= 230:
        raise CrystalTextError(f"{head!r} is not a space group number", 1, "a number 1..230")
    info = group_info(int(head))
    fields = LATTICE_FIELDS[info.system]
    lattice = lines[1].split()
    if len(lattice) != len(fields):
        raise CrystalTextError(f"got {len(lattice)} numbers {lines[1]!r}", 2, f"{info.system}: {' '.join(fields)}")
    values = dict(zip(fields, _floats(lattice, 2, f"{info.system}: {' '.join(fields)}")))
    cellpar = _cellpar(info.system, values)
    problem = lengths_problem(cellpar[:3]) or angles_problem(cellpar[3:])
    if problem:
        raise CrystalTextError(problem, 2)
    written = _parse_formula_line(lines[2]) if formula_line else None
    body = lines[head_lines:]
    if len(body) % 2:
        raise CrystalTextError("the last element has no site line", len(lines) + 1, "a Wyckoff letter")
    orbits, fixed = [], set()
    for i in range(0, len(body), 2):
        line = i + head_lines + 1  # the element line's number; its site line is the next
        symbol = body[i].strip()
        if symbol not in ELEMENTS:
            raise CrystalTextError(f"{symbol!r} is not a chemical element", line, "an element symbol")
        if not body[i + 1].split():
            raise CrystalTextError("empty site line", line + 1, "a Wyckoff letter and its free coordinates")
        label, *free_text = body[i + 1].split()
        letter = label
        if multiplicity:
            symbol_match = regex.fullmatch(r"([1-9][0-9]{0,2})([a-zA-Z])", label)
            if symbol_match is None:
                raise CrystalTextError(f"{label!r} is not a Wyckoff symbol", line + 1, "multiplicity and letter, as 4f")
            letter = symbol_match[2]
        orbit = info.orbits.get(letter)
        if orbit is None:
            ordered = sorted(info.orbits.values(), key=lambda o: _letter_order(o.letter))
            known = " ".join(o.symbol for o in ordered) if multiplicity else "".join(info.orbits)
            raise CrystalTextError(f"{label!r} is not a Wyckoff position of space group {info.number}", line + 1, known)
        if multiplicity and int(symbol_match[1]) != orbit.multiplicity:
            raise CrystalTextError(
                f"{info.number}{letter} has multiplicity {orbit.multiplicity}, got {label!r}", line + 1, orbit.symbol
            )
        if len(free_text) != orbit.dof:
            raise CrystalTextError(
                f"{info.number}{letter} has {orbit.dof} free coordinate(s), got {len(free_text)}", line + 1
            )
        if orbit.dof == 0:
            if letter in fixed:
                raise CrystalTextError(f"{letter} has no free coordinates and is used twice", line + 1)
            fixed.add(letter)
        free = _floats(free_text, line + 1, "fractional coordinates")
        problem = coordinates_problem(free)
        if problem:
            raise CrystalTextError(problem, line + 1)
        orbits.append((symbol, letter, tuple(free)))
    if written is not None:
        counts = cell_counts(info, ((symbol, letter) for symbol, letter, _ in orbits))
        if counts != written:
            raise CrystalTextError(f"the sites make {cell_formula(counts)}, not {lines[2].strip()!r}", 3)
    return Parsed(info, tuple(cellpar), tuple(orbits))


_FORMULA_ITEM = regex.compile(r"[A-Z][a-z]?|[0-9]+|.", regex.DOTALL)
_COUNT = r"[1-9][0-9]{0,5}"  # a count of the formula line (six digits at most: int() of any is cheap)


def _parse_formula_line(line: str) -> dict[str, int]:
    """A ``wyckoff_formula`` formula line's counts, or :class:`CrystalTextError` naming line 3."""
    expected = "each element and its count, in pymatgen's formula order, as Ti2O4"
    items = _FORMULA_ITEM.findall(line.strip())
    if (
        not items
        or len(items) % 2
        or not all(items[i] in ELEMENTS and regex.fullmatch(_COUNT, items[i + 1]) for i in range(0, len(items), 2))
    ):
        raise CrystalTextError(f"{line!r} is not a formula", 3, expected)
    counts = {items[i]: int(items[i + 1]) for i in range(0, len(items), 2)}
    if len(counts) != len(items) // 2:
        twice = sorted({e for e in items[0::2] if items[0::2].count(e) > 1})
        raise CrystalTextError(f"{line!r} names {', '.join(twice)} more than once", 3, expected)
    if cell_formula(counts) != line.strip():
        raise CrystalTextError(f"{line!r} is not in formula order", 3, cell_formula(counts))
    return counts


def _cellpar(system: str, v: dict[str, float]) -> list[float]:
    a = v["a"]
    if system == "cubic":
        return [a, a, a, 90.0, 90.0, 90.0]
    if system == "tetragonal":
        return [a, a, v["c"], 90.0, 90.0, 90.0]
    if system in ("trigonal", "hexagonal"):
        return [a, a, v["c"], 90.0, 90.0, 120.0]
    if system == "orthorhombic":
        return [a, v["b"], v["c"], 90.0, 90.0, 90.0]
    if system == "monoclinic":
        return [a, v["b"], v["c"], 90.0, v["beta"], 90.0]
    return [a, v["b"], v["c"], v["alpha"], v["beta"], v["gamma"]]


def decode(text: str, multiplicity: bool = False, formula_line: bool = False) -> Atoms:
    """Parse a wyckoff text (``multiplicity``: a ``wyckoff_mult`` one; ``formula_line``: a ``wyckoff_formula``
    one) into periodic ``ase.Atoms``: the primitive cell, each orbit expanded by pyxtal."""
    parsed = parse(text, multiplicity, formula_line)
    info = parsed.group
    g = _pyxtal_group(info.number)
    _, basis = _CENTERING[info.centering]
    basis = np.array(basis, dtype=float)
    to_primitive = np.linalg.inv(basis)
    symbols, frac = [], []
    for symbol, letter, free in parsed.orbits:
        wp = g.get_wp_by_letter(letter)
        generator = wp.get_position_from_free_xyzs(np.array(free, dtype=float))
        positions = np.array(wp.apply_ops(generator))[: info.orbits[letter].sites]  # one per centering coset
        symbols += [symbol] * len(positions)
        frac.append(positions)
    conventional = cellpar_to_cell(parsed.cellpar)
    scaled = np.mod(np.concatenate(frac) @ to_primitive, 1.0)
    scaled[np.isclose(scaled, 1.0, atol=1e-9)] = 0.0
    return Atoms(symbols=symbols, cell=basis @ conventional, scaled_positions=scaled, pbc=True)


def spacegroup_number(atoms: Atoms, symprec: float = DEFAULT_SYMPREC) -> int | None:
    """spglib's space group number of ``atoms`` at ``symprec`` (``None`` when it finds none)."""
    import spglib

    try:
        dataset = spglib.get_symmetry_dataset(
            (np.array(atoms.cell), atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
        )
    except Exception:
        return None
    return None if dataset is None else int(dataset.number)


def has_symmetry_of(atoms: Atoms, number: int, symprec: float = DEFAULT_SYMPREC) -> bool:
    """Whether spglib (at ``symprec``) finds every operation of space group ``number`` in ``atoms``, a crystal
    as :func:`decode` returns it (the primitive cell of that group's conventional setting): its group is
    ``number`` or a supergroup of it."""
    import spglib

    try:
        dataset = spglib.get_symmetry_dataset(
            (np.array(atoms.cell), atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
        )
    except Exception:
        return False
    if dataset is None:
        return False
    ops = spglib.get_symmetry_from_database(group_info(number).hall_number)
    basis = np.array(_CENTERING[group_info(number).centering][1], dtype=float).T  # columns: primitive vectors
    inverse = np.linalg.inv(basis)
    found = list(zip(dataset.rotations, dataset.translations))
    for rotation, translation in zip(ops["rotations"], ops["translations"]):
        r = np.rint(inverse @ rotation @ basis).astype(int)
        t = inverse @ translation
        if not any(np.array_equal(r, fr) and np.abs((t - ft + 0.5) % 1.0 - 0.5).max() < 1e-2 for fr, ft in found):
            return False
    return True


# ----------------------------------------------------------------------------------------------- infill etc.


def max_length(max_atoms: int) -> int:
    """The sampler's length limit: a header of at most 40 characters, at most 21 per orbit (one site at least)."""
    return 40 + 21 * max_atoms


def max_length_mult(max_atoms: int) -> int:
    """:func:`max_length` for ``wyckoff_mult``: a multiplicity adds at most 3 characters per orbit."""
    return 40 + 24 * max_atoms


# ----------------------------------------------------------------------------------------------- grammar


class WState(NamedTuple):
    """Where a wyckoff text is: line type, that line so far, group, sites so far, fixed letters used, counts."""

    phase: str  # "group", "lattice", "element", "site"
    partial: str
    group: int = 0
    atoms: int = 0
    used: frozenset = frozenset()  # letters without free coordinates already written
    counts: tuple[int, ...] = ()  # sites per formula element (with a formula or a formula line only)
    element: str = ""  # the element of the orbit being written
    target: tuple[tuple[str, int], ...] = ()  # the formula line written: (element, primitive sites) in its order


_COORDINATE_SET = frozenset(COORDINATES)
_FREE = r" 0\.[0-9][0-9]"


class WyckoffGrammar:
    """Accepts exactly the wyckoff texts of ``min_atoms..max_atoms`` sites of ``elements`` in ``spacegroup``
    (any of 1..230 when ``None``) and, with ``formula``, that composition in whole formula units.

    The contract is :mod:`ase_llmgen.text.grammar`'s.  Every choice is checked for a way to finish:
    a letter is allowed only while the sites written can still be completed to an allowed count
    (and composition) with the letters left, so the grammar has no dead ends.
    """

    cell_phases = ("group", "lattice")  # the space group decides the cell as much as its lengths do

    def __init__(
        self,
        elements=None,
        max_atoms: int = 20,
        min_atoms: int = 1,
        formula: str | None = None,
        spacegroup: int | None = None,
        multiplicity: bool = False,
        formula_line: bool = False,
    ):
        if not 1 <= min_atoms <= max_atoms:
            raise ValueError("need 1 <= min_atoms <= max_atoms")
        self.max_atoms, self.min_atoms = int(max_atoms), int(min_atoms)
        self.multiplicity = bool(multiplicity)  # site lines begin with the Wyckoff symbol (4f), not the letter
        self.formula_line = bool(formula_line)  # the cell's formula after the lattice (wyckoff_formula)
        self.formula = formula
        if formula:
            from pymatgen.core import Composition

            try:
                amounts = Composition(formula).reduced_composition.get_el_amt_dict()
            except Exception as exc:
                raise ValueError(f"formula {formula!r} is not a chemical formula") from exc
            if not amounts or any(abs(a - round(a)) > 1e-6 or round(a) < 1 for a in amounts.values()):
                raise ValueError(f"formula {formula!r} needs whole numbers of atoms")
            self.elements = tuple(sorted(amounts))
            self.units = tuple(int(round(amounts[e])) for e in self.elements)
            per_unit = sum(self.units)
            self.z_values = tuple(z for z in range(1, max_atoms // per_unit + 1) if z * per_unit >= min_atoms)
            if not self.z_values:
                raise ValueError(
                    f"formula {formula} has {per_unit} atoms per formula unit: none fits in {min_atoms}..{max_atoms}"
                )
        else:
            self.elements = tuple(sorted(set(elements or DEFAULT_ELEMENTS)))
            self.units, self.z_values = (), ()
        unknown = set(self.elements) - set(ALL_ELEMENTS)
        if unknown:
            raise ValueError(f"not chemical elements: {sorted(unknown)}")
        # the formula line's order (electronegativities read from pymatgen only for a grammar that has the line)
        self._ranked = tuple(sorted(self.elements, key=element_rank)) if self.formula_line else ()
        self._rank_index = {e: i for i, e in enumerate(self._ranked)}
        if spacegroup is not None and not 1 <= int(spacegroup) <= 230:
            raise ValueError(f"spacegroup must be 1..230, got {spacegroup}")
        self.spacegroup = None if spacegroup is None else int(spacegroup)
        candidates = [self.spacegroup] if self.spacegroup else range(1, 231)
        start_counts = (0,) * len(self.units)
        self.groups = tuple(n for n in candidates if self._completable(n, 0, frozenset(), start_counts))
        if not self.groups:
            what = f"formula {formula}" if formula else "any crystal"
            raise ValueError(
                f"space group {spacegroup} has no Wyckoff positions for {what} in {min_atoms}..{max_atoms} sites"
            )
        self._group_texts = frozenset(str(n) for n in self.groups)
        self.start = WState("group", "", counts=start_counts)
        self._lattice = {
            system: regex.compile(" ".join(_ANG if f in _ANGLES else _LEN for f in fields))
            for system, fields in LATTICE_FIELDS.items()
        }

    # -- feasibility: can the sites written so far still become a whole text?

    @staticmethod
    def _free(group: int) -> tuple[int, ...]:
        """The site counts of the letters with free coordinates (usable any number of times)."""
        return tuple(sorted({o.sites for o in group_info(group).orbits.values() if o.dof > 0}))

    def _unused(self, group: int, used: frozenset) -> tuple[tuple[int, int], ...]:
        orbits = group_info(group).orbits.values()
        counts: dict[int, int] = {}
        for o in orbits:
            if o.dof == 0 and o.letter not in used:
                counts[o.sites] = counts.get(o.sites, 0) + 1
        return tuple(sorted(counts.items()))

    @staticmethod
    @lru_cache(maxsize=100_000)
    def _sums(free: tuple[int, ...], unused: tuple[tuple[int, int], ...], limit: int) -> frozenset[int]:
        """Every number of sites 0..limit that free letters (any number of times) and unused fixed letters
        (each at most once) can add."""
        reach = np.zeros(limit + 1, dtype=bool)
        reach[0] = True
        for m in free:
            for s in range(m, limit + 1):
                reach[s] |= reach[s - m]
        for m, k in unused:
            for _ in range(k if m <= limit else 0):
                reach[m:] = reach[m:] | reach[: limit + 1 - m]
        return frozenset(int(s) for s in np.flatnonzero(reach))

    @staticmethod
    @lru_cache(maxsize=100_000)
    def _fill(free: tuple[int, ...], unused: tuple[tuple[int, int], ...], needs: tuple[int, ...]) -> bool:
        """Whether each element's ``needs`` (sites) can be met, fixed letters shared between elements."""
        if not needs:
            return True
        first, rest = needs[0], needs[1:]
        free_sums = WyckoffGrammar._sums(free, (), first)
        # how many fixed letters of each multiplicity the first element takes
        for option in itertools.product(*(range(k + 1) for _, k in unused)):
            taken = sum(m * j for (m, _), j in zip(unused, option))
            if taken <= first and first - taken in free_sums:
                left = tuple((m, k - j) for (m, k), j in zip(unused, option) if k > j)
                if WyckoffGrammar._fill(free, left, rest):
                    return True
        return False

    def _completable(
        self, group: int, atoms: int, used: frozenset, counts: tuple[int, ...], target: tuple = ()
    ) -> bool:
        free = self._free(group)
        unused = self._unused(group, used)
        if target:  # the formula line fixed each element's sites
            return self._meets(free, unused, tuple(n - c for (_, n), c in zip(target, counts)))
        if not self.units:
            if atoms > self.max_atoms:
                return False
            sums = self._sums(free, unused, self.max_atoms - atoms)
            return any(atoms + s >= self.min_atoms for s in sums)  # min_atoms >= 1: at least one orbit
        return any(
            self._meets(free, unused, tuple(z * u - c for u, c in zip(self.units, counts))) for z in self.z_values
        )

    def _meets(self, free: tuple[int, ...], unused: tuple[tuple[int, int], ...], needs: tuple[int, ...]) -> bool:
        """Whether each element's remaining ``needs`` (sites; none below 0) can still be filled."""
        return min(needs) >= 0 and self._fill(free, unused, tuple(n for n in needs if n > 0))

    def _add(self, state: WState, element: str, letter: str) -> WState | None:
        """The state after an orbit of ``element`` on ``letter`` (``None``: not allowed)."""
        orbit = group_info(state.group).orbits.get(letter)
        if orbit is None or (orbit.dof == 0 and letter in state.used):
            return None
        used = state.used | {letter} if orbit.dof == 0 else state.used
        counts = state.counts
        if self.units or state.target:
            i = [e for e, _ in state.target].index(element) if state.target else self.elements.index(element)
            counts = counts[:i] + (counts[i] + orbit.sites,) + counts[i + 1 :]
        atoms = state.atoms + orbit.sites
        if not self._completable(state.group, atoms, used, counts, state.target):
            return None
        return WState("element", "", state.group, atoms, used, counts, "", state.target)

    @lru_cache(maxsize=100_000)  # noqa: B019 -- the grammar lives as long as its sampler
    def _letters(self, state: WState) -> str:
        """The letters an orbit of ``state.element`` may take next."""
        return "".join(
            sorted(
                letter
                for letter in group_info(state.group).orbits
                if self._add(state._replace(phase="element", partial=""), state.element, letter) is not None
            )
        )

    @lru_cache(maxsize=100_000)  # noqa: B019
    def _element_choices(self, state: WState) -> tuple[str, ...]:
        """The elements the next orbit may have."""
        if state.target:
            elements = (e for (e, n), c in zip(state.target, state.counts) if c < n)
            return tuple(e for e in elements if self._letters(state._replace(phase="site", partial="", element=e)))
        if not self.units:  # without a formula the letters an orbit may take do not depend on its element
            return self.elements if self._letters(state._replace(phase="site", partial="", element="")) else ()
        return tuple(e for e in self.elements if self._letters(state._replace(phase="site", partial="", element=e)))

    def _whole(self, state: WState) -> bool:
        if not self.min_atoms <= state.atoms <= self.max_atoms:
            return False
        if state.target:
            return all(c == n for (_, n), c in zip(state.target, state.counts))
        if self.units:
            z = state.counts[0] // self.units[0]
            return z in self.z_values and all(c == z * u for c, u in zip(state.counts, self.units))
        return True

    # -- the formula line (wyckoff_formula): each element and its conventional-cell count, in formula order

    def _counts_fill(self, group: int, sites: tuple[int, ...]) -> bool:
        """Whether orbits of ``group`` can hold elements of these primitive site counts at once."""
        return self._fill(self._free(group), self._unused(group, frozenset()), tuple(sorted(sites, reverse=True)))

    @lru_cache(maxsize=100_000)  # noqa: B019
    def _can_finish(self, group: int, sites: tuple[int, ...], more: int) -> bool:
        """Whether a formula line with these primitive counts so far (sorted) can end, now or after at most
        ``more`` further elements (which elements they are does not matter to the orbits, only their counts)."""
        total = sum(sites)
        if sites and total >= self.min_atoms:
            return True
        return more > 0 and any(
            self._counts_fill(group, grown) and self._can_finish(group, grown, more - 1)
            for grown in (tuple(sorted(sites + (n,))) for n in range(1, self.max_atoms - total + 1))
        )

    @lru_cache(maxsize=100_000)  # noqa: B019
    def _next_counts(self, group: int, sites: tuple[int, ...], index: int) -> tuple[int, ...]:
        """The conventional counts the formula line's next element, ``self._ranked[index]``, may take."""
        factor = _centering_factor(group)
        total = sum(sites)
        if self.units:  # a formula asked for: its elements in order, in a whole number of units
            if index != len(sites):
                return ()
            unit = self.units[self.elements.index(self._ranked[index])]
            zs = self.z_values if not sites else (sites[0] // self.units[self.elements.index(self._ranked[0])],)
            return tuple(factor * z * unit for z in zs if self._counts_fill(group, tuple(z * u for u in self.units)))
        # each element adds a site at least, so more than min_atoms further elements are never needed
        more = min(len(self._ranked) - index - 1, self.min_atoms)
        return tuple(
            factor * n
            for n in range(1, self.max_atoms - total + 1)
            if self._counts_fill(group, sites + (n,)) and self._can_finish(group, tuple(sorted(sites + (n,))), more)
        )

    def _formula_items(self, group: int, partial: str):
        """Walk a formula line: ``(sites, last, open_item)`` with the primitive counts of its finished pairs,
        the rank of the last element, and the unfinished item (an element or a count, possibly ""), or
        ``None`` where the line already breaks the grammar."""
        items = _FORMULA_ITEM.findall(partial)
        sites: tuple[int, ...] = ()
        last, element = -1, None
        factor = _centering_factor(group)
        for k, item in enumerate(items):
            closed = k < len(items) - 1
            if k % 2 == 0:  # an element
                if not closed:
                    return (sites, last, item) if regex.fullmatch(r"[A-Z][a-z]?", item) else None
                index = self._rank_index.get(item)
                if index is None or index <= last or (self.units and index != len(sites)):
                    return None
                element = index
            else:  # its count
                if not regex.fullmatch(_COUNT, item):
                    return None
                allowed = self._next_counts(group, sites, element)
                if not closed:
                    return (sites, last, item) if any(str(c).startswith(item) for c in allowed) else None
                if int(item) not in allowed:
                    return None
                sites, last = sites + (int(item) // factor,), element
        return sites, last, ""

    @lru_cache(maxsize=100_000)  # noqa: B019
    def _formula_prefix(self, group: int, partial: str) -> bool:
        walked = self._formula_items(group, partial)
        if walked is None:
            return False
        sites, last, item = walked
        if not item:
            return True
        if item[0].isdigit():  # a count already checked against the allowed ones
            return True
        # an element begun: one that may come next in formula order and take some count
        return any(
            e.startswith(item) and self._next_counts(group, sites, i) for i, e in enumerate(self._ranked) if i > last
        )

    def _formula_target(self, group: int, partial: str) -> tuple[tuple[str, int], ...] | None:
        """The finished formula line's ``(element, primitive sites)`` pairs, or ``None`` if it may not end."""
        items = _FORMULA_ITEM.findall(partial)
        if not items or len(items) % 2 or not self._formula_prefix(group, partial):
            return None
        factor = _centering_factor(group)
        elements, counts = items[0::2], [int(n) for n in items[1::2]]
        sites = tuple(n // factor for n in counts)
        if counts[-1] not in self._next_counts(group, sites[:-1], self._rank_index[elements[-1]]):
            return None  # the prefix check took the last count as begun, not finished
        if not self.min_atoms <= sum(sites) <= self.max_atoms or (self.units and len(counts) != len(self.units)):
            return None
        return tuple(zip(elements, sites))

    # -- the contract

    def signature(self) -> tuple:
        """What the grammar's masks depend on besides the state (for sharing masks between samplers)."""
        return (
            type(self).__name__,
            self.elements,
            self.max_atoms,
            self.min_atoms,
            self.units,
            self.z_values,
            self.groups,
            self.multiplicity,
            self.formula_line,
        )

    def _label(self, group: int, letter: str) -> str:
        """How a site line names its Wyckoff position: the letter, or the symbol (``4f``)."""
        return group_info(group).orbits[letter].symbol if self.multiplicity else letter

    def _labels(self, state: WState) -> tuple[str, ...]:
        """The labels the site line being written may begin with."""
        return tuple(self._label(state.group, letter) for letter in self._letters(state._replace(partial="")))

    def _site_letter(self, state: WState) -> str | None:
        """The letter of the site line being written; ``None`` while its label is unfinished (labels end in it)."""
        head = state.partial.split(" ", 1)[0]
        if not head or (self.multiplicity and not head[-1].isalpha()):
            return None
        return head[-1]

    def _site_pattern(self, state: WState, letter: str) -> str:
        return regex.escape(self._label(state.group, letter)) + _FREE * group_info(state.group).orbits[letter].dof

    def key(self, state: WState) -> tuple:
        """What the set of allowed tokens depends on (for caching masks)."""
        if state.phase == "group":
            return state.phase, state.partial
        if state.phase == "lattice":
            field, _, current = state.partial.rpartition(" ")
            index = field.count(" ") + 1 if field else 0
            system = group_info(state.group).system
            if system == "triclinic" and index == 5:  # whether gamma closes a cell depends on alpha and beta
                return state.phase, system, index, state.partial
            return state.phase, system, index, current.translate(_CANON)
        if state.phase == "formula":  # what may follow depends on the counts so far and, through them, the group
            return state.phase, state.group, state.partial
        if state.phase == "element":
            return state.phase, state.partial, self._element_choices(state._replace(partial=""))
        letter = self._site_letter(state)
        if letter is None:  # the label: a Wyckoff symbol's digits depend on the group, a letter does not
            group = state.group if self.multiplicity else 0
            return state.phase, state.partial, group, self._letters(state._replace(partial=""))
        _, *fields = state.partial.split(" ")
        dof = group_info(state.group).orbits[letter].dof
        after = self._add(state, state.element, letter)
        ending = (after is not None and self._whole(after), after is not None and self._element_choices(after))
        return state.phase, dof, len(fields), fields[-1] if fields else None, ending

    def whole_tokens(self, state: WState) -> frozenset[str] | None:
        """The coordinates, where one starts (a tokenizer with one token per coordinate keeps them whole)."""
        if state.phase == "site" and state.partial.endswith(" "):
            return _COORDINATE_SET
        return None

    def advance(self, state: WState | None, text: str) -> WState | None:
        """The state after ``text``, or ``None`` if ``text`` breaks the grammar."""
        for ch in text:
            if state is None:
                return None
            state = self._step(state, ch)
        return state

    def _step(self, state: WState, ch: str) -> WState | None:
        phase, partial = state.phase, state.partial
        if phase == "group":
            if ch == "\n":
                return (
                    state._replace(phase="lattice", partial="", group=int(partial))
                    if partial in self._group_texts
                    else None
                )
            partial += ch
            return state._replace(partial=partial) if any(t.startswith(partial) for t in self._group_texts) else None
        if phase == "lattice":
            system = group_info(state.group).system
            pattern = self._lattice[system]
            if ch == "\n":
                if not pattern.fullmatch(partial.translate(_CANON)) or not _angles_can_close(system, partial, True):
                    return None
                return state._replace(phase="formula" if self.formula_line else "element", partial="")
            partial += ch
            if not pattern.fullmatch(partial.translate(_CANON), partial=True) or not _angles_can_close(system, partial):
                return None
            return state._replace(partial=partial)
        if phase == "formula":
            if ch == "\n":
                target = self._formula_target(state.group, partial)
                if target is None:
                    return None
                return state._replace(phase="element", partial="", counts=(0,) * len(target), target=target)
            partial += ch
            return state._replace(partial=partial) if self._formula_prefix(state.group, partial) else None
        if phase == "element":
            choices = self._element_choices(state._replace(partial=""))
            if ch == "\n":
                return state._replace(phase="site", partial="", element=partial) if partial in choices else None
            partial += ch
            return state._replace(partial=partial) if any(e.startswith(partial) for e in choices) else None
        # site line: a letter (wyckoff_mult: the Wyckoff symbol, 4f), then its free coordinates
        letter = self._site_letter(state)
        if letter is None:
            partial += ch
            return state._replace(partial=partial) if any(x.startswith(partial) for x in self._labels(state)) else None
        pattern = self._site_pattern(state, letter)
        if ch == "\n":
            if not regex.fullmatch(pattern, partial):
                return None
            after = self._add(state, state.element, letter)
            return after if after is not None and self._element_choices(after) else None
        partial += ch
        return state._replace(partial=partial) if regex.fullmatch(pattern, partial, partial=True) else None

    def can_end(self, state: WState | None) -> bool:
        """Whether the text may stop (EOS) here."""
        letter = None if state is None or state.phase != "site" else self._site_letter(state)
        if letter is None:
            return False
        if not regex.fullmatch(self._site_pattern(state, letter), state.partial):
            return False
        after = self._add(state, state.element, letter)
        return after is not None and self._whole(after)


# ----------------------------------------------------------------------------------------------- random texts

# What a random text draws from: digits, separators, letters (element symbols are whole, below), coordinates.
_PIECES = tuple(string.digits) + (" ", "\n", ".") + tuple(string.ascii_letters) + COORDINATES


def plausible_lattice(system: str, rng: np.random.Generator) -> str:
    """A lattice line of ``system`` with lengths 3-12 A and angles 60-120 degrees (monoclinic beta 90-120)."""
    values = []
    for name in LATTICE_FIELDS[system]:
        if name in ("alpha", "beta", "gamma"):
            low = 90 if system == "monoclinic" else 60
            values.append(str(int(rng.integers(low, 121))))
        else:
            values.append(f"{rng.uniform(3, 12):.1f}")
    return " ".join(values)


def random_text(
    grammar: WyckoffGrammar, rng: np.random.Generator, elements: tuple[str, ...], plausible: bool = False
) -> str:
    """One text drawn through ``grammar``: at each step a uniformly random allowed piece (or the end).

    ``plausible``: the lattice line is drawn whole by :func:`plausible_lattice` (if the grammar takes it)
    instead of character by character, which mostly gives absurd cells (0.2 x 900 A).
    """
    pieces = _PIECES + tuple(elements)
    state, out = grammar.start, []
    for _ in range(2000):
        if plausible and state.phase == "lattice" and not state.partial:
            line = plausible_lattice(group_info(state.group).system, rng) + "\n"
            if grammar.advance(state, line) is not None:
                out.append(line)
                state = grammar.advance(state, line)
                continue
        whole = grammar.whole_tokens(state)
        # sorted: a frozenset iterates in hash order, which changes between processes
        options = [p for p in (sorted(whole) if whole else pieces) if grammar.advance(state, p) is not None]
        if grammar.can_end(state):
            if not options or rng.random() < 0.3:
                return "".join(out)
        if not options:
            raise RuntimeError(f"dead end after {''.join(out)!r}")
        piece = options[int(rng.integers(len(options)))]
        out.append(piece)
        state = grammar.advance(state, piece)
    raise RuntimeError("no end in 2000 steps")


def _angles_can_close(system: str, partial: str, final: bool = False) -> bool:
    """For a triclinic lattice line: whether the gamma begun in ``partial`` can still close a 3D cell
    with its alpha and beta (``final``: whether it does as written); other systems' angles always do."""
    fields = partial.split(" ")
    if system != "triclinic" or len(fields) < 6:
        return True
    alpha, beta, gamma = float(fields[3]), float(fields[4]), fields[5]
    if final:
        return angles_problem([alpha, beta, float(gamma)]) is None
    if not gamma:
        return True  # 1 <= alpha, beta <= 179: gamma = |alpha - beta| + 1 always closes one
    return any(angles_problem([alpha, beta, g]) is None for g in range(1, 180) if str(g).startswith(gamma))


def grammar(
    elements=None, max_atoms: int = 20, min_atoms: int = 1, formula: str | None = None, spacegroup: int | None = None
) -> WyckoffGrammar:
    """The sampling grammar of the wyckoff format (:class:`WyckoffGrammar`)."""
    return WyckoffGrammar(elements, max_atoms, min_atoms, formula, spacegroup)


# ----------------------------------------------------------------------------------------------- wyckoff_mult
# The same format with each site line naming its position by Wyckoff symbol, multiplicity first ("4f 0.30"
# for "f 0.30"): the counts a composition is made of are written in the text, not looked up per group.


def encode_mult(obj: Any, symprec: float = DEFAULT_SYMPREC) -> str:
    """Write ``obj`` in the ``wyckoff_mult`` format (:func:`encode` with Wyckoff symbols)."""
    return encode(obj, symprec, multiplicity=True)


def decode_mult(text: str) -> Atoms:
    """Read a ``wyckoff_mult`` text (:func:`decode`; the multiplicity must be the letter's)."""
    return decode(text, multiplicity=True)


def grammar_mult(
    elements=None, max_atoms: int = 20, min_atoms: int = 1, formula: str | None = None, spacegroup: int | None = None
) -> WyckoffGrammar:
    """The sampling grammar of the ``wyckoff_mult`` format."""
    return WyckoffGrammar(elements, max_atoms, min_atoms, formula, spacegroup, multiplicity=True)


# ----------------------------------------------------------------------------------------------- wyckoff_formula
# wyckoff_mult with the conventional cell's formula on a line of its own after the lattice ("Ti2O4"): the model
# writes the composition, counts and all, after the cell it must fill and before the orbits that must make it up.


def encode_formula(obj: Any, symprec: float = DEFAULT_SYMPREC) -> str:
    """Write ``obj`` in the ``wyckoff_formula`` format (:func:`encode` with Wyckoff symbols and a formula line)."""
    return encode(obj, symprec, multiplicity=True, formula_line=True)


def decode_formula(text: str) -> Atoms:
    """Read a ``wyckoff_formula`` text (:func:`decode`; the formula line must be what the orbits make)."""
    return decode(text, multiplicity=True, formula_line=True)


def grammar_formula(
    elements=None, max_atoms: int = 20, min_atoms: int = 1, formula: str | None = None, spacegroup: int | None = None
) -> WyckoffGrammar:
    """The sampling grammar of the ``wyckoff_formula`` format."""
    return WyckoffGrammar(elements, max_atoms, min_atoms, formula, spacegroup, multiplicity=True, formula_line=True)


def max_length_formula(max_atoms: int) -> int:
    """:func:`max_length_mult` and the formula line: per element (one per orbit at most) its symbol and a count
    of up to 3 digits (a conventional cell holds at most 4 primitive ones), and the newline."""
    return max_length_mult(max_atoms) + 5 * max_atoms + 1


@hookimpl
def register_codecs() -> list[Codec]:
    # The two layouts differ only in how a site line names its position.
    shared = dict(
        grammar_conditions=("spacegroup",),
        mask=mask_element,  # element lines are the 3rd, 5th, ... as in the paper format
        site_orders=SITE_ORDERS,
        order_sites=order_sites,
        tokens=COORDINATES,
        token_pattern=COORDINATE_PATTERN,
    )
    return [
        Codec(
            "wyckoff",
            encode,
            decode,
            "space group, free lattice parameters, element/Wyckoff-letter lines (pyxtal tables)",
            grammar=grammar,
            max_length=max_length,
            random_texts=random_texts,
            **shared,
        ),
        Codec(
            "wyckoff_mult",
            encode_mult,
            decode_mult,
            "the wyckoff format with Wyckoff symbols (multiplicity and letter, 4f) on the site lines",
            grammar=grammar_mult,
            max_length=max_length_mult,
            random_texts=partial(random_texts, multiplicity=True),
            **shared,
        ),
        Codec(
            "wyckoff_formula",
            encode_formula,
            decode_formula,
            "the wyckoff_mult format with the conventional cell's formula (Ti2O4) after the lattice",
            grammar=grammar_formula,
            max_length=max_length_formula,
            random_texts=partial(random_texts, multiplicity=True, formula_line=True),
            **{**shared, "mask": None},  # a masked element would still stand in the formula line: no infill
        ),
    ]
