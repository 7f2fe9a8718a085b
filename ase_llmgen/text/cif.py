"""A CIF-style codec, in the spirit of CrystaLLM (Antunes et al. 2024).

Longer than the paper's format but self-describing; written by pymatgen's
``CifWriter`` (optionally symmetrised) and read back by ``CifParser``.
"""

from __future__ import annotations

import math
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
# operations x 5 sites take ~0.5 s, x 20 sites ~10 s, x 500 sites over a minute, so
# texts that would expand past this are refused before parsing.
MAX_EXPANDED_SITES = 2000

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
        for key in _OPERATION_KEYS:
            operations = block.data.get(key) or []
            for op in [operations] if isinstance(operations, str) else operations:
                if len(op) > MAX_OPERATION_LENGTH:
                    raise CrystalTextError(
                        f"symmetry operation {op[:30]!r}... is {len(op)} characters long "
                        f"(at most {MAX_OPERATION_LENGTH})"
                    )
        sites = max((len(v) if isinstance(v, list) else 1 for k in _SITE_KEYS if (v := block.data.get(k))), default=0)
        if sites:
            total += sites * len(parser.get_symops(block))
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
