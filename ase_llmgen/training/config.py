"""Training configuration: a dataclass, readable from TOML or YAML.

Recipes (the configs behind the shipped models) live in ``recipes/`` beside this
module and are named without the suffix (``ase-llmgen train --config mp20``). Their
data paths are written relative to the shared data folder (``mp_20/train.csv``), so
they run from any directory: a relative data path that does not exist from the
working directory is looked up under ``$ASE_LLMGEN_DATA`` and then in the first
``shared/data`` folder above the working directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ase_llmgen.sampling.settings import DEFAULTS

RECIPES = Path(__file__).parent / "recipes"
DATA_KEYS = ("data", "val_data")  # path-valued settings (extra_data too, a list)


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults train the shipped small model."""

    data: str = ""  # CDVAE CSV, ASE db or ASE-readable file
    # validation structures, a separate file (the paper's protocol: train on MP-20 train.csv, choose
    # checkpoints on val.csv); "" = hold out val_fraction of `data` instead
    val_data: str = ""
    # more structures for training only, never in the validation split (e.g. the model's own
    # valid samples for a self-distillation round; archive/benchmarks_by_session.md section 8)
    extra_data: list[str] = field(default_factory=list)
    out: str = "runs/model"
    family: str = "scratch"  # "scratch" or "lora"
    # start from an existing model folder ("default" = the shipped one) instead of fresh weights;
    # its architecture wins over the size settings below
    init_from: str = ""
    # let the init_from model learn another codec or site order than it did (a warm start: its weights, not its
    # format); the two formats' tokenizers must be the same. Off: continuing in another format is an error
    new_format: bool = False
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
    # the wyckoff codecs: each orbit written from a random one of its representatives (data/curriculum.py)
    random_representatives: bool = False
    # how often a prompt with the formula also gives its formula units per cell (0: never, as the paper)
    formula_units: float = 0.0
    # the share of generation texts prompted with the formula and its units alone (formula-first sampling's order)
    formula_first: float = 0.0
    # "as_read" (the paper) or "spatial": sites sorted by fractional x, y, z (data/curriculum.py);
    # "" = the order of the init_from model (the shipped default: "spatial"), else the codec's first
    site_order: str = ""
    # the crystal text format, a registered codec (`ase-llmgen plugins`); "" = the init_from model's, else "paper"
    codec: str = ""
    # bookkeeping
    val_fraction: float = 0.05
    val_examples: int = 256
    eval_every: int = 200
    save_every: int = 200
    time_limit_min: float = 0.0  # stop (after saving) when exceeded; 0 = no limit
    # sample crystals every this many steps and log their validity (training/sample_check.py); 0 = off
    sample_every: int = 0
    sample_n: int = 64
    sample_temperature: float = DEFAULTS.temperature
    # keep the best model by a logged metric in <out>/best: "" (off), "val_loss", "val_nats_per_char",
    # "sample_struct_valid", "sample_comp_valid" or "sample_valid_at_data_mix" (the last three need sample_every)
    keep_best: str = ""
    # stop once the validation loss has not improved for this many evaluations in a row; 0 = never
    patience: int = 0
    # "fp32", or "bf16": autocast matmuls to bfloat16 (CPUs with AVX512-BF16/AMX, GPUs); weights,
    # optimizer and validation loss stay float32 (docs/benchmarks.md: training speed). A CPU without
    # AVX512 (bf16 emulated) trains in fp32 instead, with a warning: emulated bf16 was 25x slower there
    precision: str = "fp32"
    seed: int = 0  # curriculum draws and initial weights
    split_seed: int | None = None  # validation split; None = seed (keep it fixed when continuing a model)
    threads: int = 0  # torch threads on CPU; 0 = all cores
    on_error: str = "raise"  # bad data rows: "raise" or "skip"

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a TOML or YAML file (flat keys), or a recipe by name; ``overrides`` win over the file.

        Data paths are resolved as the module docstring says.
        """
        path = recipe_path(path)
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

    def __post_init__(self) -> None:
        # Data paths resolve the same way from a config file, the command line or Python (module docstring).
        for key in DATA_KEYS:
            if getattr(self, key):
                setattr(self, key, resolve_data_path(getattr(self, key)))
        self.extra_data = [resolve_data_path(p) for p in self.extra_data]

    def to_dict(self) -> dict:
        """All settings as a plain dict (as saved with a model)."""
        return asdict(self)


def recipe_path(name_or_path: str | Path) -> Path:
    """A config file's path: an existing file as given, else the shipped recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipe = RECIPES / f"{name_or_path}.toml"
    if path.suffix == "" and recipe.is_file():
        return recipe
    known = sorted(p.stem for p in RECIPES.glob("*.toml"))
    raise FileNotFoundError(f"{name_or_path}: no such config file, and no shipped recipe of that name (known: {known})")


def resolve_data_path(path: str) -> str:
    """``path`` if it exists from here or is absolute, else under ``$ASE_LLMGEN_DATA`` or a ``shared/data`` above."""
    given = Path(path)
    if given.is_absolute() or given.exists():
        return path
    roots = [Path(os.environ["ASE_LLMGEN_DATA"])] if os.environ.get("ASE_LLMGEN_DATA") else []
    roots += [parent / "shared" / "data" for parent in (Path.cwd(), *Path.cwd().parents)]
    return next((str(root / given) for root in roots if (root / given).exists()), path)


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
