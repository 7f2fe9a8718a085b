"""Valid crystals per second: grammar-constrained sampler vs a plain `model.generate` loop with rejection.

Usage: python bench/sampling_speed.py [--model default] [--n 256] [--temperature 0.7] [--batch-size 64]
Both arms use the same model, prompt, temperature, top-p, batch size and thread count, and each starts with one
untimed warm-up batch; the baseline is the original code's approach (sample unconstrained, parse, throw away what
fails).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.models.bundle import load_model
from ase_llmgen.sampling.sampler import Sampler, SampleSettings
from ase_llmgen.text import CrystalTextError, paper
from ase_llmgen.text.prompts import generation_prompt


def run_arm(bundle, constrained: bool, n: int, args) -> dict:
    settings = SampleSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        max_atoms=20,
        constrained=constrained,
    )
    sampler = Sampler(bundle, settings, seed=args.seed)
    grammar = sampler.grammar()
    # One untimed batch per arm: the grammar-mask cache (and torch) warm up, as in any long run.
    sampler.complete(generation_prompt(), args.batch_size, grammar, sampler.max_new_tokens())
    drawn = parsed = struct_ok = comp_ok = 0
    started = time.perf_counter()
    while drawn < n:
        for text in sampler.complete(generation_prompt(), args.batch_size, grammar, sampler.max_new_tokens()):
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
        "constrained": constrained,
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
    ours = run_arm(bundle, True, args.n, args)
    plain = run_arm(bundle, False, args.n, args)
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "model": args.model,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "batch_size": args.batch_size,
                "constrained": ours,
                "plain_generate": plain,
                "speedup_valid_per_second": ours["valid_per_second"] / max(plain["valid_per_second"], 1e-9),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
