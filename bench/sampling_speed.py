"""Valid crystals per second: our sampler vs a plain `model.generate` loop with rejection.

Usage: python bench/sampling_speed.py [--model default] [--n 256] [--temperature 0.7] [--batch-size 64]
Four arms, same model, prompt, temperature, top-p, batch size and thread count, each after one untimed
warm-up batch, drawn in turns (one batch of each arm, then the next round) so that drifts in the machine's speed
hit all arms alike: our sampler with the grammar and the distance guard (opt-in), with the grammar only (the default),
without either, and the baseline -- the original code's approach: `model.generate` unconstrained, parse, throw away what
fails.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.models.bundle import load_model, token_ids
from ase_llmgen.sampling.sampler import Sampler, SampleSettings
from ase_llmgen.text import CrystalTextError, paper
from ase_llmgen.text.prompts import generation_prompt


def plain_generate(bundle, n: int, max_new_tokens: int, args, batch: int) -> list[str | None]:
    """The baseline: Hugging Face `generate` with sampling, no constraints."""
    tok = bundle.tokenizer
    ids = torch.tensor([token_ids(tok, generation_prompt(), eos=False)] * n)
    torch.manual_seed(args.seed * 1_000_003 + batch)
    out = bundle.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    texts: list[str | None] = []
    for row in out[:, ids.shape[1] :].tolist():
        end = row.index(tok.eos_token_id) if tok.eos_token_id in row else None
        texts.append(None if end is None else tok.decode(row[:end], skip_special_tokens=True))
    return texts


class Arm:
    """One way of sampling, drawn batch by batch and timed per batch."""

    def __init__(self, bundle, name: str, args):
        settings = SampleSettings(
            temperature=args.temperature,
            top_p=args.top_p,
            batch_size=args.batch_size,
            max_atoms=20,
            constrained=name in ("guarded", "constrained"),
            min_distance=0.5 if name == "guarded" else 0.0,
        )
        self.bundle, self.name, self.args = bundle, name, args
        self.sampler = Sampler(bundle, settings, seed=args.seed)
        self.grammar = self.sampler.grammar()
        self.limit = self.sampler.max_new_tokens()
        self.drawn = self.parsed = self.struct_ok = self.comp_ok = 0
        self.seconds = 0.0

    def draw(self) -> list[str | None]:
        if self.name == "plain_generate":
            self.sampler.batches += 1
            return plain_generate(self.bundle, self.args.batch_size, self.limit, self.args, self.sampler.batches)
        return self.sampler.complete(generation_prompt(), self.args.batch_size, self.grammar, self.limit)

    def timed_batch(self) -> None:
        started = time.perf_counter()
        for text in self.draw():
            self.drawn += 1
            if text is None:
                continue
            try:
                atoms = paper.decode(text)
            except CrystalTextError:
                continue
            self.parsed += 1
            if structurally_valid(atoms):
                self.struct_ok += 1
                self.comp_ok += compositionally_valid(atoms.get_chemical_symbols())
        self.seconds += time.perf_counter() - started

    def result(self) -> dict:
        return {
            "arm": self.name,
            "drawn": self.drawn,
            "seconds": round(self.seconds, 2),
            "parse_rate": self.parsed / self.drawn,
            "struct_valid_rate": self.struct_ok / self.drawn,
            "struct_and_comp_valid_rate": self.comp_ok / self.drawn,
            "valid_per_second": self.struct_ok / self.seconds,
            "drawn_per_second": self.drawn / self.seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bundle = load_model(args.model)
    arms = [Arm(bundle, name, args) for name in ("guarded", "constrained", "unconstrained", "plain_generate")]
    for arm in arms:  # one untimed batch per arm: the grammar-mask cache (and torch) warm up
        arm.draw()
    # Round robin, one batch per arm at a time: drifts in the machine's speed hit every arm alike.
    while any(arm.drawn < args.n for arm in arms):
        for arm in arms:
            if arm.drawn < args.n:
                arm.timed_batch()
    guarded, ours, ours_free, plain = (arm.result() for arm in arms)
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "model": args.model,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "batch_size": args.batch_size,
                "guarded": guarded,
                "constrained": ours,
                "unconstrained": ours_free,
                "plain_generate": plain,
                "speedup_valid_per_second": guarded["valid_per_second"] / max(plain["valid_per_second"], 1e-9),
                "speedup_grammar_only": ours["valid_per_second"] / max(plain["valid_per_second"], 1e-9),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
