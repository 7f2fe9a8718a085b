"""Valid crystals per second: our sampler vs a plain `model.generate` loop with rejection.

Usage: python bench/sampling_speed.py [--model default] [--n 256] [--temperature 0.7] [--batch-size 64]
Four arms, same model, prompt, temperature, top-p, batch size and thread count, each after one untimed
warm-up batch: our sampler with the grammar and the distance guard (the default), with the grammar only, without
either, and the baseline -- the original code's approach: `model.generate` unconstrained, parse, throw away what
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


def run_arm(bundle, arm: str, n: int, args) -> dict:
    settings = SampleSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        max_atoms=20,
        constrained=arm in ("guarded", "constrained"),
        min_distance=0.5 if arm == "guarded" else 0.0,
    )
    sampler = Sampler(bundle, settings, seed=args.seed)
    grammar = sampler.grammar()
    limit = sampler.max_new_tokens()

    def draw() -> list[str | None]:
        if arm == "plain_generate":
            sampler.batches += 1
            return plain_generate(bundle, args.batch_size, limit, args, sampler.batches)
        return sampler.complete(generation_prompt(), args.batch_size, grammar, limit)

    draw()  # one untimed batch per arm: the grammar-mask cache (and torch) warm up, as in any long run
    drawn = parsed = struct_ok = comp_ok = 0
    started = time.perf_counter()
    while drawn < n:
        for text in draw():
            drawn += 1
            if text is None:
                continue
            try:
                atoms = paper.decode(text)
            except CrystalTextError:
                continue
            parsed += 1
            if structurally_valid(atoms):
                struct_ok += 1
                comp_ok += compositionally_valid(atoms.get_chemical_symbols())
    seconds = time.perf_counter() - started
    return {
        "arm": arm,
        "drawn": drawn,
        "seconds": round(seconds, 2),
        "parse_rate": parsed / drawn,
        "struct_valid_rate": struct_ok / drawn,
        "struct_and_comp_valid_rate": comp_ok / drawn,
        "valid_per_second": struct_ok / seconds,
        "drawn_per_second": drawn / seconds,
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
    guarded = run_arm(bundle, "guarded", args.n, args)
    ours = run_arm(bundle, "constrained", args.n, args)
    ours_free = run_arm(bundle, "unconstrained", args.n, args)
    plain = run_arm(bundle, "plain_generate", args.n, args)
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
