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


@hookimpl
def register_generators() -> list[GeneratorSpec]:
    return [
        GeneratorSpec("llm", _llm, "LLM sampling (optionally conditioned) yielding ase.Atoms"),
        GeneratorSpec("llm_pymatgen", _llm_pymatgen, "the same, yielding pymatgen Structure"),
    ]
