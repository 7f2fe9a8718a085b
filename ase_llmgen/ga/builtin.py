"""Built-in GA mutation operators, registered through the ``register_mutators`` hook.

Factories take keyword arguments only.  The LLM ones accept ``model`` (a model
folder, ``"default"`` or an ``LMBundle``), the sampling settings (``temperature``,
``top_p``, ``batch_size``, ``max_atoms``, ``elements``) and ``seed``; everything
else goes to the operator class (see :mod:`ase_llmgen.ga.operators`).  torch and
the model are only imported when a factory is called, so listing plugins stays
cheap.

>>> from ase_llmgen.plugins import mutators
>>> op = mutators()["uniform_substitution"].factory(seed=1)
"""

from __future__ import annotations

from typing import Any

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import GeneratorSpec, MutatorSpec


def _rng(seed: int | None):
    import numpy as np

    # ase_ga operators call the legacy API (randint, random): a RandomState has both.
    return np.random.RandomState(seed)


def _sampler(kwargs: dict) -> Any:
    """Build a Sampler from the sampling keywords in ``kwargs`` (removed from it)."""
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings
    from ase_llmgen.sampling.sources import _bundle

    model = kwargs.pop("model", "default")
    seed = kwargs.get("seed", 0)
    fields = SampleSettings.__dataclass_fields__
    settings = SampleSettings(**{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
    if settings.elements is not None:
        settings.elements = tuple(settings.elements)
    return Sampler(_bundle(model), settings, seed if seed is not None else 0)


def _llm_infill(**kwargs) -> Any:
    from ase_llmgen.ga.operators import LLMInfillMutation

    sampler = _sampler(kwargs)
    return LLMInfillMutation(sampler, rng=_rng(kwargs.pop("seed", 0)), **kwargs)


def _uniform(**kwargs) -> Any:
    from ase_llmgen.ga.operators import UniformSubstitution

    # Sampling keywords (model, temperature, ...) may be passed by generic callers: the baseline ignores them.
    for key in ("model", "temperature", "top_p", "batch_size", "max_atoms", "constrained"):
        kwargs.pop(key, None)
    return UniformSubstitution(rng=_rng(kwargs.pop("seed", 0)), **kwargs)


def _llm_regeneration(**kwargs) -> Any:
    from ase_llmgen.ga.operators import LLMRegenerationMutation

    sampler = _sampler(kwargs)
    return LLMRegenerationMutation(sampler, rng=_rng(kwargs.pop("seed", 0)), **kwargs)


@hookimpl
def register_mutators() -> list[MutatorSpec]:
    return [
        MutatorSpec(
            "llm_infill",
            _llm_infill,
            "paper infill: model proposes an element for a masked one; similar radius, same charge",
        ),
        MutatorSpec(
            "uniform_substitution",
            _uniform,
            "baseline: random swap within 0.1 A ionic radius, same oxidation state, charge neutral",
        ),
        MutatorSpec(
            "llm_regeneration",
            _llm_regeneration,
            "resample a crystal with the parent's formula (optionally space group) from the model",
        ),
    ]


def _guided(**kwargs) -> Any:
    from ase_llmgen.ga.guided import GuidedStructureSource

    return GuidedStructureSource(**kwargs)


@hookimpl
def register_generators() -> list[GeneratorSpec]:
    # Guided sampling needs a potential and a hull, which the GA side owns: it registers here.
    return [
        GeneratorSpec(
            "llm_guided",
            _guided,
            "energy-guided sampling: best of k model samples by a potential's single-point E_hull (CHGNet)",
        )
    ]
