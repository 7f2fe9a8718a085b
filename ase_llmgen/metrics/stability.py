"""Stability of crystals: formation energy and energy above a reference hull, and a stability summary.

Relaxations themselves run in :mod:`ase_llmgen.relax.runner` (any registered calculator; CHGNet by
default); :func:`relax` and :func:`stability` here are the metrics' entry points to it.

Energies
--------
CHGNet (0.3.0 model) predicts energies on the Materials Project 2020 *corrected*
scale, so its energies are used as they are: applying
``MaterialsProject2020Compatibility`` again would count the anion and +U
corrections twice. The formation energy per atom is
``E/atom - sum_i x_i mu_i`` with ``mu_i`` the energy per atom of MP's lowest-energy
elemental entry (``2023-02-07-mp-elemental-reference-entries.json.gz``).

Reference hull
--------------
A convex hull in formation-energy space built from the MP formation energies of
the 45,229 MP-20 materials (train, val and test) in ``hull_reference.csv``, with
every element at 0. For one crystal only the entries whose elements are a
subset of its chemical system matter, so a ``PhaseDiagram`` is built per
chemical system and cached.

What it covers, compared with the full Materials Project hull: only MP-20
materials, i.e. MP entries with at most 20 atoms per cell that made it into
CDVAE's MP-20 (about 45k of MP's ~150k materials); stable phases with larger
cells, and any chemistry outside MP-20, are missing. A missing phase can only
raise the hull, so for the same energies E_hull here is at most E_hull against
the full MP hull, and the stable/metastable rates are upper bounds. The elemental
references are MP's (89 elements), so end members are always present. Formation
energies are those of MP's snapshot used by MP-20 (GGA/GGA+U, MP-compatible
corrections), not the current r2SCAN-mixed MP hull. Measured: for 3,532 MP-20
materials with a DFT ``e_above_hull`` (another MP snapshot), E_hull recomputed
here from their own formation energies differs by MAE 0.004 eV/atom (median 0;
1st-99th percentile -0.016 to +0.046): the snapshots differ in both directions,
which outweighs the missing phases.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ase_llmgen.convert import to_atoms, to_structure

METASTABLE = 0.1  # eV/atom, the paper's threshold
STABLE = 0.0
_MAX_CACHED_DIAGRAMS = 4096


def load_elemental_references(path: str | Path) -> dict[str, float]:
    """MP elemental reference energies per atom ``{symbol: eV/atom}`` from the gzipped JSON of entries.

    Read with json + pymatgen's ``from_dict`` (never pickle).
    """
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    with gzip.open(path, "rt") as handle:
        raw = json.load(handle)
    items = raw.items() if isinstance(raw, dict) else ((None, d) for d in raw)
    mu: dict[str, float] = {}
    for _, entry_dict in items:
        cls = ComputedStructureEntry if "structure" in entry_dict else ComputedEntry
        entry = cls.from_dict(entry_dict)
        if len(entry.composition.elements) != 1:
            raise ValueError(f"{path}: {entry.composition} is not an elemental entry")
        element = entry.composition.elements[0].symbol
        mu[element] = min(mu.get(element, math.inf), entry.energy_per_atom)
    return mu


def _parse_composition(text: str) -> dict[str, float]:
    """``"O:6 Na:3"`` -> ``{"O": 6.0, "Na": 3.0}``."""
    out: dict[str, float] = {}
    for part in text.split():
        symbol, count = part.split(":")
        out[symbol] = out.get(symbol, 0.0) + float(count)
    return out


@dataclass
class ReferenceHull:
    """Formation energies of reference materials, elemental references, and per-chemsys hulls.

    ``entries`` maps a frozenset of elements to ``[(composition dict, formation energy per atom)]``.
    """

    entries: dict[frozenset, list[tuple[dict[str, float], float]]]
    mu: dict[str, float] = field(default_factory=dict)
    _diagrams: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_formation_energies(cls, rows: Iterable[tuple[Any, float]], mu: dict[str, float] | None = None):
        """Build from ``(composition, formation energy per atom)`` pairs (composition: dict, formula, Composition)."""
        from pymatgen.core import Composition

        entries: dict[frozenset, list] = {}
        for comp, e_form in rows:
            if e_form is None or not math.isfinite(e_form):
                continue
            amounts = {el.symbol: float(n) for el, n in Composition(comp).items()}
            entries.setdefault(frozenset(amounts), []).append((amounts, float(e_form)))
        return cls(entries, dict(mu or {}))

    def phase_diagram(self, elements: Iterable[str]):
        """pymatgen ``PhaseDiagram`` of the chemical system (elements at 0), cached."""
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition

        key = frozenset(elements)
        if key in self._diagrams:
            return self._diagrams[key]
        pd_entries = [PDEntry(Composition({el: 1}), 0.0) for el in sorted(key)]
        for n in range(1, len(key) + 1):
            for subset in itertools.combinations(sorted(key), n):
                for amounts, e_form in self.entries.get(frozenset(subset), ()):
                    pd_entries.append(PDEntry(Composition(amounts), e_form * sum(amounts.values())))
        diagram = PhaseDiagram(pd_entries)
        if len(self._diagrams) >= _MAX_CACHED_DIAGRAMS:
            self._diagrams.pop(next(iter(self._diagrams)))
        self._diagrams[key] = diagram
        return diagram

    def e_above_hull(self, composition: Any, e_form_per_atom: float) -> float:
        """Formation energy per atom minus the hull's at that composition (negative: below the hull)."""
        from pymatgen.core import Composition

        comp = Composition(composition)
        diagram = self.phase_diagram(el.symbol for el in comp.elements)
        return float(e_form_per_atom - diagram.get_hull_energy_per_atom(comp))

    def formation_energy(self, composition: Any, energy_per_atom: float) -> float:
        """``E/atom - sum_i x_i mu_i``; raises ``KeyError`` for an element without a reference."""
        from pymatgen.core import Composition

        comp = Composition(composition)
        missing = [el.symbol for el in comp.elements if el.symbol not in self.mu]
        if missing:
            raise KeyError(f"no elemental reference energy for {', '.join(missing)}")
        fractions = comp.fractional_composition
        return float(energy_per_atom - sum(x * self.mu[el.symbol] for el, x in fractions.items()))


def read_hull_csv(path: str | Path) -> list[tuple[dict[str, float], float]]:
    """``(composition, formation_energy_per_atom)`` of every row of ``hull_reference.csv``."""
    rows = []
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get("formation_energy_per_atom")
            if value not in (None, ""):
                rows.append((_parse_composition(row["composition"]), float(value)))
    return rows


@lru_cache(maxsize=4)
def _cached_hull(hull_csv: str, mp_reference: str | None) -> ReferenceHull:
    mu = load_elemental_references(mp_reference) if mp_reference else {}
    return ReferenceHull.from_formation_energies(read_hull_csv(hull_csv), mu)


def reference_hull(hull_csv: str | Path, mp_reference_json_gz: str | Path | None = None) -> ReferenceHull:
    """The MP-20 reference hull plus MP elemental references, built once per process.

    ``hull_csv``: ``shared/data/mp_20/hull_reference.csv`` (or gzipped); ``mp_reference_json_gz``:
    ``shared/data/mp_reference/2023-02-07-mp-elemental-reference-entries.json.gz``
    (needed to turn CHGNet energies into formation energies).
    """
    ref = str(Path(mp_reference_json_gz).resolve()) if mp_reference_json_gz else None
    return _cached_hull(str(Path(hull_csv).resolve()), ref)


HULL_CSV = "mp_20/hull_reference.csv"
MP_REFERENCE = "mp_reference/2023-02-07-mp-elemental-reference-entries.json.gz"


def find_shared_data() -> Path | None:
    """``$ASE_LLMGEN_DATA``, else the first ``shared/data`` folder beside or above the working
    directory or this package (the project's layout), holding the MP-20 hull data; ``None`` if none.

    Only benchmarks need it (full CSVs); evaluation and E_hull use the data shipped in the package.
    """
    import os

    env = os.environ.get("ASE_LLMGEN_DATA")
    candidates = [Path(env)] if env else []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        candidates += [parent / "shared" / "data" for parent in (start, *start.parents)]
    return next((c for c in candidates if (c / HULL_CSV).is_file() and (c / MP_REFERENCE).is_file()), None)


def default_reference_hull() -> ReferenceHull:
    """The MP-20 hull shipped in the package (:func:`ase_llmgen.metrics.reference.shipped_hull`).

    The same entries as ``shared/data/mp_20/hull_reference.csv``; no other file is needed.
    """
    from ase_llmgen.metrics.reference import shipped_hull

    return shipped_hull()


# --- CHGNet ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def chgnet_model():
    """The CHGNet model shipped in the wheel (0.3.0), loaded once per process."""
    import contextlib
    import sys

    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(sys.stderr):  # "CHGNet v0.3.0 initialized ..." is not a result
        return CHGNet.load(verbose=False)


@contextmanager
def limited_threads(n: int | None):
    """Run with ``n`` torch and BLAS/OpenMP threads, restoring the previous settings after.

    CHGNet on MP-20-sized cells gains nothing from threads, and on a busy machine
    threads spin against each other: a 10-step relaxation took 5.3 s with the
    default 2 threads and 0.86 s with 1 (2-core machine with a training run beside it).
    """
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits  # comes with scikit-learn (matminer)
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=n):
                yield
    finally:
        torch.set_num_threads(before)


def single_point(
    structures: Sequence[Any], model: Any = None, batch_size: int = 16, threads: int | None = None
) -> list[float]:
    """CHGNet energies per atom (eV/atom) without relaxation."""
    model = model or chgnet_model()
    structs = [to_structure(s) for s in structures]
    if not structs:
        return []
    with limited_threads(threads):
        preds = model.predict_structure(structs, task="e", batch_size=batch_size)
    preds = preds if isinstance(preds, list) else [preds]
    return [float(np.asarray(p["e"]).reshape(-1)[0]) for p in preds]


def relax(
    atoms: Any,
    fmax: float = 0.1,
    steps: int = 500,
    time_limit: float | None = 60.0,
    model: Any = None,
    threads: int | None = 1,
    calculator: str | Any = "chgnet",
) -> dict:
    """Relax one crystal: :func:`ase_llmgen.relax.runner.relax_atoms` with CHGNet by default.

    ``model``: an already loaded CHGNet to use; ``calculator``: any registered calculator name
    or ASE calculator instead. Returns ``atoms``, ``energy_per_atom`` (eV/atom), ``steps``,
    ``converged``, ``seconds``.
    """
    from ase_llmgen.relax.runner import relax_atoms

    if model is not None:
        from ase_llmgen.relax.builtin import chgnet_calculator

        calculator = chgnet_calculator(model)
    return relax_atoms(atoms, calculator, fmax=fmax, steps=steps, time_limit=time_limit, threads=threads)


def summarize(e_hulls: Sequence[float | None], n_total: int | None = None) -> dict:
    """Metastable (E_hull < 0.1 eV/atom) and stable (E_hull < 0) rates.

    Rates are over the crystals with an E_hull (``*_rate``) and, when ``n_total``
    is given, over all crystals considered, failures counting as unstable (``*_rate_all``).
    """
    values = np.array([e for e in e_hulls if e is not None and math.isfinite(e)], dtype=float)
    n = len(values)
    out: dict = {
        "n_with_e_hull": n,
        "metastable_rate": float(np.mean(values < METASTABLE)) if n else float("nan"),
        "stable_rate": float(np.mean(values < STABLE)) if n else float("nan"),
        "median_e_hull": float(np.median(values)) if n else float("nan"),
        "metastable_threshold": METASTABLE,
    }
    if n_total:
        out["n_considered"] = n_total
        out["metastable_rate_all"] = float(np.sum(values < METASTABLE) / n_total)
        out["stable_rate_all"] = float(np.sum(values < STABLE) / n_total)
    out["e_hull"] = [round(float(v), 5) for v in values]
    return out


def stability(
    samples: str | Path | Sequence[Any],
    hull: ReferenceHull | None = None,
    max_samples: int | None = None,
    fmax: float = 0.1,
    steps: int = 500,
    time_limit: float | None = 60.0,
    require_valid: bool = True,
    progress: bool = True,
    calculator: str = "chgnet",
    seed: int = 0,
    threads: int | None = 1,
) -> dict:
    """Relax valid crystals with an ML potential (CHGNet by default) and summarise their E_hull.

    ``samples``: an ASE database path (relaxed in place, resumable:
    :func:`ase_llmgen.relax.runner.relax_database`, whose keys it writes) or a list of
    Atoms/Structures. Candidates are the CDVAE-valid crystals (the paper's rule; all with
    ``require_valid=False``); ``max_samples`` relaxes a random subset of them drawn with
    ``seed``. ``hull``: default the shipped MP-20 hull. Returns :func:`summarize` of the
    relaxed candidates plus the runner's counts and, for a list, ``results`` per crystal.
    """
    from ase_llmgen.relax.runner import energy_keys, energy_scale, make_calculator, pick_subset, relax_atoms

    settings = {
        "fmax": fmax,
        "steps": steps,
        "time_limit": time_limit,
        "max_samples": max_samples,
        "seed": seed,
        "require_valid": require_valid,
        "potential": calculator,
        "reference_hull": "MP-20 formation energies, elements at 0",
    }
    if isinstance(samples, (str, Path)):
        from ase_llmgen.relax.runner import relax_database

        run = relax_database(
            samples,
            None,
            calculator,
            max_relax=max_samples,
            seed=seed,
            only_valid=require_valid,
            fmax=fmax,
            steps=steps,
            time_limit=time_limit,
            threads=threads,
            hull=hull,
            progress=progress,
        )
        summary = summarize(run.pop("e_above_hull"), n_total=run["selected"])
        summary.update(run, settings=settings)
        return summary
    from tqdm.auto import tqdm

    from ase_llmgen.relax.runner import is_candidate

    hull = hull if hull is not None else default_reference_hull()
    items = [to_atoms(s) for s in samples]
    pool = [i for i, atoms in enumerate(items) if is_candidate(atoms, {}, require_valid)]
    picked = [pool[k] for k in pick_subset(len(pool), max_samples, seed)]
    calc = make_calculator(calculator) if picked else None
    results, seconds = [], []
    for index in tqdm(picked, desc=f"relax ({calculator})", disable=not progress, leave=False):
        out: dict = {"index": index}
        try:
            res = relax_atoms(items[index], calc, fmax=fmax, steps=steps, time_limit=time_limit, threads=threads)
            seconds.append(res["seconds"])
            out.update(relaxed=True, relax_steps=res["steps"], relax_converged=res["converged"], atoms=res["atoms"])
            out.update(energy_keys(res["atoms"], res["energy_per_atom"], hull, energy_scale(calculator)))
        except Exception as exc:  # one crystal the potential cannot handle must not end the run
            out.update(relaxed=False, relax_error=f"{type(exc).__name__}: {exc}"[:200])
        results.append(out)
    summary = summarize([r.get("e_above_hull") for r in results], n_total=len(picked))
    summary.update(
        candidates=len(pool),
        selected=len(picked),
        relaxed_now=len(seconds),
        seconds_per_relaxation=float(np.median(seconds)) if seconds else None,
        settings=settings,
        results=results,
    )
    return summary


def check_known_structures(
    csv_path: str | Path,
    hull: ReferenceHull,
    n: int = 100,
    seed: int = 0,
    model: Any = None,
    threads: int | None = 1,
) -> dict:
    """Check the energy pipeline on DFT-relaxed crystals with known E_hull (e.g. MP-20 test.csv).

    For ``n`` random rows with an ``e_above_hull`` value: CHGNet single-point
    energy -> formation energy -> E_hull against ``hull``, compared with the CSV's
    DFT ``formation_energy_per_atom`` and ``e_above_hull`` (mean absolute errors).
    Also reports the E_hull recomputed from the CSV's own DFT formation energy
    (``mae_e_hull_dft``), which isolates differences of the hull itself.
    """
    from pymatgen.core import Structure

    with open(csv_path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("e_above_hull") not in (None, "")]
    if not rows:
        raise ValueError(f"{csv_path}: no rows with e_above_hull")
    rng = np.random.default_rng(seed)
    picked = [rows[i] for i in sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False))]
    structures = [Structure.from_str(r["cif"], fmt="cif") for r in picked]
    start = time.perf_counter()
    energies = single_point(structures, model=model, threads=threads)
    elapsed = time.perf_counter() - start
    per = []
    for row, s, e in zip(picked, structures, energies, strict=True):
        formula = s.composition.formula
        item = {
            "material_id": row.get("material_id"),
            "formula": s.composition.reduced_formula,
            "e_above_hull_dft": float(row["e_above_hull"]),
            "chgnet_energy_per_atom": e,
        }
        try:
            item["e_form_chgnet"] = hull.formation_energy(formula, e)
            item["e_hull_chgnet"] = hull.e_above_hull(formula, item["e_form_chgnet"])
            if row.get("formation_energy_per_atom"):
                item["e_form_dft"] = float(row["formation_energy_per_atom"])
                item["e_hull_dft_recomputed"] = hull.e_above_hull(formula, item["e_form_dft"])
        except (KeyError, ValueError) as exc:
            item["error"] = str(exc)
        per.append(item)

    def mae(a: str, b: str) -> float | None:
        pairs = [(p[a], p[b]) for p in per if a in p and b in p]
        return float(np.mean([abs(x - y) for x, y in pairs])) if pairs else None

    return {
        "n": len(per),
        "mae_e_form": mae("e_form_chgnet", "e_form_dft"),
        "mae_e_hull": mae("e_hull_chgnet", "e_above_hull_dft"),
        "mae_e_hull_dft": mae("e_hull_dft_recomputed", "e_above_hull_dft"),
        "seconds_per_structure": elapsed / max(1, len(per)),
        "per_structure": per,
    }
