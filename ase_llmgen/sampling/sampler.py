"""Batched sampling with the KV cache, temperature, top-p, seeds and a grammar.

Uses ``model.generate`` (KV cache, nucleus sampling) with a logits processor
that masks every token that would break the crystal grammar, so every finished
sample parses.  Samples that still fail (e.g. cut off at the length limit, or
structurally invalid) are redrawn up to a budget and counted in
:class:`SampleStats`, never hidden.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from ase import Atoms
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from ase_llmgen.checks.validity import structurally_valid
from ase_llmgen.models.bundle import LMBundle, token_ids
from ase_llmgen.sampling.grammar import CrystalGrammar, ElementGrammar, State
from ase_llmgen.text import paper
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.prompts import Conditions, generation_prompt, infill_prompt


@dataclass
class SampleSettings:
    """How to sample (paper: temperature 0.7 or 1.0, top-p 0.9)."""

    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 64
    max_atoms: int = 20
    elements: tuple[str, ...] | None = None  # restrict sampled elements; None = all
    constrained: bool = True  # grammar-constrained decoding
    require_valid: bool = True  # redraw structurally invalid samples too
    max_attempts_factor: int = 10  # give up after n * factor draws
    max_new_tokens: int | None = None  # default: from max_atoms and the tokenizer


@dataclass
class SampleStats:
    """What happened while sampling: every draw is counted once."""

    drawn: int = 0
    accepted: int = 0
    unparseable: int = 0  # text that the strict parser rejected (or cut off)
    invalid: int = 0  # parsed, but atoms closer than 0.5 A or volume < 0.1 A^3
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)  # first few parser messages, by kind

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"}


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks tokens that break ``grammar``; tracks one grammar state per row."""

    def __init__(self, grammar: CrystalGrammar, tokenizer, prompt_len: int, batch: int):
        self.grammar, self.prompt_len = grammar, prompt_len
        self.eos = tokenizer.eos_token_id
        self.token_text = token_texts(tokenizer)
        self.states: list[State | None] = [grammar.start] * batch
        self.done = [False] * batch
        # Masks depend only on the grammar's settings, its state and the tokenizer: share them across batches.
        signature = (
            hash(self.token_text),
            type(grammar).__name__,
            grammar.elements,
            grammar.max_atoms,
            grammar.min_atoms,
        )
        self.cache: dict[tuple, torch.Tensor] = _MASK_CACHE.setdefault(signature, {})
        self._any: torch.Tensor | None = None
        self._eos_only: torch.Tensor | None = None

    def _mask(self, state: State, width: int) -> torch.Tensor:
        key = (self.grammar.key(state), width)
        mask = self.cache.get(key)
        if mask is None:
            mask = torch.zeros(width, dtype=torch.bool)
            for tid, text in enumerate(self.token_text):
                if text and self.grammar.advance(state, text) is not None:
                    mask[tid] = True
            if self.grammar.can_end(state):
                mask[self.eos] = True
            if not mask.any():  # dead end: let it stop, the parser will reject it
                mask[self.eos] = True
            self.cache[key] = mask
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_len:
            for row, tid in enumerate(input_ids[:, -1].tolist()):
                if self.done[row]:
                    continue
                if tid == self.eos:
                    self.done[row] = True
                else:
                    self.states[row] = self.grammar.advance(self.states[row], self.token_text[tid])
        width = scores.shape[1]
        if self._any is None or self._any.shape[0] != width:
            self._any = torch.ones(width, dtype=torch.bool)  # finished rows: generate pads them anyway
            self._eos_only = torch.zeros(width, dtype=torch.bool)
            self._eos_only[self.eos] = True  # broken rows end at once; the parser rejects them
        rows = []
        for row, state in enumerate(self.states):
            if self.done[row]:
                rows.append(self._any)
            elif state is None:
                rows.append(self._eos_only)
            else:
                rows.append(self._mask(state, width))
        return scores.masked_fill(~torch.stack(rows), float("-inf"))


# Per tokenizer object (weakly held): its token texts; per (vocabulary, grammar settings): the masks.
_TOKEN_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MASK_CACHE: dict[tuple, dict[tuple, torch.Tensor]] = {}


def token_texts(tokenizer) -> tuple[str, ...]:
    """The text each token id adds to the output (special tokens map to '')."""
    texts = _TOKEN_TEXT_CACHE.get(tokenizer)
    if texts is None:
        special = set(tokenizer.all_special_ids)
        # Byte-level BPE pieces decode with their leading space, which the grammar must see.
        texts = tuple(
            "" if tid in special else tokenizer.decode([tid], clean_up_tokenization_spaces=False)
            for tid in range(len(tokenizer))
        )
        _TOKEN_TEXT_CACHE[tokenizer] = texts
    return texts


def use_all_cores() -> None:
    """Sampling is matrix work: give torch every core (unless the user set a number)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


class Sampler:
    """Draws crystal texts and structures from a model."""

    def __init__(self, bundle: LMBundle, settings: SampleSettings | None = None, seed: int = 0, first_batch: int = 0):
        self.bundle, self.settings, self.seed = bundle, settings or SampleSettings(), seed
        # Batch k is drawn with torch seed (seed * 1_000_003 + k); a resumed run starts at a later k.
        self.batches = first_batch
        use_all_cores()

    def max_new_tokens(self) -> int:
        """The generation length limit (a sample still unfinished there counts as unparseable)."""
        if self.settings.max_new_tokens:
            return self.settings.max_new_tokens
        # ~16 characters per line pair; a digit-per-token tokenizer needs one token per character.
        return 24 + 20 * self.settings.max_atoms

    @torch.no_grad()
    def complete(self, prompt: str, n: int, grammar: CrystalGrammar | None, max_new_tokens: int) -> list[str | None]:
        """``n`` completions of ``prompt`` (``None`` for one cut off at the length limit)."""
        tok, model = self.bundle.tokenizer, self.bundle.model
        ids = torch.tensor([token_ids(tok, prompt, eos=False)] * n, device=self.bundle.device)
        torch.manual_seed(self.seed * 1_000_003 + self.batches)
        self.batches += 1
        processors = LogitsProcessorList()
        if grammar is not None:
            processors.append(GrammarLogitsProcessor(grammar, tok, ids.shape[1], n))
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            logits_processor=processors,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        texts: list[str | None] = []
        for row in out[:, ids.shape[1] :].tolist():
            if tok.eos_token_id not in row:
                texts.append(None)
                continue
            texts.append(tok.decode(row[: row.index(tok.eos_token_id)], skip_special_tokens=True))
        return texts

    def grammar(self) -> CrystalGrammar | None:
        """The grammar these settings impose (``None`` when unconstrained)."""
        s = self.settings
        return CrystalGrammar(s.elements, s.max_atoms) if s.constrained else None

    def iter_structures(
        self,
        conditions: Conditions | None = None,
        stats: SampleStats | None = None,
        accept: Callable[[Atoms], bool] | None = None,
        max_draws: int | None = None,
    ) -> Iterator[Atoms]:
        """Yield accepted structures until the caller stops or ``max_draws`` draws are spent.

        ``stats`` counts every draw.
        ``atoms.info`` carries the provenance: text, prompt conditions, model,
        temperature, top-p, seed.
        """
        import time

        stats = stats if stats is not None else SampleStats()
        prompt = generation_prompt(conditions)
        grammar = self.grammar()
        while max_draws is None or stats.drawn < max_draws:
            started = time.time()
            batch = self.batches
            texts = self.complete(prompt, self.settings.batch_size, grammar, self.max_new_tokens())
            stats.seconds += time.time() - started
            for text in texts:
                stats.drawn += 1
                if text is None:
                    stats.unparseable += 1
                    stats.errors.setdefault("cut off at the length limit", 0)
                    stats.errors["cut off at the length limit"] += 1
                    continue
                try:
                    atoms = paper.decode(text)
                except CrystalTextError as exc:
                    stats.unparseable += 1
                    kind = str(exc).split(":")[0]
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                    continue
                if self.settings.require_valid and not structurally_valid(atoms):
                    stats.invalid += 1
                    continue
                if accept is not None and not accept(atoms):
                    continue
                stats.accepted += 1
                atoms.info.update(
                    {
                        "text": text,
                        "conditions": (conditions or Conditions()).as_dict(),
                        "model": self.bundle.name,
                        "temperature": self.settings.temperature,
                        "top_p": self.settings.top_p,
                        "seed": self.seed,
                        "batch": batch,
                        "constrained": self.settings.constrained,
                    }
                )
                yield atoms

    def sample(
        self, n: int, conditions: Conditions | None = None, progress: bool = False
    ) -> tuple[list[Atoms], SampleStats]:
        """Draw ``n`` accepted structures (fewer if the redraw budget runs out)."""
        stats = SampleStats()
        out: list[Atoms] = []
        budget = n * self.settings.max_attempts_factor
        with tqdm(total=n, disable=not progress, desc="sample") as bar:
            for atoms in self.iter_structures(conditions, stats, max_draws=budget):
                out.append(atoms)
                bar.update(1)
                bar.set_postfix(drawn=stats.drawn)
                if len(out) >= n:
                    break
        return out, stats

    def infill(self, masked_text: str, n: int, elements: tuple[str, ...] | None = None) -> list[str]:
        """``n`` element symbols sampled for the ``[MASK]`` of ``masked_text``."""
        grammar = ElementGrammar(elements or self.settings.elements, max_atoms=1)
        answers = self.complete(infill_prompt(masked_text), n, grammar, max_new_tokens=6)
        return [a.strip() for a in answers if a and a.strip() in grammar.elements]
