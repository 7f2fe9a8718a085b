"""The paper's central claim, measured: a pretrained LLM + LoRA vs a small model from scratch, same data budget.

Usage: python bench/pretrained_vs_scratch.py --data ../shared/data/mp_20/val.csv --subset 512 --epochs 2
Both arms train on the same first --subset structures (seeded shuffle of MP-20 val, never test), same epochs,
batch size and validation texts; validation loss is logged per epoch in nats per *character*, the unit that is
comparable across the two tokenizers. Writes runs/compare/<arm>/metrics.jsonl and prints a summary table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ase_llmgen.training import TrainConfig, train


def subset_csv(source: Path, n: int, seed: int, out: Path) -> Path:
    csv.field_size_limit(1 << 28)
    rows = list(csv.DictReader(open(source)))
    keep = np.random.default_rng(seed).permutation(len(rows))[:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[i] for i in sorted(keep))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--subset", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--arms", default="scratch,lora")
    args = parser.parse_args()
    out = Path(args.out)
    data = subset_csv(Path(args.data), args.subset, 0, out / "subset.csv")
    common = dict(
        data=str(data),
        epochs=args.epochs,
        batch_size=args.batch_size,
        val_fraction=0.1,
        val_examples=64,
        eval_every=10**9,
        save_every=10**9,
        seed=0,
    )
    arms = {
        "scratch": TrainConfig(out=str(out / "scratch"), family="scratch", lr=1e-3, warmup_steps=10, **common),
        "lora": TrainConfig(
            out=str(out / "lora"), family="lora", base="smollm2", lr=5e-4, warmup_steps=10, max_len=1024, **common
        ),
    }
    summary = {}
    for name in args.arms.split(","):
        state = train(arms[name], progress=True)
        log = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        evals = [e for e in log if "val_nats_per_char" in e]
        summary[name] = {
            "seconds": state["elapsed_s"],
            "tokens": state["tokens"],
            "per_epoch": [
                (round(e["epoch"], 2), round(e["val_nats_per_char"], 4), round(e["val_loss"], 4)) for e in evals
            ],
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
