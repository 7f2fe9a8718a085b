"""Training configuration: a dataclass, readable from TOML or YAML."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults train the shipped small model."""

    data: str = ""  # CDVAE CSV, ASE db or ASE-readable file
    # more structures for training only, never in the validation split (e.g. the model's own
    # valid samples for a self-distillation round; docs/benchmarks.md section 8)
    extra_data: list[str] = field(default_factory=list)
    out: str = "runs/model"
    family: str = "scratch"  # "scratch" or "lora"
    # start from an existing model folder ("default" = the shipped one) instead of fresh weights;
    # its architecture wins over the size settings below
    init_from: str = ""
    # small model (scratch)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    max_len: int = 512
    coordinate_tokens: bool = False  # "0.00".."0.99" as single tokens (about half the tokens per crystal)
    # pretrained + LoRA
    base: str = "smollm2"
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # optimisation
    epochs: float = 10.0
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # curriculum
    infill_fraction: float = 1 / 3
    conditional: bool = True
    translate: bool = True
    permute: bool = False
    # "as_read" (the paper) or "spatial": sites sorted by fractional x, y, z (data/curriculum.py);
    # "" = the order of the init_from model (the shipped default: "spatial"), else "as_read"
    site_order: str = ""
    # bookkeeping
    val_fraction: float = 0.05
    val_examples: int = 256
    eval_every: int = 200
    save_every: int = 200
    time_limit_min: float = 0.0  # stop (after saving) when exceeded; 0 = no limit
    # sample crystals every this many steps and log their validity (training/sample_check.py); 0 = off
    sample_every: int = 0
    sample_n: int = 64
    sample_temperature: float = 0.7
    # keep the best model by a logged metric in <out>/best: "" (off), "val_loss", "val_nats_per_char",
    # "sample_struct_valid", "sample_comp_valid" or "sample_valid_at_data_mix" (the last three need sample_every)
    keep_best: str = ""
    seed: int = 0  # curriculum draws and initial weights
    split_seed: int | None = None  # validation split; None = seed (keep it fixed when continuing a model)
    threads: int = 0  # torch threads on CPU; 0 = all cores
    on_error: str = "raise"  # bad data rows: "raise" or "skip"

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a TOML or YAML file (flat keys); ``overrides`` win over the file."""
        path = Path(path)
        text = path.read_text()
        yaml_file = path.suffix.lower() in (".yaml", ".yml")
        try:
            if yaml_file:
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = tomllib.loads(text)
        except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError: name the file
            raise ValueError(f"{path}: not valid {'YAML' if yaml_file else 'TOML'}: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected 'key = value' settings, got a {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        for f in fields(cls):
            if f.name in values and not _fits(values[f.name], f.type):
                raise ValueError(f"{path}: {f.name} = {values[f.name]!r} should be {f.type}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        """All settings as a plain dict (as saved with a model)."""
        return asdict(self)


def _fits(value: object, annotation: str) -> bool:
    """Whether a value read from a file suits a field annotated ``annotation`` (a string, as written)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int" or annotation == "int | None":
        return (isinstance(value, int) and not isinstance(value, bool)) or (value is None and "None" in annotation)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return True
