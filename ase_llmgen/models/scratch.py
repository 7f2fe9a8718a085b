"""The small model trained from scratch (the LM-CH / CrystaLLM route).

A compact ``LlamaForCausalLM`` from transformers' own classes with the crystal
tokenizer of :mod:`ase_llmgen.models.tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ase_llmgen.models.bundle import LMBundle, read_meta, save_bundle
from ase_llmgen.models.tokenizer import build_tokenizer
from ase_llmgen.registry import DEFAULT_CODEC


def build(
    d_model: int = 256,
    n_layers: int = 4,
    n_heads: int = 8,
    max_len: int = 512,
    seed: int = 0,
    coordinate_tokens: bool = False,
    codec: str = DEFAULT_CODEC,
) -> LMBundle:
    """A freshly initialised small Llama with the crystal tokenizer of ``codec`` (a registered codec's name;
    ``coordinate_tokens``: see the tokenizer)."""
    import torch

    tokenizer = build_tokenizer(coordinate_tokens, codec)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=max_len,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    meta = {
        "family": "scratch",
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "max_len": max_len,
        "coordinate_tokens": coordinate_tokens,
        "codec": codec,
    }
    return LMBundle(model, tokenizer, "scratch", "scratch", meta)


def load(path: Path) -> LMBundle:
    """Load a saved small model (safetensors weights)."""
    import torch

    # Weights may be stored in float16 to keep the package small; compute in float32 on CPU.
    model = LlamaForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LMBundle(model, tokenizer, "scratch", str(path), read_meta(path))


save = save_bundle
