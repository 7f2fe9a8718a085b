"""Ship a trained small model as the package's built-in default: float16 safetensors, same folder layout.

Usage: python bench/ship_model.py runs/default_continue/model [--to ase_llmgen/models/default]
       [--cell-temperature T] [--release TAG]

Float16 halves the package size; the loader computes in float32. The script reports the validation-style loss
of both precisions on a few MP-20 val crystals (training data: a sanity check of the rounding, not a metric).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ase_llmgen.data.curriculum import CurriculumConfig, training_text
from ase_llmgen.data.readers import read_records
from ase_llmgen.models.bundle import DEFAULT_MODEL_DIR, load_model, save_bundle
from ase_llmgen.training.config import TrainConfig
from ase_llmgen.training.loop import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a trained model folder (e.g. runs/<name>/model)")
    parser.add_argument("--to", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--check-data", dest="check_data", default=str(SHARED / "mp_20" / "val.csv"))
    parser.add_argument(
        "--cell-temperature",
        dest="cell_temperature",
        type=float,
        help="ship with this sampling default (measured on val.csv first; the built-in wyckoff model: 0.9)",
    )
    parser.add_argument(
        "--release",
        help="a tag for a model that replaces a built-in one under the same name (e.g. the date): part of every "
        "generation request, so a rerun never tops up the earlier model's database with this one's samples",
    )
    args = parser.parse_args()

    bundle = load_model(args.source)
    if args.cell_temperature is not None:
        bundle.meta["sampling_defaults"] = {"cell_temperature": args.cell_temperature}
    if args.release:
        bundle.meta["release"] = args.release
    if bundle.family != "scratch":
        raise SystemExit(f"{args.source}: only small (scratch) models ship in the package, this is {bundle.family!r}")
    checks = {}
    if Path(args.check_data).exists():
        records, _ = read_records(args.check_data, "skip")
        # The model's own curriculum (its codec and site order), so a wyckoff model is checked on wyckoff texts.
        curriculum = CurriculumConfig.of(bundle.meta.get("train_config", {}))
        texts = [training_text(r, np.random.default_rng([7, i]), curriculum) for i, r in enumerate(records[:64])]
        config = TrainConfig(max_len=bundle.model.config.max_position_embeddings, batch_size=16)
        checks["float32"] = evaluate(bundle.model, bundle.tokenizer, texts, config, torch.device("cpu"))
    bundle.model.half()
    target = Path(args.to)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # write beside, then swap
        save_bundle(bundle, tmp)
        half = load_model(tmp)
        if Path(args.check_data).exists():
            checks["float16"] = evaluate(half.model, half.tokenizer, texts, config, torch.device("cpu"))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(tmp, target)
    target.chmod(0o755)  # mkdtemp's 0700 would come along
    for path in target.iterdir():
        path.chmod(0o644)
    size = sum(p.stat().st_size for p in target.iterdir())
    print(json.dumps({"to": str(target), "bytes": size, "loss_nats_per_token_and_char": checks}, indent=2))


if __name__ == "__main__":
    main()
