"""Relax crystals with any registered ASE calculator and store energies as searchable ASE-db keys.

:func:`relax_atoms` relaxes one structure (FIRE on a ``FrechetCellFilter``: positions and
cell). :func:`relax_database` relaxes the valid rows of an ASE database (all, or a seeded
random subset), writing each result as it finishes, so that a run killed at any moment (even
SIGKILL) resumes where it stopped, without repeating or losing a row and without a lock file
left behind (SQLite's own locking; ASE's lock file is not used).

Keys written for every relaxed row (units: eV/atom for energies, s for time)::

    relaxed          True, or False with relax_error when the calculator failed
    potential        registered calculator name (``ase-llmgen plugins``), e.g. chgnet
    potential_settings  JSON of the calculator's settings ("{}" = its defaults)
    energy_per_atom  the potential's energy of the relaxed structure
    energy_correction  MP2020 correction added before e_form, for potentials with raw GGA energies
    e_form           formation energy per atom against MP's elemental references
    e_above_hull     energy above the reference hull (negative: below it)
    hull             which hull (``mp20`` = the shipped MP-20 hull)
    relax_fmax, relax_max_steps, relax_steps, relax_converged, relax_seconds
    relax_pool, relax_selected, relax_seed   candidates, how many of them were picked, with which seed

In place (no ``output``), the keys go onto the sample's own row and the relaxed cell and
positions into ``row.data``; with ``output``, every relaxed structure becomes a row of its own
there (its atoms the relaxed ones, with energy, forces and stress attached; the sample's keys
are copied and its checks recomputed on the relaxed structure), with ``source_id`` naming the
row it came from.

Energies: MP's formation energies, hence the hull, carry the MP2020 corrections. CHGNet 0.3.0 was
trained on corrected MPtrj energies and is used as it is; a potential registered with
``energy_scale="raw"`` (SevenNet-0) gets the corrections first (:func:`mp2020_correction`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_llmgen.convert import to_atoms

HULL_NAME = "mp20"
# Real formation energies lie within about -4.5..+5 eV/atom (MP); beyond this a relaxation has gone wrong.
MAX_ABS_E_FORM = 10.0
RESULT_KEYS = (
    "relaxed",
    "relax_error",
    "potential",
    "potential_settings",
    "energy_per_atom",
    "energy_correction",
    "e_form",
    "e_above_hull",
    "hull",
    "relax_fmax",
    "relax_max_steps",
    "relax_steps",
    "relax_converged",
    "relax_seconds",
    "relax_pool",
    "relax_selected",
    "relax_seed",
)


def energy_scale(calculator: str | Any) -> str:
    """The registered ``energy_scale`` of a calculator name; ``"mp2020"`` for a calculator object."""
    if not isinstance(calculator, str):
        return "mp2020"
    from ase_llmgen.plugins import calculators

    spec = calculators().get(calculator)
    return spec.energy_scale if spec is not None else "mp2020"


def make_calculator(calculator: str | Any = "chgnet", settings: dict | None = None):
    """An ASE calculator from a registered name (``settings`` go to its factory), or ``calculator`` itself."""
    if not isinstance(calculator, str):
        return calculator
    from ase_llmgen.plugins import get_calculator

    return get_calculator(calculator, **(settings or {}))


def relax_atoms(
    atoms: Any,
    calculator: str | Any = "chgnet",
    settings: dict | None = None,
    fmax: float = 0.1,
    steps: int = 500,
    time_limit: float | None = 60.0,
    threads: int | None = 1,
) -> dict:
    """Relax positions and cell of one crystal (ASE FIRE on a ``FrechetCellFilter``).

    ``calculator``: a registered name (``settings`` go to its factory) or an ASE calculator
    object (reuse one for many crystals: loading a potential takes seconds). Stops at ``fmax``
    (eV/A), after ``steps`` optimizer steps or after ``time_limit`` seconds, whichever comes
    first. ``threads``: torch/BLAS threads meanwhile (``None`` leaves them alone).
    Returns ``atoms`` (a relaxed copy, with a single-point calculator holding energy, forces and
    stress), ``energy_per_atom`` (eV/atom), ``steps``, ``converged``, ``seconds``.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from ase_llmgen.metrics.stability import limited_threads

    calc = make_calculator(calculator, settings)
    work = to_atoms(atoms).copy()
    work.info = {}
    work.calc = calc
    start = time.perf_counter()
    converged = False
    with limited_threads(threads):
        optimizer = FIRE(FrechetCellFilter(work), logfile=None)
        for step_converged in optimizer.irun(fmax=fmax, steps=steps):
            converged = step_converged
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
        energy = float(work.get_potential_energy())
        results = {"energy": energy, "forces": work.get_forces()}
        try:
            results["stress"] = work.get_stress()
        except Exception:  # a calculator without stress still gives a usable energy
            pass
    work.calc = SinglePointCalculator(work, **results)
    return {
        "atoms": work,
        "energy_per_atom": energy / len(work),
        "steps": int(optimizer.nsteps),
        "converged": bool(converged),
        "seconds": time.perf_counter() - start,
    }


def mp2020_correction(atoms: Atoms, energy_per_atom: float) -> float:
    """MP2020 correction (eV/atom) of a plain GGA/GGA+U energy, as Materials Project applies it.

    The run type follows MP's rules: GGA+U with MP's U values when O or F is present with one of
    its U elements (Co, Cr, Fe, Mn, Mo, Ni, V, W), else GGA. Anion and U corrections come from
    pymatgen's ``MaterialsProject2020Compatibility`` (POTCARs are not checked: there are none).
    """
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from ase_llmgen.convert import to_structure

    compat = _compatibility(MaterialsProject2020Compatibility)
    structure = to_structure(atoms)
    symbols = {el.symbol for el in structure.composition}
    hubbards: dict = {}
    for anion in ("O", "F"):  # MP's +U settings depend on the anion; O takes precedence
        if anion in symbols and not hubbards:
            hubbards = {el: u for el, u in compat.u_settings[anion].items() if el in symbols}
    parameters = {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards)}
    entry = ComputedStructureEntry(structure, energy_per_atom * len(structure), parameters=parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about every guessed oxidation state
        processed = compat.process_entry(entry, clean=True)
    if processed is None:
        raise ValueError(f"MaterialsProject2020Compatibility rejects {structure.composition.reduced_formula}")
    return float(processed.correction) / len(structure)


_COMPAT: dict = {}


def _compatibility(cls):
    if cls not in _COMPAT:  # building it reads its YAML: once per process
        _COMPAT[cls] = cls(check_potcar=False)
    return _COMPAT[cls]


def energy_keys(atoms: Atoms, energy_per_atom: float, hull: Any, energy_scale: str = "mp2020") -> dict:
    """``energy_per_atom``, ``e_form`` and ``e_above_hull`` (eV/atom) of a structure against ``hull``.

    ``energy_scale="raw"`` (a potential trained on uncorrected energies) first adds the MP2020
    correction (:func:`mp2020_correction`, stored as ``energy_correction``), as MP's own formation
    energies carry it. An element without a reference energy gives ``relax_error`` instead.
    """
    out: dict = {"energy_per_atom": float(energy_per_atom)}
    formula = atoms.get_chemical_formula()
    try:
        if energy_scale == "raw":
            out["energy_correction"] = mp2020_correction(atoms, energy_per_atom)
            energy_per_atom = energy_per_atom + out["energy_correction"]
        elif energy_scale != "mp2020":
            raise ValueError(f"unknown energy scale {energy_scale!r} (mp2020 or raw)")
        e_form = hull.formation_energy(formula, energy_per_atom)
        if not abs(e_form) <= MAX_ABS_E_FORM:  # NaN too
            # Measured: SevenNet-0 drove one generated SiIr2 cell to -2.4e7 eV/atom; such a number is no result.
            raise ValueError(f"unphysical formation energy {e_form:.4g} eV/atom (the potential collapsed the cell)")
        out["e_form"] = e_form
        out["e_above_hull"] = hull.e_above_hull(formula, out["e_form"])
    except (KeyError, ValueError) as exc:
        out["relax_error"] = str(exc)[:200]
    return out


def is_candidate(atoms: Atoms, kvp: dict, only_valid: bool) -> bool:
    """A crystal to relax: 3D-periodic with atoms, and (``only_valid``) CDVAE-valid, as the paper relaxes."""
    from ase_llmgen.checks.database import is_crystal
    from ase_llmgen.checks.validity import compositionally_valid, structurally_valid

    if not is_crystal(atoms):
        return False
    if not only_valid:
        return True
    if "valid" in kvp:  # written by our checks
        return bool(kvp["valid"])
    try:
        return structurally_valid(atoms) and compositionally_valid(atoms.get_chemical_symbols())
    except Exception:
        return False


def pick_subset(n: int, max_relax: int | None, seed: int) -> list[int]:
    """Indices of a seeded random subset of ``range(n)`` of size ``max_relax`` (sorted), or all.

    The first ``max_relax`` of one seeded permutation, so a larger ``--max`` with the same seed
    extends a smaller one instead of picking other rows.
    """
    if max_relax is None or max_relax >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n)[:max_relax])


def _settings_signature(potential: str, settings: dict, fmax: float, steps: int) -> dict:
    return {
        "potential": potential,
        "potential_settings": json.dumps(settings, sort_keys=True),
        "relax_fmax": fmax,
        "relax_max_steps": steps,
    }


def _mismatch(kvp: dict, signature: dict) -> str | None:
    for key, value in signature.items():
        have = kvp.get(key)
        if have is not None and (have != value if not isinstance(value, float) else not math.isclose(have, value)):
            return f"{key}={have!r} (this run: {value!r})"
    return None


def relax_database(
    source: str | Path,
    output: str | Path | None = None,
    calculator: str = "chgnet",
    settings: dict | None = None,
    selection: str | None = None,
    max_relax: int | None = None,
    seed: int = 0,
    only_valid: bool = True,
    fmax: float = 0.1,
    steps: int = 500,
    time_limit: float | None = 60.0,
    threads: int | None = 1,
    hull: Any = None,
    progress: bool = True,
) -> dict:
    """Relax the crystals of an ASE database with a registered calculator; resumable.

    Candidates: rows of ``source`` (matching ``selection``) holding a 3D-periodic crystal,
    and with ``only_valid`` (default) CDVAE-valid ones (the ``valid`` key when present).
    ``max_relax`` relaxes a random subset of that size, drawn with ``seed`` (the same subset on
    every rerun). Results go onto the rows of ``source`` or, with ``output``, into new rows
    there (see the module docstring for the keys). ``hull``: a
    :class:`~ase_llmgen.metrics.stability.ReferenceHull` (default: the shipped MP-20 hull).
    A rerun skips rows already done; one with another potential, settings, fmax or step limit
    is refused rather than mixed in. Returns counts, timings and the E_hull values.
    """
    from ase.db import connect
    from tqdm.auto import tqdm

    from ase_llmgen.checks.database import conditions_from_pairs, db_safe_pairs, run_checks, select_rows

    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such database")
    if output is not None and Path(output).resolve() == source.resolve():
        output = None  # -o in.db means in place
    settings = dict(settings or {})
    signature = _settings_signature(calculator, settings, float(fmax), int(steps))
    # SQLite locks by itself; ASE's extra lock file would outlive a SIGKILL and block the next run.
    src = connect(source, use_lock_file=False)
    rows = [
        row
        for row in select_rows(src, selection, source)
        if is_candidate(row.toatoms(), row.key_value_pairs, only_valid)
    ]
    picked = [rows[i] for i in pick_subset(len(rows), max_relax, seed)]
    out_db = None
    done: dict[int, dict] = {}
    if output is None:
        for row in picked:
            if "relaxed" in row.key_value_pairs:
                done[row.id] = row.key_value_pairs
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        out_db = connect(output, use_lock_file=False)
        for row in out_db.select("source_id"):
            done[int(row.source_id)] = row.key_value_pairs
    for row_id, kvp in done.items():
        problem = _mismatch(kvp, signature)
        if problem:
            where = output if output is not None else source
            raise ValueError(
                f"{where}: row for source id {row_id} was relaxed with other settings: {problem}; "
                "write this run elsewhere with -o"
            )
    hull = hull if hull is not None else _default_hull()
    scale = energy_scale(calculator)
    todo = [row for row in picked if row.id not in done]
    calc = make_calculator(calculator, settings) if todo else None
    bookkeeping = {
        **signature,
        "hull": HULL_NAME if hull is _default_hull() else "custom",
        "relax_pool": len(rows),
        "relax_selected": len(picked),
        "relax_seed": seed,
    }
    seconds: list[float] = []
    failed = 0
    for row in tqdm(todo, desc=f"relax ({calculator})", disable=not progress):
        atoms = row.toatoms()
        keys: dict = dict(bookkeeping)
        relaxed = None
        try:
            res = relax_atoms(atoms, calc, fmax=fmax, steps=steps, time_limit=time_limit, threads=threads)
            relaxed = res["atoms"]
            seconds.append(res["seconds"])
            keys.update(
                relaxed=True,
                relax_steps=res["steps"],
                relax_converged=res["converged"],
                relax_seconds=round(res["seconds"], 2),
            )
            keys.update(energy_keys(relaxed, res["energy_per_atom"], hull, scale))
        except Exception as exc:  # one crystal the potential cannot handle must not end the run
            failed += 1
            keys.update(relaxed=False, relax_error=f"{type(exc).__name__}: {exc}"[:200])
        if out_db is None:
            data = None
            if relaxed is not None:
                data = {"relaxed_cell": np.asarray(relaxed.cell[:]), "relaxed_positions": relaxed.get_positions()}
            src.update(row.id, data=data, **db_safe_pairs(keys))
        else:
            pairs = {k: v for k, v in row.key_value_pairs.items() if k not in RESULT_KEYS}
            target = relaxed if relaxed is not None else atoms
            if relaxed is not None:  # checks describe the structure in the row: the relaxed one
                pairs.update(run_checks(relaxed, conditions_from_pairs(row.key_value_pairs)))
            pairs.update(keys, source_id=row.id)
            # One write = one transaction: the row and its source_id land together or not at all.
            out_db.write(target, key_value_pairs=db_safe_pairs(pairs), data=dict(row.data) or None)
    target_db = out_db if out_db is not None else src
    e_hulls = [r.get("e_above_hull") for r in _result_rows(target_db, out_db is None, {r.id for r in picked})]
    return {
        "source": str(source),
        "output": str(output if output is not None else source),
        "potential": calculator,
        "potential_settings": settings,
        "candidates": len(rows),
        "selected": len(picked),
        "already_done": len(done),
        "relaxed_now": len(todo) - failed,
        "failed_now": failed,
        "seconds_per_relaxation": float(np.median(seconds)) if seconds else None,
        "seed": seed,
        "e_above_hull": [None if e is None else float(e) for e in e_hulls],
    }


def _result_rows(db, in_place: bool, picked_ids: set[int]) -> list:
    if in_place:
        return [row for row in db.select("relaxed") if row.id in picked_ids]
    return [row for row in db.select("source_id") if int(row.source_id) in picked_ids]


def _default_hull():
    from ase_llmgen.metrics.reference import shipped_hull

    return shipped_hull()
