"""A crystal-structure search with ``ase_ga``: language-model and classical operators, any ASE calculator.

>>> from ase_llmgen.ga.search import SearchSettings, run_search
>>> summary = run_search("ga.db", SearchSettings(composition="Li2Fe2O4", generations=3))  # doctest: +SKIP

Everything lives in an ``ase_ga`` database (``ase db ga.db relaxed=1 -s raw_score-``):
``PrepareDB`` writes the settings into row 1; the start population, every offspring
(unrelaxed) and every relaxed candidate are rows, as in ASE's bulk GA tutorial.

What is searched
  * ``composition`` alone -- a fixed cell content (``"Cu6Au2"``: 8 atoms); operators
    never change it (no infill).
  * ``system`` (``"Li-Fe-O"``) -- any composition of all these elements with at most
    ``max_atoms`` sites, start candidates charge balanced; with ``composition`` too, the
    start population has that composition and mutations may change it within the system.

Operators (``operators``)
  * ``classical``: ``ase_ga``'s cut-and-splice pairing, strain, permutation and rattle
    mutations; random start population (``StartGenerator``).
  * ``llm``: the model's regeneration mutation (a new crystal of the parent's formula)
    and, where the composition may change, its infill mutation; start population from
    the model (the random generator fills in when the model gives nothing).
  * ``mixed`` (default): both sets.

Operators are drawn in proportion to ``weights``, without replacement from a bag of
``sum(weights)`` draws per round (each round's order is shuffled), so every operator
gets its share even in a short run; an operator that fails is retried with a weighted
random draw.  Randomness is seeded per offspring (``[seed, step, attempt]``), and the
model's batch counter too, so a resumed run does not replay the first draws.

Scores (``score``): ``energy`` -- ``raw_score = -E/atom`` (fixed composition, or a
calculator whose elements sit near 0 eV/atom such as EMT); ``e_hull`` -- ``-E_hull``
against the MP-20 reference hull (:func:`ase_llmgen.metrics.stability.default_reference_hull`;
calculators on the Materials Project energy scale, i.e. CHGNet).  Default: ``e_hull``
with CHGNet when the hull data is found, else ``energy``.

Resuming: rerunning with the same database continues where it stopped (even after
SIGKILL): start candidates missing are drawn, an offspring written but not relaxed
is relaxed, and offspring are added until ``population * (generations + 1)``
relaxations are done.  SQLite commits row by row; no lock file is used.  A rerun
with other search settings (composition, operators, seed, ...) is refused;
``generations`` may grow to extend a search.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii

from ase_llmgen.sampling.settings import DEFAULTS, SampleSettings

OPERATOR_SETS = ("classical", "llm", "mixed")
CLASSICAL_WEIGHTS = {"pairing": 4, "strain": 2, "permutation": 1, "rattle": 1}
LLM_WEIGHTS = {"regeneration": 2, "infill": 2}
FAILED_SCORE = -1e9  # raw_score of a candidate whose relaxation failed (it is also marked extinct)
# The settings a rerun must share with the database it continues.
IDENTITY = (
    "composition",
    "system",
    "max_atoms",
    "population",
    "operators",
    "start",
    "weights",
    "calculator",
    "score",
    "model",
    "temperature",
    "cell_temperature",
    "top_p",
    "seed",
)


@dataclass
class SearchSettings:
    """What to search and how (see the module docstring)."""

    composition: str | None = None  # atoms per cell, e.g. "Cu6Au2"
    system: str | None = None  # chemical system, e.g. "Li-Fe-O"
    max_atoms: int = 12  # system searches: at most this many sites per cell
    population: int = 12
    generations: int = 4  # offspring = population * generations
    operators: str = "mixed"  # classical | llm | mixed
    start: str | None = None  # llm | random; default: random for classical, llm otherwise
    weights: dict[str, int] | None = None  # operator name -> integer weight (default: the set's)
    calculator: str = "chgnet"  # a registered calculator (see `ase-llmgen plugins`)
    calculator_settings: dict = field(default_factory=dict)
    score: str | None = None  # energy | e_hull; default: e_hull with CHGNet and hull data, else energy
    model: str = "default"
    temperature: float = 1.0  # the paper's GA temperature (plain sampling defaults to SampleSettings')
    cell_temperature: float | None = None  # the cell's lines; None: the model's own, else temperature
    top_p: float = DEFAULTS.top_p
    batch_size: int = 16
    max_draws: int = 64  # model samples per start candidate / regeneration at most
    seed: int = 0
    fmax: float = 0.1  # relaxation: force limit (eV/A)
    steps: int = 300  # relaxation: optimizer steps at most
    threads: int | None = 1  # torch/BLAS threads during relaxations (1 is fastest for small cells)

    def __post_init__(self) -> None:
        if self.operators not in OPERATOR_SETS:
            raise ValueError(f"operators must be one of {', '.join(OPERATOR_SETS)}, got {self.operators!r}")
        if self.start is None:
            self.start = "random" if self.operators == "classical" else "llm"
        if self.start not in ("llm", "random"):
            raise ValueError(f"start must be 'llm' or 'random', got {self.start!r}")
        if not self.composition and not self.system:
            raise ValueError("give a composition (atoms per cell, e.g. Cu6Au2) or a chemical system (e.g. Li-Fe-O)")
        if self.population < 2:
            raise ValueError(f"population must be >= 2 (pairing needs two parents), got {self.population}")
        if self.generations < 0:
            raise ValueError(f"generations must be >= 0, got {self.generations}")
        SampleSettings(cell_temperature=self.cell_temperature)  # checked at once, where sampling settings are
        if self.score not in (None, "energy", "e_hull"):
            raise ValueError(f"score must be 'energy' or 'e_hull', got {self.score!r}")
        if self.weights is not None:
            bad = {k: v for k, v in self.weights.items() if int(v) != v or v < 0}
            if bad or not any(self.weights.values()):
                raise ValueError(f"weights must be non-negative integers, not all 0: {self.weights}")
        numbers = self.numbers()
        elements = self.elements()
        if numbers is not None and not {chemical_symbols[z] for z in numbers} <= set(elements):
            raise ValueError(f"composition {self.composition} has elements outside the system {self.system}")
        if self.system and numbers is None and self.max_atoms < len(elements):
            raise ValueError(f"max_atoms={self.max_atoms} cannot hold one atom of each of {', '.join(elements)}")

    def numbers(self) -> list[int] | None:
        """The fixed cell content as atomic numbers (``None`` for a system search)."""
        if not self.composition:
            return None
        from ase.symbols import string2symbols

        try:
            return [atomic_numbers[s] for s in string2symbols(self.composition)]
        except (ValueError, KeyError) as exc:
            raise ValueError(f"composition {self.composition!r} is not a formula such as Cu6Au2") from exc

    def elements(self) -> tuple[str, ...]:
        """The elements the search may use."""
        if self.system:
            parts = [p.strip() for p in self.system.replace(",", "-").split("-") if p.strip()]
            unknown = [p for p in parts if p not in atomic_numbers]
            if unknown or not parts:
                raise ValueError(f"system {self.system!r}: not element symbols: {unknown or parts}")
            return tuple(sorted(set(parts)))
        return tuple(sorted({chemical_symbols[z] for z in self.numbers() or ()}))

    def fixed(self) -> bool:
        """Whether the composition never changes (no system given)."""
        return not self.system

    def operator_weights(self) -> dict[str, int]:
        """The operators this search uses, with their integer weights."""
        if self.weights is not None:
            weights = {k: int(v) for k, v in self.weights.items() if v}
            unknown = set(weights) - set(CLASSICAL_WEIGHTS) - set(LLM_WEIGHTS)
            if unknown:
                raise ValueError(
                    f"unknown operators {sorted(unknown)}; known: {sorted({**CLASSICAL_WEIGHTS, **LLM_WEIGHTS})}"
                )
            return weights
        weights = {}
        if self.operators in ("classical", "mixed"):
            weights.update(CLASSICAL_WEIGHTS)
        if self.operators in ("llm", "mixed"):
            weights.update(LLM_WEIGHTS)
        if len(self.elements()) < 2:
            weights.pop("permutation", None)  # nothing to swap
        if self.fixed():
            weights.pop("infill", None)  # infill changes the composition
        return weights

    def identity(self) -> dict:
        """The settings stored in the database and compared on resume."""
        out = {k: getattr(self, k) for k in IDENTITY}
        out["weights"] = self.operator_weights()
        return out


# ---------------------------------------------------------------------- scoring


def calculator_factory(calculator: str | Callable[[], Any], settings: dict | None = None) -> Callable[[], Any]:
    """A factory of ASE calculators: ``calculator`` itself when callable, else the registered one of that name.

    An unknown name raises ``KeyError`` (listing the registered ones) at once, before any work is done.
    """
    settings = settings or {}
    if callable(calculator):
        return calculator
    from ase_llmgen.plugins import calculators, get_calculator

    if calculator not in calculators():  # fail before any work, not at the first relaxation
        raise KeyError(f"unknown calculator {calculator!r}; registered: {', '.join(sorted(calculators()))}")
    return lambda: get_calculator(calculator, **settings)


class Scorer:
    """Relaxes a candidate with the calculator and sets its ``raw_score`` (and energies) as ``ase db`` keys."""

    def __init__(self, settings: SearchSettings, calculator: str | Callable[[], Any] | None = None):
        self.settings = settings
        self.factory = calculator_factory(calculator or settings.calculator, settings.calculator_settings)
        self.score = settings.score or default_score(settings.calculator if calculator is None else None)
        self.hull = None
        if self.score == "e_hull":
            from ase_llmgen.metrics.stability import default_reference_hull

            self.hull = default_reference_hull()
        self._calc = None

    def calculator(self) -> Any:
        if self._calc is None:  # one calculator for the search: loading CHGNet costs seconds
            self._calc = self.factory()
        return self._calc

    def __call__(self, atoms: Atoms, cellbounds: Any = None) -> bool:
        """Relax and score ``atoms`` in place; ``False`` when the relaxation failed or left the cell bounds."""
        from ase.calculators.singlepoint import SinglePointCalculator

        from ase_llmgen.relax.runner import energy_keys, energy_scale, relax_atoms

        kvp = atoms.info.setdefault("key_value_pairs", {})
        try:
            res = relax_atoms(
                atoms,
                self.calculator(),
                fmax=self.settings.fmax,
                steps=self.settings.steps,
                time_limit=None,
                threads=self.settings.threads,
            )
            relaxed = res["atoms"]
            # ase_ga writes the candidate object it handed over: relax it in place
            atoms.set_cell(relaxed.cell)
            atoms.set_positions(relaxed.positions)
            atoms.calc = SinglePointCalculator(atoms, **relaxed.calc.results)
            energy = res["energy_per_atom"]
            kvp.update(
                energy_per_atom=energy,
                relax_steps=res["steps"],
                relax_converged=res["converged"],
                relax_seconds=round(res["seconds"], 3),
            )
            ok = math.isfinite(energy) and (cellbounds is None or cellbounds.is_within_bounds(atoms.cell))
            if ok and self.hull is not None:
                # the relax runner's energies: MP2020 corrections for potentials on the raw DFT scale
                keys = energy_keys(atoms, energy, self.hull, energy_scale(self.settings.calculator))
                if "relax_error" in keys:
                    raise ValueError(keys["relax_error"])
                kvp.update(e_form=keys["e_form"], e_above_hull=keys["e_above_hull"])  # the key `relax` writes
                if "energy_correction" in keys:
                    kvp["energy_correction"] = keys["energy_correction"]
            if not ok:
                kvp["relax_error"] = "left the cell bounds" if math.isfinite(energy) else "energy not finite"
        except Exception as exc:  # a pathological candidate must not end the search
            kvp["relax_error"] = f"{type(exc).__name__}: {exc}"[:200]
            ok = False
        if ok:
            kvp["raw_score"] = -kvp["e_above_hull"] if self.hull is not None else -kvp["energy_per_atom"]
        else:
            kvp["raw_score"] = FAILED_SCORE
            self._calc = None  # a calculator that raised may hold a broken state
        return ok


# Potentials whose energies sit on the Materials Project scale (after the relax runner's MP2020 corrections),
# so an E_hull against the MP-20 hull shipped in the package means something; other calculators (EMT, a
# user's own) rank by energy.
MP_SCALE_POTENTIALS = ("chgnet", "sevenn")


def default_score(calculator: str | None) -> str:
    """``e_hull`` for the built-in ML potentials (the MP-20 hull ships in the package), else ``energy``."""
    return "e_hull" if calculator in MP_SCALE_POTENTIALS else "energy"


# ---------------------------------------------------------------- composition helpers


def charge_balanced_compositions(elements: Sequence[str], max_atoms: int) -> list[dict[str, int]]:
    """Every composition with at least one atom of each element, at most ``max_atoms`` sites, charge balanced."""
    from ase_llmgen.ga.radii import charge_balanced

    out = []
    k = len(elements)
    for total in range(k, max_atoms + 1):
        for cuts in itertools.combinations(range(1, total), k - 1):
            counts = [b - a for a, b in zip((0, *cuts), (*cuts, total), strict=True)]
            comp = dict(zip(elements, counts, strict=True))
            if charge_balanced(comp):
                out.append(comp)
    return out


def estimated_volume(numbers: Sequence[int]) -> float:
    """A starting cell volume (A^3): 1.5 covalent-sphere volumes per atom, at least 8 A^3 each."""
    return float(sum(max(8.0, 1.5 * 4 / 3 * math.pi * covalent_radii[z] ** 3) for z in numbers))


class SameCompositionComparator:
    """Compare only structures with the same atoms (``OFPComparator`` needs equal sizes and elements)."""

    def __init__(self, comparator: Any):
        self.comparator = comparator

    def looks_like(self, a1: Atoms, a2: Atoms) -> bool:
        if sorted(a1.numbers) != sorted(a2.numbers):
            return False
        return self.comparator.looks_like(a1, a2)


def cell_bounds():
    """``ase_ga`` cell bounds of the search (angles 30-150 deg, lengths 2-30 A, as ASE's bulk tutorial)."""
    from ase_ga.utilities import CellBounds

    return CellBounds(
        bounds={"phi": [30, 150], "chi": [30, 150], "psi": [30, 150], "a": [2, 30], "b": [2, 30], "c": [2, 30]}
    )


class RandomStart:
    """``ase_ga``'s ``StartGenerator`` at the fixed composition, or at a random charge-balanced one of the system."""

    def __init__(self, settings: SearchSettings, blmin: dict, cellbounds: Any):
        self.settings, self.blmin, self.cellbounds = settings, blmin, cellbounds
        numbers = settings.numbers()
        self.compositions = (
            [numbers]
            if numbers is not None
            else [
                [atomic_numbers[s] for s, n in comp.items() for _ in range(n)]
                for comp in charge_balanced_compositions(settings.elements(), settings.max_atoms)
            ]
        )
        if not self.compositions:
            raise ValueError(
                f"no charge-balanced composition of {settings.system} with at most {settings.max_atoms} atoms"
            )
        self.rng: Any = np.random

    def get_new_candidate(self, maxiter: int | None = None) -> Atoms | None:
        from ase_ga.startgenerator import StartGenerator

        numbers = self.compositions[int(self.rng.randint(len(self.compositions)))]
        generator = StartGenerator(
            Atoms("", pbc=True),
            numbers,
            self.blmin,
            box_volume=estimated_volume(numbers),
            number_of_variable_cell_vectors=3,
            cellbounds=self.cellbounds,
            rng=self.rng,
        )
        atoms = generator.get_new_candidate(maxiter=maxiter)
        if atoms is not None:
            atoms.info.update({"task": "random", "source": "random"})
        return atoms


# ---------------------------------------------------------------------- the search


def operator_for(step: int, weights: dict[str, int], seed: int) -> str:
    """The operator of offspring ``step``: rounds of ``sum(weights)`` draws without replacement.

    A pure function of (seed, step), so a resumed search keeps the schedule.
    """
    bag = [name for name, w in sorted(weights.items()) for _ in range(w)]
    rnd = np.random.RandomState([seed, 7919, step // len(bag)])
    return bag[rnd.permutation(len(bag))[step % len(bag)]]


@dataclass
class _Search:
    """The live objects of one search (built by :func:`run_search`)."""

    settings: SearchSettings
    operators: dict[str, Any]
    start: Any
    sampler: Any
    blmin: dict
    cellbounds: Any

    def reseed(self, *key: int) -> np.random.RandomState:
        """One RandomState for everything random in this step (operators, start generators, population)."""
        rng = np.random.RandomState([self.settings.seed, *key])
        for op in (*self.operators.values(), self.start, getattr(self.start, "fallback", None)):
            if op is not None and hasattr(op, "rng"):
                op.rng = rng
        if self.sampler is not None:
            # Batch numbers unique to this step: a resumed run must not redraw the first batches.
            self.sampler.batches = 1_000 * (1_000 * key[0] + key[1])
        return rng


def _sampler(settings: SearchSettings, numbers_max: int):
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sampler import Sampler

    sample_settings = SampleSettings(
        temperature=settings.temperature,
        cell_temperature=settings.cell_temperature,
        top_p=settings.top_p,
        batch_size=settings.batch_size,
        max_atoms=numbers_max,
        elements=settings.elements(),
    )
    return Sampler(load_model(settings.model), sample_settings, seed=settings.seed)


def build_search(settings: SearchSettings) -> _Search:
    """The start generator and operators of a search (the model is loaded only when an LLM part is used)."""
    from ase_ga.cutandsplicepairing import CutAndSplicePairing
    from ase_ga.standardmutations import PermutationMutation, RattleMutation, StrainMutation
    from ase_ga.utilities import closest_distances_generator

    from ase_llmgen.ga.operators import LLMInfillMutation, LLMRegenerationMutation, LLMStartGenerator
    from ase_llmgen.ga.radii import charge_balanced

    elements = settings.elements()
    numbers = settings.numbers()
    natoms = len(numbers) if numbers is not None else settings.max_atoms
    blmin = closest_distances_generator([atomic_numbers[s] for s in elements], ratio_of_covalent_radii=0.6)
    bounds = cell_bounds()
    weights = settings.operator_weights()
    uses_llm = settings.start == "llm" or bool(set(weights) & set(LLM_WEIGHTS))
    sampler = _sampler(settings, natoms) if uses_llm else None
    if "infill" in weights and sampler is not None and sampler.codec.mask is None:
        raise ValueError(
            f"model {settings.model!r} writes the {sampler.codec.name!r} codec, which has no infill: "
            "give weights without 'infill', or a model of another codec"
        )
    slab = Atoms("", pbc=True)
    factories: dict[str, Callable[[], Any]] = {
        # n_top is set per offspring (system searches vary the cell size)
        "pairing": lambda: CutAndSplicePairing(
            slab, natoms, blmin, p1=1.0, p2=0.0, minfrac=0.15, number_of_variable_cell_vectors=3, cellbounds=bounds
        ),
        "strain": lambda: StrainMutation(blmin, stddev=0.7, cellbounds=bounds, number_of_variable_cell_vectors=3),
        "permutation": lambda: PermutationMutation(None, probability=0.33, blmin=blmin),
        "rattle": lambda: RattleMutation(blmin, None, rattle_strength=0.8, rattle_prop=0.4),
        "regeneration": lambda: LLMRegenerationMutation(
            sampler, blmin=blmin, cellbounds=bounds, max_draws=settings.max_draws
        ),
        "infill": lambda: LLMInfillMutation(sampler, n_candidates=settings.batch_size, elements=elements),
    }
    operators = {name: factories[name]() for name in weights}
    random_start = RandomStart(settings, blmin, bounds)
    if settings.start == "llm":
        need = set(elements)

        def accept(atoms: Atoms) -> bool:  # a system search wants every element, charge balanced
            symbols = atoms.get_chemical_symbols()
            return set(symbols) == need and charge_balanced(symbols)

        start: Any = LLMStartGenerator(
            sampler,
            stoichiometry=numbers,
            blmin=blmin,
            cellbounds=bounds,
            max_draws=settings.max_draws,
            fallback=random_start,
            accept=None if numbers is not None else accept,
        )
    else:
        start = random_start
    return _Search(settings, operators, start, sampler, blmin, bounds)


def _stored_settings(db_path: Path) -> dict | None:
    from ase.db import connect

    rows = list(connect(db_path).select(simulation_cell=True, limit=1))
    if not rows:
        raise ValueError(f"{db_path} is not an ase_ga database (no simulation_cell row); use another file")
    return rows[0].data.get("ase_llmgen_search")


def _prepare(db_path: Path, settings: SearchSettings) -> None:
    """Create the database, or check that an existing one holds this search."""
    from ase_ga.data import PrepareDB

    identity = settings.identity()
    if db_path.exists():
        stored = _stored_settings(db_path)
        if stored is None:
            raise ValueError(f"{db_path} holds an ase_ga search not made by ase-llmgen search; use another file")
        differs = {k: (stored.get(k), v) for k, v in identity.items() if stored.get(k) != v}
        if differs:
            detail = "; ".join(f"{k}: database {a!r}, now {b!r}" for k, (a, b) in differs.items())
            raise ValueError(f"{db_path} holds another search ({detail}); use another file or the same settings")
        return
    numbers = settings.numbers()
    PrepareDB(
        str(db_path),
        simulation_cell=Atoms("", pbc=True),
        stoichiometry=numbers if numbers is not None else [],
        population_size=settings.population,
        ase_llmgen_search=identity,
    )


def _gaids(db, **selection) -> set[int]:
    return {row.gaid for row in db.select("gaid", **selection)}


def _fill_start(db_path: Path, search: _Search, bar) -> None:
    """Add start candidates until the population is complete (the i-th one seeded by i)."""
    from ase_ga.data import DataConnection

    from ase_llmgen.ga.operators import provenance_pairs

    da = DataConnection(str(db_path))
    have = len(_gaids(da.c, origin="StartingCandidateUnrelaxed"))
    for i in range(have, search.settings.population):
        search.reseed(0, i)
        candidate = search.start.get_new_candidate(maxiter=None if search.settings.start == "llm" else 1000)
        if candidate is None:
            raise RuntimeError(
                f"the start generator gave no candidate for {search.settings.composition or search.settings.system}"
            )
        pairs = provenance_pairs(candidate)
        # Written as PrepareDB.add_unrelaxed_candidate does, on an already prepared database.
        gaid = da.c.write(candidate, origin="StartingCandidateUnrelaxed", relaxed=0, generation=0, extinct=0, **pairs)
        da.c.update(gaid, gaid=gaid)
        bar.set_postfix_str(f"start {i + 1}/{search.settings.population}")


def _relax_pending(da, scorer: Scorer, cellbounds: Any, bar) -> int:
    """Relax every candidate written but not yet relaxed (after an interruption: at most one per writer)."""
    done = 0
    while da.get_number_of_unrelaxed_candidates() > 0:
        atoms = da.get_an_unrelaxed_candidate()
        atoms.info.setdefault("key_value_pairs", {})
        ok = scorer(atoms, cellbounds)
        da.add_relaxed_step(atoms)
        if not ok:
            da.kill_candidate(atoms.info["confid"])
        done += 1
        bar.update(1)
        _postfix(bar, atoms)
    return done


def _postfix(bar, atoms: Atoms) -> None:
    kvp = atoms.info.get("key_value_pairs", {})
    if kvp.get("raw_score", FAILED_SCORE) > FAILED_SCORE:
        bar.set_postfix_str(f"{atoms.get_chemical_formula()} score {kvp['raw_score']:+.3f}")


def _offspring(search: _Search, population, step: int, max_tries: int = 100):
    """The offspring of ``step``: the scheduled operator first, then weighted random ones until one succeeds."""
    weights = search.settings.operator_weights()
    names = sorted(weights)
    failures: Counter = Counter()
    for attempt in range(max_tries):
        rng = search.reseed(step + 1, attempt)
        population.rng = rng
        if attempt == 0:
            name = operator_for(step, weights, search.settings.seed)
        else:
            p = np.array([weights[n] for n in names], dtype=float)
            name = names[int(rng.choice(len(names), p=p / p.sum()))]
        op = search.operators[name]
        parents = population.get_two_candidates()
        if parents is None:
            raise RuntimeError("fewer than two relaxed candidates survive: nothing to breed from")
        a1, a2 = parents
        if op.min_inputs == 2 and sorted(a1.numbers) != sorted(a2.numbers):
            failures[f"{name}: parents differ in composition"] += 1
            continue
        if op.min_inputs == 2 and not np.array_equal(a1.numbers, a2.numbers):
            a2 = _same_order(a2, a1.numbers)  # cut-and-splice needs the same order of atoms
        if hasattr(op, "n_top") and name == "pairing":
            op.n_top = len(a1)
        try:
            child, description = op.get_new_individual([a1, a2])
        except Exception as exc:  # an ase_ga operator on an odd cell: a failed try, not a crash
            child, description = None, f"{name}: {type(exc).__name__}"
        if child is not None:
            child.info["key_value_pairs"]["operator"] = name
            return child, description, failures
        failures[description.split(" (")[0]] += 1
    raise RuntimeError(f"no operator made an offspring in {max_tries} tries: {dict(failures)}")


def _same_order(atoms: Atoms, numbers: Sequence[int]) -> Atoms:
    order = np.argsort(atoms.numbers, kind="stable")[np.argsort(np.argsort(numbers, kind="stable"), kind="stable")]
    out = atoms[order]
    out.info = atoms.info
    return out


def run_search(
    db: str | Path,
    settings: SearchSettings | None = None,
    calculator: str | Callable[[], Any] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> dict:
    """Run (or continue) a search into the ``ase_ga`` database ``db``; returns a summary.

    ``settings`` or keyword arguments of :class:`SearchSettings`.  ``calculator``: a
    registered calculator's name, or a factory returning an ASE calculator (overrides
    ``settings.calculator``, which the database records).  The summary: relaxations
    done in total and now, best candidates, offspring per operator, failed tries.
    """
    from ase_ga.data import DataConnection
    from ase_ga.ofp_comparator import OFPComparator
    from ase_ga.population import Population
    from tqdm.auto import tqdm

    settings = settings or SearchSettings(**kwargs)
    if settings.score is None:
        settings.score = default_score(settings.calculator)
    if settings.score == "energy" and not settings.fixed() and settings.calculator == "chgnet":
        warnings.warn(
            "score='energy' compares energies per atom of different compositions: use score='e_hull'",
            stacklevel=2,
        )
    db_path = Path(db)
    _prepare(db_path, settings)
    scorer = Scorer(settings, calculator)
    search = build_search(settings)
    da = DataConnection(str(db_path))
    total = settings.population * (settings.generations + 1)
    started = time.time()
    done_before = len(_gaids(da.c, relaxed=1))
    bar = tqdm(total=total, initial=min(done_before, total), desc="search relaxations", disable=not progress)
    failures: Counter = Counter()
    try:
        _fill_start(db_path, search, bar)
        _relax_pending(da, scorer, search.cellbounds, bar)
        comparator = SameCompositionComparator(
            OFPComparator(
                n_top=None, dE=1.0, cos_dist_max=1e-3, rcut=10.0, binwidth=0.05, pbc=[True] * 3, sigma=0.05, nsigma=4
            )
        )
        population = Population(da, settings.population, comparator, use_extinct=True)
        while True:
            relaxed = _gaids(da.c, relaxed=1)
            if len(relaxed) >= total:
                break
            # Offspring already written (relaxed or not): the next one's number.
            step = len(_gaids(da.c, relaxed=0)) - len(_gaids(da.c, origin="StartingCandidateUnrelaxed"))
            child, description, failed = _offspring(search, population, step)
            failures.update(failed)
            da.add_unrelaxed_candidate(child, description=description)
            _relax_pending(da, scorer, search.cellbounds, bar)
            population.update()
    finally:
        bar.close()
    return summarize(
        db_path,
        extra={
            "seconds": round(time.time() - started, 1),
            "failed_tries": dict(failures),
            "relaxed_now": len(_gaids(da.c, relaxed=1)) - done_before,
            "operator_counts": {
                k: dict(getattr(op, "counts", {})) for k, op in search.operators.items() if getattr(op, "counts", None)
            },
        },
    )


def summarize(db: str | Path, top: int = 5, extra: dict | None = None) -> dict:
    """What a search database holds: relaxations, offspring per operator, the best candidates."""
    from ase.db import connect

    con = connect(db)
    rows = list(con.select(relaxed=1))
    good = sorted((r for r in rows if r.get("raw_score", FAILED_SCORE) > FAILED_SCORE), key=lambda r: -r.raw_score)
    out: dict = {
        "db": str(db),
        "relaxed": len(rows),
        "failed": len(rows) - len(good),
        "origins": dict(Counter(r.get("origin", "?") for r in rows)),
        "sources": dict(Counter(r.get("source", "?") for r in rows if r.get("origin") == "StartingCandidateUnrelaxed")),
        "best": [
            {
                "gaid": r.gaid,
                "formula": r.formula,
                "raw_score": round(r.raw_score, 5),
                "energy_per_atom": round(r.get("energy_per_atom", math.nan), 5),
                **({"e_above_hull": round(r.e_above_hull, 5)} if "e_above_hull" in r else {}),
                "origin": r.get("origin"),
            }
            for r in good[:top]
        ],
    }
    out.update(extra or {})
    return out


__all__ = [
    "SameCompositionComparator",
    "Scorer",
    "SearchSettings",
    "build_search",
    "calculator_factory",
    "default_score",
    "charge_balanced_compositions",
    "operator_for",
    "run_search",
    "summarize",
]
