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
from ase_llmgen.models.bundle import LMBundle, load_model, model_for
from ase_llmgen.sampling.sampler import Sampler, SampleSettings, SampleStats
from ase_llmgen.text.prompts import Conditions


def as_bundle(model: str | LMBundle | None) -> LMBundle:
    """``model`` if it is a loaded :class:`LMBundle`, else the model folder (or "default") loaded."""
    return model if isinstance(model, LMBundle) else load_model(model)


def make_sampler(
    model: str | LMBundle | None = "default", settings: SampleSettings | None = None, seed: int | None = 0, **overrides
) -> Sampler:
    """A :class:`Sampler` of ``model`` with ``settings`` (keyword overrides of its fields allowed)."""
    return Sampler(as_bundle(model), SampleSettings.of(settings, **overrides), seed if seed is not None else 0)


class LLMStructureSource:
    """An endless, seeded source of generated crystals as ``ase.Atoms``.

    Conditions (any subset) steer generation.  ``model`` is a model folder, a loaded
    :class:`LMBundle` or a built-in name; ``None`` picks the built-in one for the request:
    "wyckoff" (a space group asked for is written in its Wyckoff orbits), or "default" for
    a band-gap request (:func:`~ase_llmgen.models.bundle.model_for`).  How to sample is one
    :class:`~ase_llmgen.sampling.settings.SampleSettings` (``settings``), or keyword
    overrides of its fields (``temperature=1.0``, ``max_atoms=8``, ...): a formula is
    enforced exactly by the grammar unless ``enforce_formula=False``; no two sites are
    sampled closer than ``min_distance`` A when it is above 0 (the distance guard, off by
    default); cells have ``min_atoms..max_atoms`` sites.  ``stats`` counts every draw,
    including the rejected ones.
    """

    def __init__(
        self,
        model: str | LMBundle | None = None,
        formula: str | None = None,
        spacegroup: int | None = None,
        e_above_hull: float | None = None,
        band_gap: float | None = None,
        formation_energy: float | None = None,
        settings: SampleSettings | None = None,
        seed: int = 0,
        first_batch: int = 0,
        formula_units: int | None = None,
        **overrides,
    ):
        self.conditions = Conditions(
            formula, spacegroup, formation_energy, band_gap, e_above_hull, formula_units=formula_units
        )
        settings = SampleSettings.of(settings, **overrides)
        if model is None:
            model = model_for(self.conditions.as_dict())
        self.sampler = Sampler(as_bundle(model), settings, seed, first_batch=first_batch)
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


def generate_atoms(n: int, model: str | LMBundle | None = None, **kwargs) -> list[Atoms]:
    """``n`` generated crystals as ``ase.Atoms`` (keyword arguments as :class:`LLMStructureSource`)."""
    return LLMStructureSource(model, **kwargs).take(n)


def generate_structures(n: int, model: str | LMBundle | None = None, **kwargs) -> list[Structure]:
    """``n`` generated crystals as pymatgen ``Structure`` objects."""
    return PymatgenStructureSource(model, **kwargs).take(n)
