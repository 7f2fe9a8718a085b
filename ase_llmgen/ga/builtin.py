"""Built-in GA mutation operators, registered through the ``register_mutators`` hook.

Factories take keyword arguments only.  The LLM ones accept ``model`` (a model
folder, ``"default"`` or an ``LMBundle``), ``settings`` (a
:class:`~ase_llmgen.sampling.settings.SampleSettings`) or keyword overrides of its
fields (``temperature``, ``top_p``, ``max_atoms``, ``elements``, ...) and ``seed``; everything
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
    """A Sampler from the sampling keywords in ``kwargs`` (removed from it): ``model``, ``settings``
    (a ``SampleSettings``) and overrides of its fields; ``seed`` stays for the operator's rng."""
    from ase_llmgen.sampling.settings import SampleSettings
    from ase_llmgen.sampling.sources import make_sampler

    overrides = SampleSettings.split(kwargs)
    return make_sampler(
        kwargs.pop("model", "default"), kwargs.pop("settings", None), kwargs.get("seed", 0), **overrides
    )


def _llm_infill(**kwargs) -> Any:
    from ase_llmgen.ga.operators import LLMInfillMutation

    sampler = _sampler(kwargs)
    return LLMInfillMutation(sampler, rng=_rng(kwargs.pop("seed", 0)), **kwargs)


def _uniform(**kwargs) -> Any:
    from ase_llmgen.ga.operators import UniformSubstitution
    from ase_llmgen.sampling.settings import SampleSettings

    # Sampling keywords (model, settings, temperature, ...) may be passed by generic callers: the baseline
    # ignores them, except the element restriction it shares with the LLM operators.
    sampling = SampleSettings.split(kwargs)
    kwargs.pop("model", None)
    kwargs.pop("settings", None)
    if "elements" in sampling and "elements" not in kwargs:
        kwargs["elements"] = sampling["elements"]
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


def _ga_start(**kwargs) -> Any:
    from ase_llmgen.ga.operators import LLMStartGenerator

    sampler = _sampler(kwargs)
    kwargs.pop("seed", None)
    return LLMStartGenerator(sampler, **kwargs)


@hookimpl
def register_generators() -> list[GeneratorSpec]:
    # Generators built on GA parts (ase_ga start generators; guided sampling, which needs a potential and a
    # hull) register here, on the GA side, so that sampling never imports ga.
    return [
        GeneratorSpec("llm_ga_start", _ga_start, "ase_ga start generator: get_new_candidate(), fixed stoichiometry"),
        GeneratorSpec(
            "llm_guided",
            _guided,
            "energy-guided sampling: best of k model samples by a potential's single-point E_hull (CHGNet)",
        ),
    ]
