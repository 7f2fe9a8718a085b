"""Built-in model families, registered through the ``register_models`` hook."""

from __future__ import annotations

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import ModelFamily


def _load_scratch(path):
    from ase_llmgen.models import scratch

    return scratch.load(path)


def _load_lora(path):
    from ase_llmgen.models import lora

    return lora.load(path)


@hookimpl
def register_models() -> list[ModelFamily]:
    return [
        ModelFamily("scratch", _load_scratch, "small Llama trained from scratch, crystal tokenizer"),
        ModelFamily("lora", _load_lora, "pretrained causal LM (SmolLM2 or local HF folder) + PEFT LoRA"),
    ]
