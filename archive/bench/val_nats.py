"""Nats per crystal on MP-20 val.csv, for models of different formats or site orders (issue 14, levers 6 and 8).

Each model writes each crystal once, in its own codec and site order, after the unconditional prompt; the
summed negative log-likelihood of that text (EOS included) is the model's -log p of the crystal, comparable
between formats that write every crystal as exactly one text. Validation data only, never test.csv.

    python archive/bench/val_nats.py --models wyckoff runs/wyckoff_mult/best runs/wyckoff_en/best --n 600
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ase_llmgen.data.readers import read_records
from ase_llmgen.metrics.likelihood import negative_log_likelihoods
from ase_llmgen.models.bundle import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", default=str(Path(__file__).parents[3] / "shared/data/mp_20/val.csv"))
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records, _ = read_records(args.data, on_error="skip")
    pick = np.random.default_rng(args.seed).choice(len(records), size=min(args.n, len(records)), replace=False)
    structures = [records[i].atoms for i in sorted(pick)]
    for name in args.models:
        bundle = load_model(name)
        codec, texts = bundle.codec, []
        for atoms in structures:
            try:
                texts.append(codec.encode(codec.ordered(atoms, bundle.site_order)))
            except ValueError:  # a crystal the codec cannot write (spglib finds no symmetry): left out for all
                texts.append(None)
        kept = [t for t in texts if t is not None]
        nll, _ = negative_log_likelihoods(bundle, kept)
        print(f"{name}: {bundle.codec_name} / {bundle.site_order}: {nll.mean():.2f} nats per crystal ({len(kept)})")


if __name__ == "__main__":
    main()
