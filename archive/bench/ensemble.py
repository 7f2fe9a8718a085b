"""Two or more models as one: at each token the mean of their next-token probabilities (issue 14, session 18).

Independently trained models err in different places, so their mixture is a likelier model of val.csv than any
member. This measures whether that buys valid crystals: nats per val.csv crystal (teacher forcing, each model's own
codec text of 600 crystals, as ``archive/bench/val_nats.py``) of each member and of the mixture, then unconditional
samples of the mixture (the model alone: grammar on, invalid samples kept, top-p 0.9, as ``bench/cell_size.py``).
The members must write the same codec and share a vocabulary (ids may differ; the smallest vocabulary is the
mixture's). Validation data only, never test.csv.

    python archive/bench/ensemble.py --models runs/mp20_wyckoff_tokens/best runs/wyckoff_tokens/best \
        --temperatures 0.7,1.0 --n 4000 --seed 11
"""

from __future__ import annotations

import argparse
import json
import math
import time
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.data.readers import read_records
from ase_llmgen.metrics.likelihood import negative_log_likelihoods
from ase_llmgen.models.bundle import LMBundle, load_model
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.training.config import resolve_data_path


class MixtureCache:
    """One KV cache per member, batch-edited together (the decoder repeats and drops rows)."""

    def __init__(self, caches: list) -> None:
        self.caches = caches

    def batch_repeat_interleave(self, repeats: int) -> None:
        for cache in self.caches:
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for cache in self.caches:
            cache.batch_select_indices(indices)


class Mixture(nn.Module):
    """Members' next-token probabilities averaged, returned as log-probabilities (logits up to a constant)."""

    def __init__(self, models: list[nn.Module], to_member: list[torch.Tensor]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.to_member = to_member  # the mixture's token id -> each member's
        # The longest a member learnt: the sampler warns past it. The mixture's vocabulary sets the width.
        self.config = max((m.config for m in models), key=lambda c: c.max_position_embeddings)
        self.width = len(to_member[0])

    def get_output_embeddings(self) -> SimpleNamespace:
        return SimpleNamespace(weight=torch.empty(self.width, 0))  # the sampler reads the logits' width here

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False, **_):
        if isinstance(cache, MixtureCache):
            caches = cache.caches
        else:  # the decoder's first call hands over an empty cache: one of its kind per member
            caches = [None if cache is None else type(cache)() for _ in self.members]
        kept, logp = [], []
        for model, ids, member_cache in zip(self.members, self.to_member, caches):
            out = model(
                input_ids=ids[input_ids],
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=member_cache,  # transformers 5.x's keyword (the versions this ran with)
                use_cache=use_cache,
            )
            kept.append(out.cache)
            logp.append(torch.log_softmax(out.logits.float()[..., ids], -1))  # renormalised on the shared tokens
        logits = torch.logsumexp(torch.stack(logp), 0) - math.log(len(logp))
        return CausalLMOutputWithPast(logits=logits, cache=MixtureCache(kept) if use_cache else None)


def mixture(names: list[str]) -> tuple[LMBundle, list[LMBundle]]:
    """A bundle whose model is the mixture of the named models (in the smallest member vocabulary), and theirs."""
    bundles = [load_model(name) for name in names]
    if len({b.codec_name for b in bundles}) > 1:
        raise SystemExit("--models: the members write different codecs")
    first = min(bundles, key=lambda b: len(b.tokenizer.get_vocab()))
    vocab = first.tokenizer.get_vocab()
    to_member = []
    for b in bundles:
        theirs = b.tokenizer.get_vocab()
        missing = set(vocab) - set(theirs)
        if missing:
            raise SystemExit(f"--models: {b.name} lacks tokens {sorted(missing)[:5]}")
        table = torch.empty(len(vocab), dtype=torch.long)
        for token, i in vocab.items():
            table[i] = theirs[token]
        to_member.append(table)
    model = Mixture([b.model for b in bundles], to_member).eval()
    return LMBundle(model, first.tokenizer, "mixture", " + ".join(names), first.meta), bundles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--temperatures", default="0.7,1.0")
    ap.add_argument("--n", type=int, default=4000, help="samples per temperature")
    ap.add_argument("--n-val", dest="n_val", type=int, default=600, help="val.csv crystals for the likelihood")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    bundle, members = mixture(args.models)
    records, _ = read_records(resolve_data_path("mp_20/val.csv"), on_error="skip")
    pick = np.random.default_rng(0).choice(len(records), size=min(args.n_val, len(records)), replace=False)
    codec = bundle.codec
    texts = []
    for i in sorted(pick):
        try:
            texts.append(codec.encode(codec.ordered(records[i].atoms, bundle.site_order)))
        except ValueError:  # a crystal the codec cannot write (spglib finds no symmetry): left out for all
            pass
    for name, scorer in [*zip(args.models, members), ("mixture", bundle)]:  # each scores in its own token ids
        nll, _ = negative_log_likelihoods(scorer, texts)
        print(f"{name}: {nll.mean():.2f} nats per val.csv crystal ({len(texts)})")
    for temperature in map(float, args.temperatures.split(",")):
        settings = SampleSettings(
            temperature=temperature, top_p=0.9, cell_temperature=temperature, require_valid=False, batch_size=100
        )
        started = time.perf_counter()
        structures, stats = Sampler(bundle, settings, seed=args.seed).sample(args.n, progress=True)
        row = {
            "models": args.models,
            "temperature": temperature,
            "n": len(structures),
            "drawn": stats.drawn,
            "mean_sites": float(np.mean([len(a) for a in structures])),
            "struct_valid": float(np.mean([structurally_valid(a) for a in structures])),
            "comp_valid": float(np.mean([compositionally_valid(a) for a in structures])),
            "seconds": time.perf_counter() - started,
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
