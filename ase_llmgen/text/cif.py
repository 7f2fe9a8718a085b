"""A CIF-style codec, in the spirit of CrystaLLM (Antunes et al. 2024).

Longer than the paper's format but self-describing; written by pymatgen's
``CifWriter`` (optionally symmetrised) and read back by ``CifParser``.
"""

from __future__ import annotations

import warnings
from typing import Any

from ase import Atoms
from pymatgen.io.cif import CifParser, CifWriter

from ase_llmgen.convert import to_atoms, to_structure
from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Codec
from ase_llmgen.text.errors import CrystalTextError


def encode(obj: Any, symprec: float | None = None) -> str:
    """Write a structure as CIF text (P1 unless ``symprec`` is given)."""
    return str(CifWriter(to_structure(obj), symprec=symprec, significant_figures=4))


def decode(text: str) -> Atoms:
    """Read CIF text into ``ase.Atoms`` or raise ``CrystalTextError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = CifParser.from_str(text).parse_structures(primitive=False)
    except Exception as exc:  # pymatgen raises many types for bad CIF
        raise CrystalTextError(f"unreadable CIF: {exc}") from exc
    if len(structures) != 1:
        raise CrystalTextError(f"expected one CIF block, found {len(structures)}")
    return to_atoms(structures[0])


@hookimpl
def register_codecs() -> list[Codec]:
    return [Codec("cif", encode, decode, "CIF text as in CrystaLLM (pymatgen CifWriter/CifParser)")]
