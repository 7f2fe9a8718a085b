"""Training throughput on CPU (or GPU): tokens/s of the real training step under different settings.

Arms run in turns (round-robin, several rounds) inside one process, each on its own copy of the model and
optimizer and on the same batches, so a drift in the machine's speed hits every arm alike; the median
tokens/s per arm and its ratio to the first arm are printed. Also reports the padding the loop's
length-sorted batching leaves (what sequence packing could save at most).

    python bench/train_speed.py --arms fp32,bf16 --threads 2           # precision
    python bench/train_speed.py --arms fp32,fp32:compile --threads 2   # torch.compile
    python bench/train_speed.py --arms fp32 --threads 1 / --threads 2  # threads (run apart)
    python bench/train_speed.py --arms fp32 --d-model 384 --n-layers 6 # a larger model

An arm is ``precision[:compile]``. Batches come from MP-20 train.csv (the shared data) when present, else
from the test excerpts in tests/data.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ase_llmgen.data.curriculum import CurriculumConfig, training_texts
from ase_llmgen.data.readers import read_records
from ase_llmgen.models import scratch
from ase_llmgen.models.bundle import token_ids
from ase_llmgen.training.config import TrainConfig, resolve_data_path
from ase_llmgen.training.loop import BF16_WIDTH_MULTIPLE, CHUNK_BATCHES, batches, collate, summed_loss

ROOT = Path(__file__).resolve().parents[1]


def padding_fraction(records, config: TrainConfig, cur: CurriculumConfig, tokenizer, n_batches: int) -> float:
    """Share of the token slots in the loop's batches that are padding."""
    steps = max(1, len(records) // config.batch_size)
    real = slots = 0

    def n_tokens(text: str) -> int:
        return len(token_ids(tokenizer, text, eos=True))

    for _, texts in batches(records, config, cur, 0, steps, n_tokens):
        lengths = [n_tokens(t) for t in texts]
        real += sum(lengths)
        slots += max(lengths) * len(lengths)
        n_batches -= 1
        if n_batches <= 0:
            break
    return 1 - real / slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--n-heads", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per arm per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-records", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = Path(resolve_data_path("mp_20/train.csv"))
    data = data if data.exists() else ROOT / "tests" / "data" / "mp20_train_sample.csv"
    records, _ = read_records(data)
    records = records[: args.n_records]
    config = TrainConfig(batch_size=args.batch_size, seed=0)
    cur = CurriculumConfig(site_order="spatial")
    base = scratch.build(args.d_model, args.n_layers, args.n_heads, 512, seed=0)
    tokenizer = base.tokenizer
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    texts = list(training_texts(records, 0, 0, cur))
    texts.sort(key=len)  # batches of similar lengths, as in the loop
    pool = [texts[i : i + args.batch_size] for i in range(0, len(texts) - args.batch_size + 1, args.batch_size)]
    rng = np.random.default_rng(0)

    arms = []
    for spec in args.arms.split(","):
        precision, _, option = spec.partition(":")
        model = copy.deepcopy(base.model).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        step_model = torch.compile(model, dynamic=True) if option == "compile" else model
        arms.append({"name": spec, "precision": precision, "model": step_model, "opt": optimizer, "rates": []})

    def run(arm, batch_texts) -> int:
        multiple = BF16_WIDTH_MULTIPLE if arm["precision"] == "bf16" else 1  # as the training loop pads
        batch = {k: v.to(device) for k, v in collate(tokenizer, batch_texts, 512, multiple).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=arm["precision"] == "bf16"):
            summed, counted = summed_loss(arm["model"], batch)
        (summed / counted.clamp(min=1)).backward()  # the loop divides by a constant instead; the cost is the same
        arm["opt"].step()
        arm["opt"].zero_grad(set_to_none=True)
        return int(batch["attention_mask"].sum())

    for arm in arms:  # warm-up (and compilation) outside the timings
        for _ in range(2):
            run(arm, pool[int(rng.integers(len(pool)))])
    for _ in range(args.rounds):
        chosen = [pool[int(i)] for i in rng.integers(len(pool), size=args.steps)]
        for arm in arms:
            start, tokens = time.perf_counter(), 0
            for b in chosen:
                tokens += run(arm, b)
            arm["rates"].append(tokens / (time.perf_counter() - start))
    first = None
    for arm in arms:
        median = statistics.median(arm["rates"])
        first = first or median
        ratios = [r / f for r, f in zip(arm["rates"], arms[0]["rates"])]
        print(
            json.dumps(
                {
                    "arm": arm["name"],
                    "threads": args.threads,
                    "params_M": round(sum(p.numel() for p in base.model.parameters()) / 1e6, 2),
                    "tokens_per_s_median": round(median),
                    "tokens_per_s_min_max": [round(min(arm["rates"])), round(max(arm["rates"]))],
                    "ratio_to_first_median": round(statistics.median(ratios), 3),
                }
            )
        )
    print(
        json.dumps(
            {
                "padding_fraction": round(padding_fraction(records, config, cur, tokenizer, 64), 4),
                "chunk_batches": CHUNK_BATCHES,
                "data": str(data),
            }
        )
    )


if __name__ == "__main__":
    main()
