"""A CIF-style codec, in the spirit of CrystaLLM (Antunes et al. 2024).

Longer than the paper's format but self-describing; written by pymatgen's
``CifWriter`` (optionally symmetrised) and read back by ``CifParser``.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Any

from ase import Atoms
from pymatgen.io.cif import CifFile, CifParser, CifWriter, str2float

from ase_llmgen.convert import to_atoms, to_structure
from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Codec
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.limits import angles_problem, coordinates_problem, lengths_problem
from ase_llmgen.text.paper import ELEMENTS


def encode(obj: Any, symprec: float | None = None) -> str:
    """Write a structure as CIF text (P1 unless ``symprec`` is given)."""
    return str(CifWriter(to_structure(obj), symprec=symprec, significant_figures=4))


# pymatgen applies every symmetry operation to every listed site and removes the
# duplicates pairwise: the work grows with the square of (operations x sites). 192
# operations x 5 sites take ~0.5 s, x 20 sites ~10 s, x 500 sites over a minute (2 CPU cores), so
# texts that would expand past this are refused before parsing.
MAX_EXPANDED_SITES = 1000

_SITE_KEYS = ("_atom_site_fract_x", "_atom_site_type_symbol", "_atom_site_label")
# pymatgen reads each symmetry operation with a regular expression that backtracks cubically
# on long runs of digits (an operation with 5,000 digits does not finish): real ones are short.
_OPERATION_KEYS = (
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
MAX_OPERATION_LENGTH = 80


_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c")
_ANGLE_KEYS = ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")


def _cell_of(block) -> tuple[list[float], list[float]] | None:
    """A block's lengths and angles as written, or ``None`` where they are missing (pymatgen then refuses it)."""
    try:
        return [str2float(block[k]) for k in _CELL_KEYS], [str2float(block[k]) for k in _ANGLE_KEYS]
    except Exception:  # missing or unreadable: pymatgen's own error says so
        return None


# Where pymatgen looks for the space group when a CIF lists no operations, in its order.
_SYMBOL_KEYS = (
    "_symmetry_space_group_name_H-M",
    "_symmetry_space_group_name_H_M",
    "_symmetry_space_group_name_H-M_",
    "_symmetry_space_group_name_H_M_",
    "_space_group_name_Hall",
    "_space_group_name_Hall_",
    "_space_group_name_H-M_alt",
    "_space_group_name_H-M_alt_",
    "_symmetry_space_group_name_hall",
    "_symmetry_space_group_name_hall_",
    "_symmetry_space_group_name_h-m",
    "_symmetry_space_group_name_h-m_",
)
_NUMBER_KEYS = (
    "_space_group_IT_number",
    "_space_group_IT_number_",
    "_symmetry_Int_Tables_number",
    "_symmetry_Int_Tables_number_",
)


def _squeeze(name: str) -> str:
    return re.sub(r"[\s_]", "", name)


@functools.cache
def _group_orders() -> dict[str, int]:
    """Number of symmetry operations per space-group name (short, full and Hall symbols, number), from spglib.

    Asking pymatgen instead builds the group (1.4 s for Fm-3m) and, for a name it does not know,
    reads a large JSON file once per name field: model output or a mangled file would pay that.
    """
    import spglib
    from pymatgen.symmetry.groups import SYMM_DATA

    orders: dict[str, int] = {}
    for hall in range(1, 531):
        kind = spglib.get_spacegroup_type(hall)
        count = len(spglib.get_symmetry_from_database(hall)["rotations"])
        for name in (kind.international_short, kind.international_full, kind.international, kind.hall_symbol):
            orders[_squeeze(name)] = max(orders.get(_squeeze(name), 0), count)
        orders[str(kind.number)] = max(orders.get(str(kind.number), 0), count)
    for name, entry in SYMM_DATA["space_group_encoding"].items():  # older symbols pymatgen knows (Cmma, ...)
        orders.setdefault(_squeeze(name), orders[str(entry["int_number"])])
    return orders


def _operations(block) -> int:
    """How many symmetry operations pymatgen will apply to ``block``'s sites (an upper bound).

    A space-group name or number that neither spglib nor pymatgen knows is refused: pymatgen
    would search a large file for it, then read the crystal as P1 anyway.
    """
    for key in _OPERATION_KEYS:
        operations = block.data.get(key)
        if operations:
            operations = [operations] if isinstance(operations, str) else operations
            for op in operations:
                if len(op) > MAX_OPERATION_LENGTH:
                    raise CrystalTextError(
                        f"symmetry operation {op[:30]!r}... is {len(op)} characters long "
                        f"(at most {MAX_OPERATION_LENGTH})"
                    )
            return len(operations)
    orders = _group_orders()
    for key in _SYMBOL_KEYS:
        if block.data.get(key):
            name = str(block.data[key])
            if _squeeze(name) not in orders:
                raise CrystalTextError(f"unknown space group {name[:40]!r} ({key}) and no symmetry operations listed")
            return orders[_squeeze(name)]
    for key in _NUMBER_KEYS:
        if block.data.get(key):
            try:
                return orders[str(int(str2float(block.data[key])))]
            except (KeyError, ValueError, TypeError) as exc:
                raise CrystalTextError(f"unknown space group number {str(block.data[key])[:20]!r} ({key})") from exc
    return 1  # no symmetry given: pymatgen reads it as P1


def _precheck(text: str, parser: CifParser) -> int:
    """Refuse what pymatgen would take minutes over or hide the reason for (it drops a block with a bad
    cell and says only "no structures"); return an upper bound on the sites it would generate: the sum
    over blocks of symmetry operations x listed sites."""
    total = 0
    # The parser's own parse of the text (saves parsing it twice); a fresh one if pymatgen renames it.
    cif_file = getattr(parser, "_cif", None) or CifFile.from_str(text)
    for block in cif_file.data.values():
        cell = _cell_of(block)
        problem = cell and (lengths_problem(cell[0]) or angles_problem(cell[1]))
        if problem:
            raise CrystalTextError(f"data_{block.header}: {problem}")
        operations = _operations(block)  # pymatgen reads the operations even of a block with no sites
        sites = max((len(v) if isinstance(v, list) else 1 for k in _SITE_KEYS if (v := block.data.get(k))), default=0)
        total += sites * operations
    return total


def decode(text: str) -> Atoms:
    """Read CIF text into ``ase.Atoms`` or raise ``CrystalTextError``.

    Refused, with the reason: text pymatgen cannot read, more or fewer than one
    structure, more than :data:`MAX_EXPANDED_SITES` sites after applying the
    symmetry operations, partial occupancies, species that are no element
    (``X``, unknown symbols), and cells or positions outside
    :mod:`ase_llmgen.text.limits` (non-finite, zero volume, absurd size).
    """
    if not isinstance(text, str):
        raise CrystalTextError(f"expected text, got {type(text).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text)
            expanded = _precheck(text, parser)
            if expanded > MAX_EXPANDED_SITES:
                raise CrystalTextError(
                    f"symmetry operations x listed sites = {expanded}: more than {MAX_EXPANDED_SITES} sites "
                    "to generate (not parsed, it would take minutes)"
                )
            structures = parser.parse_structures(primitive=False)
    except CrystalTextError:
        raise
    except Exception as exc:  # pymatgen raises many types for bad CIF (ValueError, KeyError, AssertionError, ...)
        raise CrystalTextError(f"unreadable CIF: {type(exc).__name__}: {exc}"[:300]) from exc
    if len(structures) != 1:
        raise CrystalTextError(f"expected one CIF block, found {len(structures)}")
    return _checked_atoms(structures[0])


def _checked_atoms(structure) -> Atoms:
    """``structure`` as ``ase.Atoms`` if it is an ordered crystal of real elements with a sane cell."""
    lattice = structure.lattice
    problem = lengths_problem(lattice.abc) or angles_problem(lattice.angles)
    if problem:
        raise CrystalTextError(problem)
    if not (math.isfinite(lattice.volume) and lattice.volume > 0):
        raise CrystalTextError(f"cell volume {lattice.volume} is not positive")
    for n, site in enumerate(structure, start=1):
        if not site.is_ordered:
            raise CrystalTextError(
                f"site {n} is partially occupied ({site.species}): only ordered crystals can be read"
            )
        if site.specie.symbol not in ELEMENTS:
            raise CrystalTextError(f"site {n}: {site.specie.symbol!r} is not a chemical element")
        problem = coordinates_problem(site.frac_coords.tolist())
        if problem:
            raise CrystalTextError(f"site {n}: {problem}")
    return to_atoms(structure)


@hookimpl
def register_codecs() -> list[Codec]:
    return [Codec("cif", encode, decode, "CIF text as in CrystaLLM (pymatgen CifWriter/CifParser)")]
