"""Perplexity of crystal texts under a model, and IPT (increase in perplexity under translation).

IPT (paper Sec. 4): for each crystal s, E_g[PPL(t_g(s))] - min_g PPL(t_g(s)) over random translations
t_g of all fractional coordinates; reported as the mean over crystals. A model that has learnt
translation invariance gives IPT near 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from ase_llmgen.models.bundle import LMBundle, token_ids
from ase_llmgen.text import augment, paper
from ase_llmgen.text.prompts import generation_prompt


@torch.no_grad()
def perplexities(
    bundle: LMBundle,
    crystal_texts: Sequence[str],
    prompt: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Per-text perplexity of the crystal tokens (and EOS) after ``prompt`` (default: unconditional)."""
    tok, model = bundle.tokenizer, bundle.model
    prompt = generation_prompt() if prompt is None else prompt
    n_prompt = len(token_ids(tok, prompt, eos=False))
    out = []
    for i in tqdm(range(0, len(crystal_texts), batch_size), disable=not progress, desc="perplexity"):
        rows = [token_ids(tok, prompt + t, eos=True) for t in crystal_texts[i : i + batch_size]]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)], mask[j, : len(r)] = torch.tensor(r), 1
        logits = model(input_ids=ids.to(bundle.device), attention_mask=mask.to(bundle.device)).logits.float().cpu()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        # Score only what follows the prompt (BPE merges at the boundary are rare: the prompt ends in a newline).
        scored = mask[:, 1:].clone()
        scored[:, : n_prompt - 1] = 0
        nll = -(logp * scored).sum(1) / scored.sum(1).clamp(min=1)
        out.extend(torch.exp(nll).tolist())
    return np.array(out)


def ipt(
    bundle: LMBundle,
    structures: Sequence[Atoms],
    n_translations: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """IPT and the mean perplexity of the untranslated texts, over ``structures``."""
    rng = np.random.default_rng(seed)
    texts = [paper.encode(augment.translate(s, rng)) for s in structures for _ in range(n_translations)]
    ppl = perplexities(bundle, texts, batch_size=batch_size, progress=progress).reshape(len(structures), n_translations)
    base = perplexities(bundle, [paper.encode(s) for s in structures], batch_size=batch_size)
    per_structure = ppl.mean(1) - ppl.min(1)
    return {
        "ipt": float(per_structure.mean()),
        "ipt_std": float(per_structure.std()),
        "perplexity": float(base.mean()),
        "perplexity_translated": float(ppl.mean()),
        "n_structures": len(structures),
        "n_translations": n_translations,
    }
