"""Formula-first sampling, the experiment of 2026-12-06 (issue 14; not adopted, docs/benchmarks.md "Formula first").

Two measurements on the built-in wyckoff model, tau 0.7, top-p 0.9, seed 7 (sampling only, no test data):

1. ``prior``: the formulas the model writes itself after "The chemical formula is " (its prompt is learnt
   too: the loss covers every token), and how many SMACT counts charge-balanced.
2. ``crystals``: unconditional samples, grammar on, invalid ones kept, with the model first writing a
   formula into its prompt and then a crystal of it. In session 13 this needed the sampler change in
   ``archive/records/formula_first_2026-12-06.patch``; since session 14 the package has it
   (``SampleSettings.formula_first``, with formula units; ``bench/cell_size.py --modes`` measures it).

    python archive/bench/formula_first.py prior --n 1000
    python archive/bench/formula_first.py crystals --n 1000 [--plain] [--prompt-only]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pymatgen.core import Composition

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.models.bundle import load_model, token_ids
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.text.prompts import CONDITION_TEMPLATES, GEN_HEAD


def prior(bundle, n: int, temperature: float) -> None:
    tok, model = bundle.tokenizer, bundle.model.eval()
    prefix = GEN_HEAD + CONDITION_TEMPLATES["formula"].split("{}")[0]
    ids = torch.tensor([token_ids(tok, prefix, eos=False)])  # as training and sampling see a prompt
    torch.manual_seed(0)
    valid, readable, atoms = [], 0, []
    for start in range(0, n, 200):
        m = min(200, n - start)
        with torch.no_grad():
            out = model.generate(
                ids.repeat(m, 1),
                do_sample=True,
                temperature=temperature,
                top_p=0.9,
                max_new_tokens=24,
                pad_token_id=tok.pad_token_id,
            )
        for row in out[:, ids.shape[1] :]:
            formula = tok.decode(row, skip_special_tokens=True).split(".")[0].strip()
            try:
                amounts = Composition(formula).get_el_amt_dict()
            except Exception:  # model text
                continue
            readable += 1
            valid.append(compositionally_valid({el: int(round(k)) for el, k in amounts.items()}))
            atoms.append(sum(amounts.values()))
    print(f"formulas: {readable}/{n} readable, {np.mean(valid):.3f} charge-balanced, {np.mean(atoms):.2f} atoms each")


def crystals(bundle, n: int, temperature: float, plain: bool, prompt_only: bool) -> None:
    extra = {} if plain else {"formula_first": True, "enforce_formula": not prompt_only}
    settings = SampleSettings(temperature=temperature, require_valid=False, batch_size=100, **extra)
    out, _ = Sampler(bundle, settings, seed=7).sample(n, progress=True)
    sites = np.mean([len(a) for a in out])
    struct = np.mean([structurally_valid(a) for a in out])
    comp = np.mean([compositionally_valid(a) for a in out])
    print(f"{len(out)} samples: {sites:.2f} sites, structurally valid {struct:.3f}, compositionally {comp:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["prior", "crystals"])
    ap.add_argument("--model", default="wyckoff")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--plain", action="store_true", help="crystals: the usual sampling, for comparison")
    ap.add_argument("--prompt-only", dest="prompt_only", action="store_true", help="crystals: formula not enforced")
    args = ap.parse_args()
    bundle = load_model(args.model)
    if args.what == "prior":
        prior(bundle, args.n, args.temperature)
    else:
        crystals(bundle, args.n, args.temperature, args.plain, args.prompt_only)


if __name__ == "__main__":
    main()
