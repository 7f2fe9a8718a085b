"""Which space groups a wyckoff model writes unprompted, against MP-20's, and against MP-20's weighted by one over
each text's length (issue 14, session 17: the training loss weighting).

A model's probability of each of the 230 group lines right after the unconditional prompt is read exactly
(teacher forcing), and summed by crystal system. The data's frequencies come from the first line of the
wyckoff texts of ``--n`` crystals drawn at random from ``--data`` (train.csv: what the models learnt from).
A per-batch mean loss over length-sorted batches weights a text by about one over its token count, so the
third column is what such a model would learn.

    python archive/bench/group_marginal.py --models wyckoff runs/wyckoff_tokens/best --n 4000
"""

from __future__ import annotations

import argparse

import numpy as np

from ase_llmgen.data.readers import read_records
from ase_llmgen.metrics.likelihood import negative_log_likelihoods
from ase_llmgen.models.bundle import load_model, token_ids
from ase_llmgen.plugins import get_codec
from ase_llmgen.text.prompts import generation_prompt
from ase_llmgen.training.config import resolve_data_path

SYSTEMS = {
    "triclinic": (1, 2),
    "monoclinic": (3, 15),
    "orthorhombic": (16, 74),
    "tetragonal": (75, 142),
    "trigonal/hexagonal": (143, 194),
    "cubic": (195, 230),
}


def shares(groups: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted share of each crystal system, and of Fm-3m (225) alone."""
    weights = weights / weights.sum()
    out = {name: float(weights[(groups >= lo) & (groups <= hi)].sum()) for name, (lo, hi) in SYSTEMS.items()}
    out["Fm-3m (225)"] = float(weights[groups == 225].sum())
    return out


def model_groups(bundle) -> np.ndarray:
    """The model's probability of each group line (index g - 1) after the unconditional prompt."""
    nll, _ = negative_log_likelihoods(bundle, [f"{g}\n" for g in range(1, 231)], eos=False)
    return np.exp(-nll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", default="mp_20/train.csv")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records, _ = read_records(resolve_data_path(args.data), on_error="skip")
    pick = np.random.default_rng(args.seed).choice(len(records), size=min(args.n, len(records)), replace=False)
    bundles = {name: load_model(name) for name in args.models}
    tokenizer = bundles[args.models[0]].tokenizer
    codec = get_codec("wyckoff")
    groups, lengths = [], []
    for i in pick:
        text = codec.encode(records[i].atoms)
        groups.append(int(text.split("\n", 1)[0]))
        lengths.append(len(token_ids(tokenizer, generation_prompt() + text, eos=True)))
    groups, lengths = np.array(groups), np.array(lengths, dtype=float)
    columns = {
        f"{args.data} ({len(pick)})": shares(groups, np.ones_like(lengths)),
        "weighted by 1/tokens": shares(groups, 1 / lengths),
    }
    everything = np.arange(1, 231)
    for name, bundle in bundles.items():
        columns[name] = shares(everything, model_groups(bundle))
    print("| system | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in [*SYSTEMS, "Fm-3m (225)"]:
        print(f"| {row} | " + " | ".join(f"{c[row]:.3f}" for c in columns.values()) + " |")


if __name__ == "__main__":
    main()
