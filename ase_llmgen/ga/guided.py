"""Energy-guided sampling: best-of-k crystals scored by a cheap potential.

>>> from ase_llmgen.ga.guided import GuidedStructureSource
>>> source = GuidedStructureSource(k=4, seed=0)      # CHGNet single points, E_hull against MP-20
>>> atoms_list = source.take(10)                      # doctest: +SKIP

For every crystal it yields, the source draws ``k`` valid crystals from the model
(the same grammar-constrained sampler as :class:`~ase_llmgen.sampling.sources.LLMStructureSource`),
scores each with one single-point energy of an ASE calculator (CHGNet by default), and yields
the best ``keep`` of them.  The score is the estimated energy above the MP-20 hull of the
*unrelaxed* crystal (``score="e_hull"``, CHGNet's MP-compatible energies) or its energy per
atom (``score="energy"``: only meaningful when all candidates share a composition, e.g. with
a formula condition).  Candidates the potential cannot score (an element without a reference
energy, a calculator error) rank last; with ``require_comp_valid`` (the default) only
SMACT-valid compositions are considered, as the paper's stability rates do.

Why best-of-k and not a tree search over the decoding: the potential can only score a
complete crystal, so a search over partial texts (beam search, or MCTS as in CrystaLLM)
must also roll each node out to a complete crystal and pay one potential call per rollout.
Here a complete sample costs less than a potential call (the small model draws a batch of
16-64 crystals in about a second on a CPU; a CHGNet single point of a small cell takes
~0.05-0.2 s, a relaxation 1-5 s), so spending the calls on independent, batched samples
buys the same selection pressure without the tree's sequential bookkeeping, and the score
goes where the cost is: only the selected crystals are relaxed downstream.

Each yielded ``Atoms`` carries its provenance (``atoms.info``) plus ``guided_score`` (the
score, eV/atom), ``guided_k``, ``guided_rank`` (0 = best of its group), ``guided_group``
and ``guided_energy_per_atom``; ``stats`` counts every model draw and ``scored`` every
potential call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from ase import Atoms

from ase_llmgen.sampling.sources import LLMStructureSource


class GuidedStructureSource(LLMStructureSource):
    """An endless source of crystals, each the best of ``k`` model samples under a potential.

    Keyword arguments as :class:`LLMStructureSource` (model, default "default", the paper-format
    model of the GA benchmarks; conditions, ``settings`` or
    overrides of its fields: temperature, top-p, max_atoms, elements, ...; seed), plus ``k``
    (samples scored per group), ``keep`` (best of each group yielded), ``calculator`` (a
    registered calculator's name, or a factory of an ASE calculator), ``calculator_settings``,
    ``score`` (``"e_hull"`` or ``"energy"``; default ``e_hull`` for CHGNet when the MP-20 hull
    data is found, else ``energy``), ``hull`` (a
    :class:`~ase_llmgen.metrics.stability.ReferenceHull`; default: the MP-20 one) and
    ``require_comp_valid``.
    """

    def __init__(
        self,
        model: Any = "default",
        k: int = 4,
        keep: int = 1,
        calculator: str | Callable[[], Any] = "chgnet",
        calculator_settings: dict | None = None,
        score: str | None = None,
        hull: Any = None,
        require_comp_valid: bool = True,
        **kwargs: Any,
    ):
        from ase_llmgen.ga.search import calculator_factory, default_score

        if k < 1 or not 1 <= keep <= k:
            raise ValueError(f"need k >= 1 and 1 <= keep <= k, got k={k}, keep={keep}")
        if kwargs.get("settings") is None:  # a caller's own settings keep their batch size
            kwargs.setdefault("batch_size", max(16, k))
        super().__init__(model, **kwargs)
        self.k, self.keep = k, keep
        self.factory = calculator_factory(calculator, calculator_settings or {})
        self.score = score or default_score(calculator if isinstance(calculator, str) else None)
        if self.score not in ("e_hull", "energy"):
            raise ValueError(f"score must be 'e_hull' or 'energy', got {self.score!r}")
        if self.score == "e_hull" and hull is None:
            from ase_llmgen.metrics.stability import default_reference_hull

            hull = default_reference_hull()
        self.hull = hull
        self.require_comp_valid = require_comp_valid
        self.scored = 0
        self.groups = 0
        self._calc = None

    def _candidate(self, atoms: Atoms) -> bool:
        if not self.require_comp_valid:
            return True
        from ase_llmgen.checks.validity import compositionally_valid

        try:
            return bool(compositionally_valid(atoms.get_chemical_symbols()))
        except Exception:  # model output is untrusted: an odd composition is just not a candidate
            return False

    def score_atoms(self, atoms: Atoms) -> tuple[float, float]:
        """(score, energy per atom) of one unrelaxed crystal; ``(inf, nan)`` when it cannot be scored."""
        from ase_llmgen.metrics.stability import limited_threads

        if self._calc is None:
            self._calc = self.factory()
        work = atoms.copy()
        work.calc = self._calc
        self.scored += 1
        try:
            with limited_threads(1):  # a single point of a small cell gains nothing from threads
                energy = float(work.get_potential_energy()) / len(work)
            if not math.isfinite(energy):
                return math.inf, math.nan
            if self.score == "energy":
                return energy, energy
            formula = work.get_chemical_formula()
            return self.hull.e_above_hull(formula, self.hull.formation_energy(formula, energy)), energy
        except Exception:  # no reference energy for an element, or the potential failed on this cell
            self._calc = None
            return math.inf, math.nan

    def _selected(self, max_draws: int | None = None) -> Iterator[Atoms]:
        group: list[Atoms] = []
        for atoms in self.sampler.iter_structures(self.conditions, self.stats, self._candidate, max_draws):
            group.append(atoms)
            if len(group) == self.k:
                yield from self._best(group)
                group = []

    def __iter__(self) -> Iterator[Atoms]:
        return self._selected()

    def _best(self, group: list[Atoms]) -> list[Atoms]:
        scored = []
        for atoms in group:
            value, energy = self.score_atoms(atoms)
            scored.append((value, energy, atoms))
        scored.sort(key=lambda t: t[0])
        out = []
        for rank, (value, energy, atoms) in enumerate(scored[: self.keep]):
            atoms.info.update(
                task="generate",
                guided_score=value if math.isfinite(value) else 1e9,
                guided_energy_per_atom=energy if math.isfinite(energy) else 1e9,
                guided_k=self.k,
                guided_rank=rank,
                guided_group=self.groups,
                guided_by=self.score,
            )
            out.append(atoms)
        self.groups += 1
        return out

    def take(self, n: int) -> list[Atoms]:
        """The next ``n`` crystals (fewer when the sampler's redraw budget runs out)."""
        budget = self.stats.drawn + n * self.k * self.sampler.settings.max_attempts_factor // self.keep
        out: list[Atoms] = []
        for atoms in self._selected(budget):
            out.append(atoms)
            if len(out) >= n:
                break
        return out


__all__ = ["GuidedStructureSource"]
