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
from ase_llmgen.text import augment
from ase_llmgen.text.prompts import generation_prompt


def perplexities(
    bundle: LMBundle,
    crystal_texts: Sequence[str],
    prompt: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Per-text perplexity of the crystal tokens (and EOS) after ``prompt`` (default: unconditional)."""
    nll, n_tokens = negative_log_likelihoods(bundle, crystal_texts, prompt, batch_size, progress)
    return np.exp(nll / np.maximum(n_tokens, 1))


def nats_per_character(bundle: LMBundle, crystal_texts: Sequence[str], prompt: str | None = None) -> float:
    """Mean negative log-likelihood per character of the texts (the end counted as one character).

    Per-token perplexity depends on the tokenizer (a coordinate is 1 token or 4);
    this does not, so it compares models with different tokenizers.
    """
    nll, _ = negative_log_likelihoods(bundle, crystal_texts, prompt)
    return float(nll.sum() / sum(len(t) + 1 for t in crystal_texts))


@torch.no_grad()
def negative_log_likelihoods(
    bundle: LMBundle,
    crystal_texts: Sequence[str],
    prompt: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
    eos: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the summed NLL (nats) of its tokens and EOS after ``prompt``, and how many tokens that is.

    ``eos=False`` scores the text alone, as the start of a longer one (e.g. a crystal's first line)."""
    tok, model = bundle.tokenizer, bundle.model
    prompt = generation_prompt() if prompt is None else prompt
    n_prompt = len(token_ids(tok, prompt, eos=False))
    nll: list[float] = []
    counts: list[int] = []
    for i in tqdm(range(0, len(crystal_texts), batch_size), disable=not progress, desc="perplexity"):
        rows = [token_ids(tok, prompt + t, eos=eos) for t in crystal_texts[i : i + batch_size]]
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
        nll.extend((-(logp * scored).sum(1)).tolist())
        counts.extend(scored.sum(1).tolist())
    return np.array(nll), np.array(counts)


def ipt(
    bundle: LMBundle,
    structures: Sequence[Atoms],
    n_translations: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """IPT and the mean perplexity of the untranslated texts, over ``structures``.

    Texts are written by the model's codec in the site order it was trained on (its metadata names both).
    """
    rng = np.random.default_rng(seed)
    codec = bundle.codec

    def text(atoms: Atoms) -> str:
        return codec.encode(codec.ordered(atoms, bundle.site_order))

    texts = [text(augment.translate(s, rng)) for s in structures for _ in range(n_translations)]
    ppl = perplexities(bundle, texts, batch_size=batch_size, progress=progress).reshape(len(structures), n_translations)
    base_texts = [text(s) for s in structures]
    nll, n_tokens = negative_log_likelihoods(bundle, base_texts, batch_size=batch_size)
    base = np.exp(nll / np.maximum(n_tokens, 1))
    per_structure = ppl.mean(1) - ppl.min(1)
    return {
        "ipt": float(per_structure.mean()),
        "ipt_std": float(per_structure.std()),
        "perplexity": float(base.mean()),
        # per character, so comparable across tokenizers (the end of the text counts as one character)
        "nats_per_char": float(nll.sum() / sum(len(t) + 1 for t in base_texts)),
        "perplexity_translated": float(ppl.mean()),
        "n_structures": len(structures),
        "n_translations": n_translations,
    }
