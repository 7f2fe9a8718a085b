"""Language-model operators for ``ase_ga`` genetic searches.

* :class:`LLMInfillMutation` -- the paper's infill mutation: mask one element,
  let the model name replacements, keep those with a similar ionic radius in
  the same oxidation state and a charge-neutral result.
* :class:`UniformSubstitution` -- the paper's baseline: a random swap from the
  same radius table.
* :class:`LLMRegenerationMutation` -- resample a crystal conditioned on the
  parent's formula (optionally its space group), for fixed-composition searches.
* :class:`LLMStartGenerator` -- seeds a population from the model, optionally at
  a fixed stoichiometry (atoms in the stoichiometry's order, as
  ``CutAndSplicePairing`` requires).

The mutations are ``ase_ga.offspring_creator.OffspringCreator`` subclasses:
``get_new_individual(parents)`` returns ``(atoms, description)`` or
``(None, description)`` when no offspring qualifies, ``mutate(atoms)`` works
inside a ``CombinationMutation``.  Bad model output is a failed try, never an
exception.  Provenance lands in ``atoms.info`` (model, temperature, seed, task,
...) and, for offspring, in ``info['key_value_pairs']`` so that ``ase_ga``'s
``DataConnection`` stores it as searchable ``ase db`` keys.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from ase_ga.offspring_creator import OffspringCreator

from ase_llmgen.ga.radii import charge_balanced, guess_oxidation_states, similar_substitutes

if TYPE_CHECKING:  # annotations only: the operators take a Sampler, built by the caller or the plugin
    from ase_llmgen.sampling.sampler import Sampler, SampleStats
    from ase_llmgen.text.prompts import Conditions

# atoms.info keys copied into ASE-db key-value pairs (the spine's provenance keys plus the GA's own).
PROVENANCE_KEYS = (
    "model",
    "temperature",
    "top_p",
    "cell_temperature",
    "seed",
    "task",
    "constrained",
    "source",
    "substitution",
    "oxidation_state",
)


# ---------------------------------------------------------------- helpers


def provenance_pairs(atoms: Atoms) -> dict:
    """ASE-db key-value pairs for the provenance in ``atoms.info``.

    Use with ``PrepareDB.add_unrelaxed_candidate(atoms, **provenance_pairs(atoms))``:
    ``ase_ga`` does not store ``atoms.info`` of start candidates by itself.
    Requested conditions become ``req_formula``, ``req_spacegroup``, ...
    """
    from ase_llmgen.checks.database import db_safe_pairs

    info = atoms.info
    pairs = {k: info[k] for k in PROVENANCE_KEYS if isinstance(info.get(k), (bool, int, float, str))}
    for name, value in (info.get("conditions") or {}).items():
        if isinstance(value, (bool, int, float, str)):
            pairs[f"req_{name}"] = value
    return db_safe_pairs(pairs)  # a parent of formula NaN must not stop the GA


def _description(descriptor: str, detail: str) -> str:
    # ase_ga splits descriptions at ':' and asserts exactly one.
    return f"mutation: {descriptor} {detail.replace(':', ';')}".rstrip()


def _sampler_provenance(sampler: Sampler) -> dict:
    settings = getattr(sampler, "settings", None)
    bundle = getattr(sampler, "bundle", None)
    out = {
        "model": getattr(bundle, "name", None) or type(sampler).__name__,
        "temperature": getattr(settings, "temperature", None),
        "top_p": getattr(settings, "top_p", None),
        "cell_temperature": getattr(settings, "cell_temperature", None),
        "seed": getattr(sampler, "seed", None),
    }
    return {k: v for k, v in out.items() if v is not None}


def _masked_text(sampler: Any, atoms: Atoms, element: str) -> str:
    """``atoms`` as the sampler's model learnt to write it (its codec and site order), ``element`` masked.

    A stand-in sampler without :meth:`~ase_llmgen.sampling.sampler.Sampler.masked_text` is taken to
    write the default codec, in its model's site order.
    """
    method = getattr(sampler, "masked_text", None)
    if method is not None:
        return method(atoms, element)
    from ase_llmgen.plugins import get_codec

    codec = get_codec()  # the default codec
    order = getattr(getattr(sampler, "bundle", None), "site_order", codec.site_orders[0])
    return codec.masked(codec.encode(codec.ordered(atoms, order)), element)


@contextmanager
def restricted(
    sampler: Sampler,
    elements: Iterable[str] | None,
    max_atoms: int | None,
    min_atoms: int | None = None,
    min_distance: float | None = None,
):
    """Temporarily restrict a sampler's grammar to ``elements`` and ``min_atoms..max_atoms`` sites.

    Constrained decoding then only writes crystals that can have the wanted
    composition, instead of drawing many that are thrown away.  ``elements``
    replaces the sampler's own element set: the wanted composition needs
    exactly these, whatever the sampler was set up with.  ``min_distance``
    raises the sampler's distance guard (never lowers it; it is off by default).
    """
    settings = getattr(sampler, "settings", None)
    if settings is None or not dataclasses.is_dataclass(settings):
        yield
        return
    changes: dict = {}
    if elements is not None:
        changes["elements"] = tuple(sorted(set(elements)))
    if max_atoms is not None:
        changes["max_atoms"] = int(max_atoms)
    fields = {f.name for f in dataclasses.fields(settings)}
    if min_atoms is not None and "min_atoms" in fields:
        changes["min_atoms"] = int(min_atoms)
    if min_distance is not None and "min_distance" in fields and min_distance > settings.min_distance:
        changes["min_distance"] = float(min_distance)
    sampler.settings = dataclasses.replace(settings, **changes)
    try:
        yield
    finally:
        sampler.settings = settings


def draw_batch(
    sampler: Sampler, conditions: Conditions | None, accept: Callable[[Atoms], bool] | None, stats: SampleStats
) -> list[Atoms]:
    """All accepted structures of exactly one sampler batch.

    ``iter_structures`` checks its draw budget between batches, so a budget of
    one batch returns every hit of that batch instead of discarding the rest.
    """
    batch = getattr(getattr(sampler, "settings", None), "batch_size", 1)
    return list(sampler.iter_structures(conditions, stats, accept=accept, max_draws=stats.drawn + batch))


def draw_screened(
    sampler: Sampler, conditions: Conditions | None, screen: Callable[[Atoms], Atoms | None], stats: SampleStats
) -> list[Atoms]:
    """One batch of structures turned into candidates by ``screen`` (``None`` rejects).

    The sampler adds its provenance (text, model, temperature, ...) only after
    ``accept`` said yes, so it is copied onto the candidates here.
    """
    made: dict[int, Atoms] = {}

    def accept(sample: Atoms) -> bool:
        child = screen(sample)
        if child is not None:
            made[id(sample)] = child  # accepted samples stay alive in the batch list: ids are unique
        return child is not None

    out = []
    for sample in draw_batch(sampler, conditions, accept, stats):
        child = made[id(sample)]
        child.info.update(sample.info)
        out.append(child)
    return out


def _counts(numbers: Sequence[int]) -> Counter:
    return Counter(int(z) for z in numbers)


def _repeat_for(cell: np.ndarray, factor: int) -> tuple[int, int, int]:
    """The repetition (n1, n2, n3) with n1*n2*n3 = factor giving the most compact supercell."""
    lengths = np.linalg.norm(np.asarray(cell), axis=1)
    best, best_score = (factor, 1, 1), -1.0
    for n1 in range(1, factor + 1):
        for n2 in range(1, factor // n1 + 1):
            if factor % (n1 * n2):
                continue
            reps = (n1, n2, factor // (n1 * n2))
            score = float(np.min(lengths * reps))  # shortest supercell edge: larger is more compact
            if score > best_score:
                best, best_score = reps, score
    return best


def fit_to_numbers(atoms: Atoms, numbers: Sequence[int], allow_supercells: bool = True) -> Atoms | None:
    """``atoms`` with exactly the atomic numbers ``numbers`` in that order, or ``None``.

    A sample whose composition is ``numbers``' divided by an integer k is
    repeated k times first (the model writes primitive cells; a GA cell may be
    larger).  Sites are then reordered so ``child.numbers == numbers``: what
    ``CutAndSplicePairing`` and ``OFPComparator`` need.
    """
    want, have = _counts(numbers), _counts(atoms.numbers)
    if set(want) != set(have) or len(atoms) == 0:
        return None
    factor = len(numbers) // len(atoms)
    if len(numbers) % len(atoms) or (factor > 1 and not allow_supercells):
        return None
    if any(have[z] * factor != want[z] for z in want):
        return None
    if factor > 1:
        atoms = atoms.repeat(_repeat_for(atoms.cell, factor))
    slots: dict[int, list[int]] = {}
    for i, z in enumerate(atoms.numbers):
        slots.setdefault(int(z), []).append(i)
    order = [slots[int(z)].pop(0) for z in numbers]
    child = Atoms(numbers=list(numbers), positions=atoms.positions[order], cell=atoms.cell, pbc=True)
    child.wrap()
    child.info = dict(atoms.info)
    return child


def guard_distance(blmin: dict | None, numbers: Sequence[int] | None) -> float | None:
    """The shortest bond ``blmin`` allows among ``numbers``' elements (all of ``blmin`` when ``None``).

    A sample with two sites closer than this fails the ``blmin`` screen, so the
    sampler's distance guard can use it to steer the model away from samples
    that would be thrown away.  (The guard measures the true minimum image,
    ``ase_ga``'s ``atoms_too_close`` only the neighbouring cells: in a strongly
    skewed cell the guard also keeps out a pair the screen would have missed.)
    """
    if not blmin:
        return None
    present = None if numbers is None else {int(z) for z in numbers}
    lengths = [d for (a, b), d in blmin.items() if present is None or (a in present and b in present)]
    return min(lengths) if lengths else None


def _geometry_ok(atoms: Atoms, blmin: dict | None, cellbounds: Any | None) -> bool:
    """``ase_ga``'s own screens: minimum distances and cell bounds."""
    from ase_ga.utilities import atoms_too_close

    if cellbounds is not None and not cellbounds.is_within_bounds(atoms.cell):
        return False
    if blmin is not None:
        try:
            return not atoms_too_close(atoms, blmin)
        except KeyError:  # blmin lacks a pair of these elements: cannot vouch for it
            return False
    return True


def _screen(
    sample: Atoms,
    numbers: Sequence[int] | None,
    allow_supercells: bool,
    blmin: dict | None,
    cellbounds: Any | None,
    counts: Counter,
) -> Atoms | None:
    """``sample`` fitted to ``numbers`` (any composition when ``None``) and screened, or ``None``."""
    child = sample.copy() if numbers is None else fit_to_numbers(sample, numbers, allow_supercells)
    if child is None:
        counts["rejected: composition"] += 1
        return None
    if not _geometry_ok(child, blmin, cellbounds):
        counts["rejected: geometry"] += 1
        return None
    return child


def _as_numbers(stoichiometry: Any) -> list[int] | None:
    """A stoichiometry (formula, symbols, atomic numbers or ``{symbol: count}``) as atomic numbers, in order."""
    if stoichiometry is None:
        return None
    if isinstance(stoichiometry, str):
        from ase.symbols import string2symbols

        symbols: list = list(string2symbols(stoichiometry))
    elif isinstance(stoichiometry, dict):
        symbols = [s for s, n in stoichiometry.items() for _ in range(int(n))]
    else:
        symbols = list(stoichiometry)
    numbers = [int(s) if not isinstance(s, str) else atomic_numbers[s] for s in symbols]
    if not numbers or min(numbers) < 1:
        raise ValueError(f"not a stoichiometry: {stoichiometry!r}")
    return numbers


def _reduced_formula(numbers: Sequence[int]) -> str:
    from pymatgen.core import Composition

    return Composition(dict(Counter(chemical_symbols[z] for z in numbers))).reduced_formula


class _Substitution(OffspringCreator):
    """Shared machinery: replace every site of one element by another, keeping cell and positions."""

    descriptor_name = "Substitution"

    def __init__(self, max_tries: int = 3, verbose: bool = False, rng=np.random):
        super().__init__(verbose=verbose, rng=rng)
        self.descriptor = self.descriptor_name
        self.min_inputs = 1
        self.max_tries = max_tries
        self.last_reason = ""
        self.counts: Counter = Counter()  # what was proposed and why it was rejected

    def get_new_individual(self, parents):
        f = parents[0]
        indi = self.mutate(f)
        if indi is None:
            return None, _description(self.descriptor, f"failed ({self.last_reason})")
        detail = indi.info.get("substitution", "")
        indi = self.initialize_individual(f, indi)
        indi.info["data"]["parents"] = [f.info["confid"]]
        indi.info["key_value_pairs"].update(provenance_pairs(indi))
        return self.finalize_individual(indi), _description(self.descriptor, detail)

    def _fail(self, reason: str) -> None:
        self.last_reason = reason
        self.counts["failed"] += 1
        if self.verbose:
            print(f"{self.descriptor}: {reason}")
        return None

    def _site_states(self, atoms: Atoms) -> dict | None:
        states = guess_oxidation_states(atoms.get_chemical_symbols())
        if states is None:
            self._fail(f"no charge-neutral oxidation states for {atoms.get_chemical_formula()}")
        return states

    def _order(self, symbols: Iterable[str]) -> list[str]:
        # Deterministic order before the rng draws, so a seeded rng reproduces a run.
        symbols = sorted(set(symbols))
        return [symbols[i] for i in self.rng.permutation(len(symbols))]

    @staticmethod
    def substitute(atoms: Atoms, old: str, new: str) -> Atoms:
        """A copy of ``atoms`` with every ``old`` site made ``new`` (positions and cell kept)."""
        child = Atoms(
            atoms.get_chemical_symbols(),
            positions=atoms.positions,
            cell=atoms.cell,
            pbc=atoms.pbc,
            tags=atoms.get_tags(),
        )
        z = atomic_numbers[new]
        child.numbers[atoms.numbers == atomic_numbers[old]] = z
        child.info = {"substitution": f"{old}->{new}"}
        return child

    @staticmethod
    def balanced_after(atoms: Atoms, old: str, new: str) -> bool:
        """Whether the composition with ``old`` replaced by ``new`` can be charge neutral."""
        counts = Counter(atoms.get_chemical_symbols())
        counts[new] += counts.pop(old)
        return charge_balanced(dict(counts))


class LLMInfillMutation(_Substitution):
    """The paper's infill mutation: the model proposes an element for a masked one.

    One element of the parent is chosen at random and its sites are masked
    (``[MASK]``) in the crystal text of the model's codec.  The model samples
    ``n_candidates`` replacements (with the sampler's temperature and top-p);
    a replacement qualifies when its radius in the masked element's oxidation
    state is within ``tolerance`` A and the new composition is charge neutral
    (:mod:`ase_llmgen.ga.radii`).  One qualifying sample is drawn (so frequent
    proposals are more likely) and substituted on every site of the masked
    element.  Up to ``max_tries`` elements are tried before giving up with
    ``(None, reason)``.

    ``elements`` restricts what may come in (e.g. what a calculator supports);
    ``constrain_decoding=True`` restricts the model's answer to qualifying
    elements, pushing the radius filter into decoding instead of rejecting.
    """

    descriptor_name = "LLMInfillMutation"

    def __init__(
        self,
        sampler: Sampler,
        n_candidates: int = 16,
        tolerance: float = 0.1,
        max_tries: int = 3,
        elements: Iterable[str] | None = None,
        common_only: bool = True,
        constrain_decoding: bool = False,
        verbose: bool = False,
        rng=np.random,
    ):
        super().__init__(max_tries=max_tries, verbose=verbose, rng=rng)
        self.sampler = sampler
        self.n_candidates = n_candidates
        self.tolerance = tolerance
        if elements is None:  # the sampler's own element restriction, if any, limits what may come in
            elements = getattr(getattr(sampler, "settings", None), "elements", None)
        self.elements = tuple(sorted(set(elements))) if elements is not None else None
        self.common_only = common_only
        self.constrain_decoding = constrain_decoding

    def candidates(self, atoms: Atoms, element: str, state: int) -> list[str]:
        """Elements that would pass the radius filter for ``element`` in ``atoms``."""
        return similar_substitutes(element, state, self.tolerance, self.common_only, self.elements)

    def propose(self, atoms: Atoms, element: str, allowed: Sequence[str] | None = None) -> list[str]:
        """Raw model proposals for the masked ``element`` (may be empty; never raises on bad output)."""
        masked = _masked_text(self.sampler, atoms, element)
        try:
            answers = self.sampler.infill(masked, self.n_candidates, elements=allowed or self.elements)
        except Exception as exc:  # a model failure is a failed try, not a crashed GA
            self.counts["model errors"] += 1
            self.last_reason = f"model error {type(exc).__name__}"
            return []
        return [a for a in answers if isinstance(a, str)]

    def filter(self, atoms: Atoms, element: str, state: int, proposals: Iterable[str]) -> list[str]:
        """The proposals that qualify (same state, radius within tolerance, charge neutral), with repeats."""
        similar = set(self.candidates(atoms, element, state))
        kept = []
        for new in proposals:
            self.counts["proposed"] += 1
            if new == element:
                self.counts["rejected: same element"] += 1
            elif new not in similar:
                self.counts["rejected: radius or oxidation state"] += 1
            elif not self.balanced_after(atoms, element, new):
                self.counts["rejected: charge balance"] += 1
            else:
                self.counts["qualified"] += 1
                kept.append(new)
        return kept

    def mutate(self, atoms: Atoms) -> Atoms | None:
        """A substituted copy of ``atoms``, or ``None`` (reason in ``last_reason``)."""
        try:
            states = self._site_states(atoms)
        except Exception as exc:  # pymatgen on an exotic composition
            return self._fail(f"oxidation states failed ({type(exc).__name__})")
        if states is None:
            return None
        # Only elements with some substitute in the table are worth a model call.
        choices = [
            el for el in self._order(states) if isinstance(states[el], int) and self.candidates(atoms, el, states[el])
        ]
        if not choices:
            return self._fail(
                f"no element of {atoms.get_chemical_formula()} has a substitute within "
                f"{self.tolerance} A in its oxidation state"
            )
        for attempt in range(self.max_tries):
            element = choices[attempt % len(choices)]
            state = states[element]
            allowed = self.candidates(atoms, element, state) if self.constrain_decoding else None
            kept = self.filter(atoms, element, state, self.propose(atoms, element, allowed))
            if kept:
                new = kept[int(self.rng.choice(len(kept)))]
                child = self.substitute(atoms, element, new)
                child.info.update(_sampler_provenance(self.sampler))
                child.info.update(
                    {
                        "task": "infill",
                        "source": "llm",
                        "oxidation_state": state,
                        "proposals": len(kept),
                        "tries": attempt + 1,
                    }
                )
                self.counts["offspring"] += 1
                return child
        return self._fail(f"no qualifying proposal in {self.max_tries} tries of {self.n_candidates}")


class UniformSubstitution(_Substitution):
    """The paper's baseline: swap one element for a random one from the same radius table.

    The replacement is drawn uniformly from the elements with a radius within
    ``tolerance`` A in the same oxidation state that keep the composition
    charge neutral.
    """

    descriptor_name = "UniformSubstitution"

    def __init__(
        self,
        tolerance: float = 0.1,
        elements: Iterable[str] | None = None,
        common_only: bool = True,
        verbose: bool = False,
        rng=np.random,
    ):
        super().__init__(verbose=verbose, rng=rng)
        self.tolerance = tolerance
        self.elements = tuple(sorted(set(elements))) if elements is not None else None
        self.common_only = common_only

    def mutate(self, atoms: Atoms) -> Atoms | None:
        """A substituted copy of ``atoms``, or ``None`` (reason in ``last_reason``)."""
        try:
            states = self._site_states(atoms)
        except Exception as exc:
            return self._fail(f"oxidation states failed ({type(exc).__name__})")
        if states is None:
            return None
        for element in self._order(states):
            state = states[element]
            if not isinstance(state, int):
                continue
            options = [
                new
                for new in similar_substitutes(element, state, self.tolerance, self.common_only, self.elements)
                if self.balanced_after(atoms, element, new)
            ]
            if options:
                new = options[int(self.rng.choice(len(options)))]
                child = self.substitute(atoms, element, new)
                child.info.update({"task": "substitution", "source": "uniform", "oxidation_state": state})
                self.counts["offspring"] += 1
                return child
        return self._fail(
            f"no element of {atoms.get_chemical_formula()} has a charge-neutral substitute within {self.tolerance} A"
        )


class LLMRegenerationMutation(OffspringCreator):
    """Resample a crystal with the parent's composition from the model.

    The prompt asks for the parent's reduced formula (and, with
    ``use_spacegroup``, its space group found by spglib at ``symprec``).
    Decoding is restricted to the parent's elements and atom count; samples
    with the parent's composition (or an integer fraction of it, repeated into
    a supercell when ``allow_supercells``) are kept, screened with ``blmin`` and
    ``cellbounds`` when given, and returned with atomic numbers in the
    parent's order.  Hits beyond the first are kept for later calls with the
    same composition.  ``max_draws`` model samples are spent per call at most.
    """

    def __init__(
        self,
        sampler: Sampler,
        use_spacegroup: bool = False,
        symprec: float = 0.2,
        max_draws: int = 64,
        allow_supercells: bool = True,
        blmin: dict | None = None,
        cellbounds: Any | None = None,
        verbose: bool = False,
        rng=np.random,
    ):
        super().__init__(verbose=verbose, rng=rng)
        self.descriptor = "LLMRegenerationMutation"
        self.min_inputs = 1
        self.sampler = sampler
        self.use_spacegroup = use_spacegroup
        self.symprec = symprec
        self.max_draws = max_draws
        self.allow_supercells = allow_supercells
        self.blmin, self.cellbounds = blmin, cellbounds
        self.last_reason = ""
        self.counts: Counter = Counter()
        self._pool: dict[tuple, list[Atoms]] = {}

    def conditions_for(self, atoms: Atoms):
        """The prompt conditions for resampling ``atoms``."""
        from ase_llmgen.checks.symmetry import detect_spacegroup
        from ase_llmgen.text.prompts import Conditions

        spacegroup = None
        if self.use_spacegroup:
            found = detect_spacegroup(atoms, symprec=self.symprec)
            spacegroup = found.number if found else None
        return Conditions(formula=_reduced_formula(atoms.numbers), spacegroup=spacegroup)

    def mutate(self, atoms: Atoms) -> Atoms | None:
        """A freshly sampled crystal with ``atoms``' numbers, or ``None`` (reason in ``last_reason``)."""
        from ase_llmgen.sampling.sampler import SampleStats

        numbers = [int(z) for z in atoms.numbers]
        try:
            conditions = self.conditions_for(atoms)
        except Exception as exc:
            self.last_reason = f"cannot build the prompt ({type(exc).__name__})"
            return None
        key = (tuple(numbers), conditions)
        if key not in self._pool and len(self._pool) >= 16:  # bounded memory over a long search
            self._pool.pop(next(iter(self._pool)))
        pool = self._pool.setdefault(key, [])
        stats = SampleStats()

        def screen(sample: Atoms) -> Atoms | None:
            return _screen(sample, numbers, self.allow_supercells, self.blmin, self.cellbounds, self.counts)

        exact = None if self.allow_supercells else len(numbers)
        guard = guard_distance(self.blmin, numbers)
        with restricted(self.sampler, {chemical_symbols[z] for z in numbers}, len(numbers), exact, guard):
            while not pool and stats.drawn < self.max_draws:
                try:
                    pool.extend(draw_screened(self.sampler, conditions, screen, stats))
                except Exception as exc:  # bad model output must not crash the GA
                    self.counts["model errors"] += 1
                    self.last_reason = f"model error {type(exc).__name__}"
                    break
        self.counts["drawn"] += stats.drawn
        if not pool:
            self.last_reason = self.last_reason or f"no sample of {conditions.formula} in {stats.drawn} draws"
            self.counts["failed"] += 1
            return None
        self.last_reason = ""
        child = pool.pop(0)
        del pool[64:]  # keep the buffer small
        child.info.update({"task": "regenerate", "source": "llm", "conditions": conditions.as_dict()})
        self.counts["offspring"] += 1
        return child

    def get_new_individual(self, parents):
        f = parents[0]
        indi = self.mutate(f)
        if indi is None:
            return None, _description(self.descriptor, f"failed ({self.last_reason})")
        detail = indi.info["conditions"].get("formula", "")
        indi = self.initialize_individual(f, indi)
        indi.info["data"]["parents"] = [f.info["confid"]]
        indi.info["key_value_pairs"].update(provenance_pairs(indi))
        if "text" in indi.info:
            indi.info["data"]["text"] = indi.info["text"]
        return self.finalize_individual(indi), _description(self.descriptor, detail)


class LLMStartGenerator:
    """An ``ase_ga`` start generator drawing candidates from the model.

    Drop-in for ``ase_ga.startgenerator.StartGenerator``: call
    ``get_new_candidate()`` for each member of the starting population.

    With ``stoichiometry`` (a formula like ``"Cu6Au2"``, symbols, atomic numbers,
    or ``{symbol: count}``) the prompt asks for its reduced formula, decoding is
    restricted to its elements and atom count, and only samples with that
    composition (or an integer fraction of it, as a supercell) are kept, their
    atoms in the stoichiometry's order.  ``blmin`` and ``cellbounds`` screen
    candidates as ``StartGenerator`` does; ``conditions`` adds further prompt
    conditions (e.g. ``Conditions(spacegroup=225)``; its formula is replaced).

    ``maxiter`` of ``get_new_candidate`` bounds the model samples drawn for that
    candidate (default ``max_draws``).  When the budget runs out the
    ``fallback`` start generator (e.g. a classic ``StartGenerator``) is asked
    instead; without one, ``None`` is returned when ``maxiter`` was given (as
    ``StartGenerator`` does) and ``RuntimeError`` raised otherwise.
    ``atoms.info['source']`` says which made each candidate ('llm' or 'fallback').
    ``accept`` (``Atoms -> bool``) is a further screen of the model's candidates,
    e.g. that a chemical-system search gets every element of the system.
    """

    def __init__(
        self,
        sampler: Sampler,
        stoichiometry: Any = None,
        conditions: Any = None,
        blmin: dict | None = None,
        cellbounds: Any | None = None,
        max_draws: int = 256,
        allow_supercells: bool = True,
        fallback: Any | None = None,
        verbose: bool = False,
        accept: Callable[[Atoms], bool] | None = None,
    ):
        from ase_llmgen.text.prompts import Conditions

        self.sampler = sampler
        self.numbers = _as_numbers(stoichiometry)
        base = conditions or Conditions()
        if self.numbers is not None:
            base = dataclasses.replace(base, formula=_reduced_formula(self.numbers), formula_units=None)
        self.conditions = base
        self.blmin, self.cellbounds = blmin, cellbounds
        self.max_draws = max_draws
        self.allow_supercells = allow_supercells
        self.fallback = fallback
        self.verbose = verbose
        self.accept = accept
        self.counts: Counter = Counter()
        self._pool: list[Atoms] = []

    def _screen(self, sample: Atoms) -> Atoms | None:
        child = _screen(sample, self.numbers, self.allow_supercells, self.blmin, self.cellbounds, self.counts)
        if child is not None and self.accept is not None and not self.accept(child):
            self.counts["rejected: accept"] += 1
            return None
        return child

    def get_new_candidate(self, maxiter: int | None = None) -> Atoms | None:
        """A new starting candidate (see the class docstring for the budget and fallback)."""
        from ase_llmgen.sampling.sampler import SampleStats

        budget = self.max_draws if maxiter is None else maxiter
        stats = SampleStats()
        elements = None if self.numbers is None else {chemical_symbols[z] for z in self.numbers}
        max_atoms = None if self.numbers is None else len(self.numbers)
        exact = max_atoms if not self.allow_supercells else None
        guard = guard_distance(self.blmin, self.numbers)
        with restricted(self.sampler, elements, max_atoms, exact, guard):
            while not self._pool and stats.drawn < budget:
                try:
                    self._pool.extend(draw_screened(self.sampler, self.conditions, self._screen, stats))
                except Exception as exc:  # bad model output must not stop the seeding
                    self.counts["model errors"] += 1
                    if self.verbose:
                        print(f"LLMStartGenerator: model error {exc!r}")
                    break
        self.counts["drawn"] += stats.drawn
        if self._pool:
            atoms = self._pool.pop(0)
            atoms.info.update({"task": "generate", "source": "llm"})
            self.counts["from model"] += 1
            return atoms
        if self.fallback is not None:
            atoms = self.fallback.get_new_candidate(maxiter)
            if atoms is not None:
                atoms.info.update({"task": "generate", "source": "fallback"})
                self.counts["from fallback"] += 1
            return atoms
        if maxiter is not None:
            return None
        what = self.conditions.formula or "a crystal"
        raise RuntimeError(
            f"the model gave no acceptable {what} in {stats.drawn} draws "
            f"({dict(self.counts)}); pass fallback=StartGenerator(...) or a larger max_draws"
        )


__all__ = [
    "LLMInfillMutation",
    "LLMRegenerationMutation",
    "LLMStartGenerator",
    "UniformSubstitution",
    "draw_batch",
    "draw_screened",
    "fit_to_numbers",
    "guard_distance",
    "provenance_pairs",
    "restricted",
]
