"""Built-in structure checks, registered through the ``register_checks`` hook.

Each returns ASE-db key-value pairs; together they make ``ase db`` queries such
as ``sg_match=True,formula_match=True,valid=True`` possible.
"""

from __future__ import annotations

from ase import Atoms
from pymatgen.core import Composition

from ase_llmgen.checks.plausibility import check_plausible
from ase_llmgen.checks.symmetry import DEFAULT_SYMPREC, detect_spacegroup
from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import Check


def check_validity(atoms: Atoms, conditions: dict, **options) -> dict:
    """CDVAE structural and SMACT compositional validity."""
    struct_ok = structurally_valid(atoms)
    comp_ok = compositionally_valid(atoms.get_chemical_symbols())
    return {"struct_valid": struct_ok, "comp_valid": comp_ok, "valid": struct_ok and comp_ok}


def check_spacegroup(atoms: Atoms, conditions: dict, symprec: float = DEFAULT_SYMPREC, **options) -> dict:
    """Found space group (spglib), and whether it matches a requested one."""
    found = detect_spacegroup(atoms, symprec=symprec)
    out: dict = {
        "sg_symprec": float(symprec),
        "sg_number": found.number if found else 0,
        "sg_symbol": found.symbol if found else "unknown",
    }
    if conditions.get("spacegroup") is not None:
        out["sg_match"] = found is not None and found.number == int(conditions["spacegroup"])
    return out


def check_formula(atoms: Atoms, conditions: dict, **options) -> dict:
    """Reduced formula and density, and whether the composition matches a requested formula."""
    comp = Composition(atoms.get_chemical_formula())
    volume = atoms.get_volume()
    out: dict = {
        "reduced_formula": comp.reduced_formula,
        "n_elements": len(comp.elements),
        "density": float(comp.weight) / volume * 1.66053906660 if volume > 0 else 0.0,  # amu/A^3 -> g/cm^3
    }
    if conditions.get("formula"):
        wanted = Composition(conditions["formula"]).reduced_composition
        out["formula_match"] = comp.reduced_composition.almost_equals(wanted)
    return out


@hookimpl
def register_checks() -> list[Check]:
    return [
        Check(
            "validity",
            check_validity,
            "CDVAE structural + SMACT compositional validity",
            ("struct_valid", "comp_valid", "valid"),
        ),
        Check(
            "spacegroup",
            check_spacegroup,
            "spglib space group vs the requested one",
            ("sg_number", "sg_symbol", "sg_symprec", "sg_match"),
        ),
        Check(
            "formula",
            check_formula,
            "reduced formula, density, vs the requested formula",
            ("reduced_formula", "n_elements", "density", "formula_match"),
        ),
        Check(
            "plausible",
            check_plausible,
            "contacts >= 0.6 x the covalent-radius sum (ase_ga blmin), cell volume 0.5-3 x its elements' usual",
            ("min_contact_ratio", "volume_ratio", "plausible"),
        ),
    ]
