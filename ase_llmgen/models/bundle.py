"""Load and save models: one folder per model, safetensors only, no remote code.

A model folder holds the Hugging Face files (``config.json``,
``model.safetensors`` or a PEFT adapter, tokenizer files) plus
``ase_llmgen.json`` saying which family it is and how it was trained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ase_llmgen.registry import DEFAULT_CODEC

META_FILE = "ase_llmgen.json"
# Models shipped in the package, by name: folders beside this module.
MODELS_DIR = Path(__file__).parent
DEFAULT_MODEL_DIR = MODELS_DIR / "default"
BUILTIN_MODELS = {
    "default": "paper format (P1 text: lattice, then element and coordinates per site); MP-20 val.csv; "
    "used by mutate, the GA operators and band-gap requests",
    "wyckoff": "wyckoff format (space group, free lattice parameters, Wyckoff orbits); MP-20 train.csv; "
    "used by generate (cell temperature 0.9); writes exactly the space group asked for",
}
# The built-in model `generate` uses when none is named: trained on MP-20 train.csv (the paper's protocol), it
# beats "default" (val.csv only) on Table 1 (docs/benchmarks.md), and its grammar writes a space group's Wyckoff
# orbits, so every crystal of a space-group request has the group's operations (the paper format cannot).
GENERATE_MODEL = "wyckoff"
# Conditions GENERATE_MODEL never learnt (band gap is blank in train.csv): a request for one goes to "default".
GENERATE_MODEL_LACKS = ("band_gap",)


@dataclass
class LMBundle:
    """A causal LM, its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    family: str
    name: str
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def site_order(self) -> str:
        """The order of sites in the texts the model was trained on (the paper codec's: "as_read" or "spatial")."""
        return learnt_site_order(self.meta)

    @property
    def codec_name(self) -> str:
        """The name of the codec (crystal text format) the model was trained on."""
        return learnt_codec(self.meta)

    @property
    def knows_formula_units(self) -> bool:
        """Whether the model's prompts stated formula units (its curriculum's ``formula_units`` or
        ``formula_first`` above 0)."""
        config = self.meta.get("train_config", {})
        return bool(config.get("formula_units") or config.get("formula_first"))

    @property
    def codec(self) -> Any:
        """The registered :class:`~ase_llmgen.registry.Codec` the model writes (``KeyError`` if not registered)."""
        from ase_llmgen.plugins import get_codec

        return get_codec(self.codec_name)


def learnt_site_order(meta: dict) -> str:
    """The site order of the texts a model with metadata ``meta`` was trained on ("as_read" if not recorded)."""
    return meta.get("train_config", {}).get("site_order") or "as_read"


def learnt_codec(meta: dict) -> str:
    """The codec of the texts a model with metadata ``meta`` learnt: ``codec``, else its training config's,
    else the paper's (models made before codecs were recorded, the shipped default among them)."""
    return meta.get("codec") or meta.get("train_config", {}).get("codec") or DEFAULT_CODEC


def offline() -> None:
    """Make sure nothing tries the Hugging Face hub (no network at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_for(conditions: Mapping[str, Any] | None = None) -> str:
    """The built-in model to use when none is named, for a request's ``conditions`` (name -> value).

    :data:`GENERATE_MODEL` ("wyckoff"), unless the request asks for a condition it never learnt
    (:data:`GENERATE_MODEL_LACKS`: a band gap), which "default" learnt from MP-20 val.csv.
    """
    asked = {name for name, value in (conditions or {}).items() if value is not None}
    return "default" if asked & set(GENERATE_MODEL_LACKS) else GENERATE_MODEL


def resolve(name_or_path: str | os.PathLike | None) -> Path | str:
    """``None``/"default" or another built-in name -> its shipped folder; "smollm2" stays a name; else a path."""
    name = "default" if name_or_path in (None, "") else str(name_or_path)
    names = ", ".join(f"'{n}'" for n in (*BUILTIN_MODELS, "smollm2"))
    if name in BUILTIN_MODELS:
        folder = MODELS_DIR / name
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"the built-in model {name!r} is missing from {folder}: reinstall")
        return folder
    if name == "smollm2":
        return "smollm2"
    path = Path(name_or_path)
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"{path} is a file, not a model folder (or give one of {names})")
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist (or give one of {names})")
    return path


def read_meta(path: Path) -> dict:
    meta_path = Path(path) / META_FILE
    return json.loads(meta_path.read_text()) if meta_path.exists() else {}


def write_meta(path: Path, meta: dict) -> None:
    (Path(path) / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_bundle(bundle: LMBundle, path: str | os.PathLike) -> None:
    """Save a model folder: safetensors weights (a PEFT model saves its adapter alone), tokenizer, metadata."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(path, safe_serialization=True)
    bundle.tokenizer.save_pretrained(path)
    write_meta(path, bundle.meta)


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "cpu") -> LMBundle:
    """Load a model folder (or a built-in name: "default", "wyckoff"; or "smollm2") through its family."""
    from ase_llmgen.plugins import model_families

    offline()
    where = resolve(name_or_path)
    if isinstance(where, Path):
        _refuse_pickled_weights(where)
    if where == "smollm2":
        family = "lora"
    elif (Path(where) / "adapter_config.json").exists():
        family = "lora"
    else:
        family = read_meta(Path(where)).get("family", "scratch")
    families = model_families()
    if family not in families:
        raise KeyError(f"{where}: model family {family!r} is not registered ({', '.join(families)})")
    bundle = families[family].load(where)
    if isinstance(where, Path) and where.parent == MODELS_DIR and where.name in BUILTIN_MODELS:
        bundle.name = where.name  # provenance names the shipped model, not where it is installed
    bundle.model.to(device).eval()
    return bundle


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickled_weights(path: Path) -> None:
    """A folder whose weights are only pickles is refused by name: unpickling runs code from the file."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{path}: weights only as pickles ({', '.join(pickles)}); ase-llmgen loads safetensors only "
            "(save with save_pretrained(safe_serialization=True))"
        )


def token_ids(tokenizer: Any, text: str, eos: bool) -> list[int]:
    """Ids of ``text`` as training and sampling both see it: [BOS] text [EOS]."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return head + ids + ([tokenizer.eos_token_id] if eos else [])
