"""LLM sampling as ASE and pymatgen structure sources.

>>> from ase_llmgen.sampling.sources import LLMStructureSource
>>> source = LLMStructureSource(formula="NaCl", spacegroup=225, seed=1)
>>> atoms_list = source.take(4)           # ase.Atoms, provenance in atoms.info

``iter(source)`` yields ``ase.Atoms`` forever; :func:`generate_structures` is
the pymatgen twin.  For ``ase_ga`` start populations see
:class:`ase_llmgen.ga.operators.LLMStartGenerator`.
"""

from __future__ import annotations

from collections.abc import Iterator

from ase import Atoms
from pymatgen.core import Structure

from ase_llmgen.convert import to_structure
from ase_llmgen.models.bundle import LMBundle, load_model
from ase_llmgen.sampling.sampler import Sampler, SampleSettings, SampleStats
from ase_llmgen.text.prompts import Conditions


def _bundle(model: str | LMBundle | None) -> LMBundle:
    return model if isinstance(model, LMBundle) else load_model(model)


class LLMStructureSource:
    """An endless, seeded source of generated crystals as ``ase.Atoms``.

    Conditions (any subset) steer generation; a formula is enforced exactly by
    the grammar unless ``enforce_formula=False``; no two sites are sampled closer
    than ``min_distance`` A when it is above 0 (the distance guard, off by default).
    Cells have ``min_atoms..max_atoms`` sites.  ``stats`` counts every draw,
    including the rejected ones.
    """

    def __init__(
        self,
        model: str | LMBundle | None = "default",
        formula: str | None = None,
        spacegroup: int | None = None,
        e_above_hull: float | None = None,
        band_gap: float | None = None,
        formation_energy: float | None = None,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int = 0,
        max_atoms: int = 20,
        elements: tuple[str, ...] | None = None,
        batch_size: int = 64,
        min_atoms: int = 1,
        constrained: bool = True,
        first_batch: int = 0,
        require_valid: bool = True,
        enforce_formula: bool = True,
        min_distance: float = 0.0,
    ):
        self.conditions = Conditions(formula, spacegroup, formation_energy, band_gap, e_above_hull)
        settings = SampleSettings(
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            max_atoms=max_atoms,
            min_atoms=min_atoms,
            elements=tuple(elements) if elements else None,
            constrained=constrained,
            require_valid=require_valid,
            enforce_formula=enforce_formula,
            min_distance=min_distance,
        )
        self.sampler = Sampler(_bundle(model), settings, seed, first_batch=first_batch)
        self.stats = SampleStats()

    def _wrap(self, atoms: Atoms):
        atoms.info["task"] = "generate"
        return atoms

    def __iter__(self) -> Iterator[Atoms]:
        for atoms in self.sampler.iter_structures(self.conditions, self.stats):
            yield self._wrap(atoms)

    def take(self, n: int) -> list[Atoms]:
        """The next ``n`` structures; fewer if ``n * max_attempts_factor`` draws do not give them."""
        out: list[Atoms] = []
        budget = self.stats.drawn + n * self.sampler.settings.max_attempts_factor
        for atoms in self.sampler.iter_structures(self.conditions, self.stats, max_draws=budget):
            out.append(self._wrap(atoms))
            if len(out) >= n:
                break
        return out


class PymatgenStructureSource(LLMStructureSource):
    """The same source yielding pymatgen ``Structure`` objects (provenance in ``.properties``)."""

    def _wrap(self, atoms: Atoms) -> Structure:
        structure = to_structure(super()._wrap(atoms))
        structure.properties.update(atoms.info)
        return structure


def generate_atoms(n: int, model: str | LMBundle | None = "default", **kwargs) -> list[Atoms]:
    """``n`` generated crystals as ``ase.Atoms`` (keyword arguments as :class:`LLMStructureSource`)."""
    return LLMStructureSource(model, **kwargs).take(n)


def generate_structures(n: int, model: str | LMBundle | None = "default", **kwargs) -> list[Structure]:
    """``n`` generated crystals as pymatgen ``Structure`` objects."""
    return PymatgenStructureSource(model, **kwargs).take(n)
