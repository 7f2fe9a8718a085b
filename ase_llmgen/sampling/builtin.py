"""Built-in structure generators, registered through the ``register_generators`` hook."""

from __future__ import annotations

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import GeneratorSpec


def _llm(**kwargs):
    from ase_llmgen.sampling.sources import LLMStructureSource

    return LLMStructureSource(**kwargs)


def _llm_pymatgen(**kwargs):
    from ase_llmgen.sampling.sources import PymatgenStructureSource

    return PymatgenStructureSource(**kwargs)


def _ga_start(**kwargs):
    from ase_llmgen.ga.operators import LLMStartGenerator
    from ase_llmgen.sampling.sampler import Sampler, SampleSettings
    from ase_llmgen.sampling.sources import _bundle

    model = kwargs.pop("model", "default")
    seed = kwargs.pop("seed", 0)
    settings = SampleSettings(**{k: kwargs.pop(k) for k in list(kwargs) if k in SampleSettings.__dataclass_fields__})
    return LLMStartGenerator(Sampler(_bundle(model), settings, seed), **kwargs)


@hookimpl
def register_generators() -> list[GeneratorSpec]:
    return [
        GeneratorSpec("llm", _llm, "LLM sampling (optionally conditioned) yielding ase.Atoms"),
        GeneratorSpec("llm_pymatgen", _llm_pymatgen, "the same, yielding pymatgen Structure"),
        GeneratorSpec("llm_ga_start", _ga_start, "ase_ga start generator: get_new_candidate(), fixed stoichiometry"),
    ]
