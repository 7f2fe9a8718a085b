"""The decoding loop: batched sampling with the KV cache, temperature, top-p and a grammar.

Three things make it faster than ``model.generate`` with a logits processor,
without changing what is sampled:

* the prompt (the same for every row) runs once and its KV cache is copied to all rows;
* tokens the grammar *forces* (the ``0.`` of every coordinate, the space after
  its second digit, the newline after the third) are appended without sampling
  and fed to the model together with the next sampled token in one forward
  pass.  Exact: under the grammar a forced token has probability 1.  Rows feed
  different numbers of tokens, so each chunk is left-padded and the pads are
  masked out of attention for good;
* finished rows leave the batch (their cache rows are dropped once an eighth
  of the batch has finished), so a batch costs about the sum of its rows'
  lengths, not ``n`` times the longest;
* the KV cache is written into buffers that grow by doubling
  (:class:`BufferedCache`) instead of being concatenated at every step, which
  on a CPU took more than half of each step's time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from ase_llmgen.text.grammar import RowFilter

__all__ = ["FilteredMasks", "GrammarMasks", "RowFilter", "iter_sample_rows", "sample_rows"]


class BufferedLayer(DynamicLayer):
    """One layer's keys and values in preallocated buffers; ``keys``/``values`` are views of the filled part."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self.key_buffer, self.value_buffer = 0, None, None
        end = self.length + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[-2]:
            capacity = max(64, end, 2 * (0 if self.key_buffer is None else self.key_buffer.shape[-2]))
            self.key_buffer = self._grown(key_states, capacity, self.key_buffer)
            self.value_buffer = self._grown(value_states, capacity, self.value_buffer)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def _grown(self, like: torch.Tensor, capacity: int, old: torch.Tensor | None) -> torch.Tensor:
        batch, heads, _, dim = like.shape
        new = like.new_empty((batch, heads, capacity, dim))
        if old is not None:
            new[:, :, : self.length] = old[:, :, : self.length]
        return new

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._views()


class BufferedCache(DynamicCache):
    """A :class:`~transformers.DynamicCache` whose layers are :class:`BufferedLayer`."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=BufferedLayer)


# Masks depend only on the grammar's settings, its state and the vocabulary: share them across batches.
_MASK_CACHE: dict[tuple, dict[tuple, tuple[torch.Tensor, int | None]]] = {}


@functools.lru_cache(maxsize=8)
def _vocabulary(token_text: tuple[str, ...], width: int) -> frozenset[str]:
    """The token texts of a vocabulary (once per tokenizer, not per batch)."""
    return frozenset(token_text[:width])


class GrammarMasks:
    """Allowed-token masks (and the forced token, if only one is allowed) per grammar state.

    ``grammar``: any object with the grammar contract of :mod:`ase_llmgen.text.grammar` (a codec's).
    """

    def __init__(self, grammar: Any, token_text: tuple[str, ...], eos_id: int, width: int):
        self.grammar, self.token_text, self.eos_id, self.width = grammar, token_text, eos_id, width
        self.cache = _MASK_CACHE.setdefault((hash(token_text), width, grammar.signature()), {})
        self.eos_only = torch.zeros(width, dtype=torch.bool)
        self.eos_only[eos_id] = True
        self._whole_tokens = getattr(grammar, "whole_tokens", None)

    def allowed(self, state: Any) -> tuple[torch.Tensor, int | None]:
        """``(mask, forced)``: ``forced`` is the one allowed token id, or ``None`` when there is a choice."""
        if state is None:  # cannot happen under the mask; end the row and let the parser reject it
            return self.eos_only, self.eos_id
        key = self.grammar.key(state)
        hit = self.cache.get(key)
        if hit is None:
            mask = torch.zeros(self.width, dtype=torch.bool)
            # Where the grammar names whole tokens (e.g. the paper's coordinates) and the vocabulary has
            # them all, only those may start here: samples stay on the tokenization the model learnt.
            whole = self._whole_tokens(state) if self._whole_tokens is not None else None
            if whole is not None and not whole <= _vocabulary(self.token_text, self.width):
                whole = None
            for tid, text in enumerate(self.token_text[: self.width]):
                if whole is not None and text not in whole:
                    continue
                if text and self.grammar.advance(state, text) is not None:
                    mask[tid] = True
            if self.grammar.can_end(state) or not mask.any():  # a dead end stops; the row gives None
                mask[self.eos_id] = True
            ids = mask.nonzero().flatten()
            hit = (mask, int(ids[0]) if len(ids) == 1 else None)
            self.cache[key] = hit
        return hit

    def start(self) -> Any:
        """The state of a new row."""
        return self.grammar.start

    def advance(self, state: Any, token: int) -> Any:
        return self.grammar.advance(state, self.token_text[token])

    def can_end(self, state: Any) -> bool:
        """Whether the text may end here (``False`` where EOS was only the way out of a dead end)."""
        return self.grammar.can_end(state)

    def writing_cell(self, state: Any) -> bool:
        """Whether the row is still writing the cell (a phase in the grammar's ``cell_phases``)."""
        return getattr(state, "phase", None) in getattr(self.grammar, "cell_phases", ())


class _Row:
    """A row's filters, the tokens it has fed them, and its last mask (keyed by that count)."""

    __slots__ = ("filters", "fed", "memo")

    def __init__(self, filters: list[RowFilter]):
        self.filters, self.fed, self.memo = filters, 0, None


class FilteredMasks(GrammarMasks):
    """Grammar masks narrowed, per sample, by :class:`RowFilter` s (states are ``(grammar state, row)``).

    ``filters`` are factories: each row gets fresh filters, updated in place as it
    advances, so a state must not be reused after it has been advanced (the
    decoding loop never does).  A row whose filters leave no token ends there:
    a dead end, dropped like any other.
    """

    def __init__(
        self,
        grammar: Any,
        token_text: tuple[str, ...],
        eos_id: int,
        width: int,
        filters: Sequence[Callable[[], RowFilter]],
    ):
        if not filters:
            raise ValueError("FilteredMasks needs at least one filter (use GrammarMasks without)")
        super().__init__(grammar, token_text, eos_id, width)
        self.filters = tuple(filters)

    def start(self) -> tuple[Any, _Row]:
        return self.grammar.start, _Row([make() for make in self.filters])

    def advance(self, state, token: int):
        inner, row = state
        for f in row.filters:
            f.feed(self.token_text[token])
        row.fed += 1
        return super().advance(inner, token), row

    def can_end(self, state) -> bool:
        return self.grammar.can_end(state[0])

    def writing_cell(self, state) -> bool:
        return super().writing_cell(state[0])

    def allowed(self, state) -> tuple[torch.Tensor, int | None]:
        inner, row = state
        mask, forced = super().allowed(inner)
        if inner is None or forced is not None:
            return mask, forced
        active = [f for f in row.filters if not f.quiet(inner)]
        if not active:
            return mask, forced
        if row.memo is not None and row.memo[0] == row.fed:
            return row.memo[1]
        ids = mask.nonzero().flatten().tolist()
        phase = getattr(inner, "phase", None)
        keep = [t for t in ids if t == self.eos_id or all(f.allows(self.token_text[t], phase) for f in active)]
        if len(keep) < len(ids):
            mask = torch.zeros_like(mask)
            mask[keep or [self.eos_id]] = True  # nothing left: a dead end; the row ends and is dropped
            forced = keep[0] if len(keep) == 1 else (self.eos_id if not keep else None)
        row.memo = (row.fed, (mask, forced))
        return mask, forced


def sample_next(
    logits: torch.Tensor, temperature: float | torch.Tensor, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per row: temperature, then nucleus (top-p) sampling; ``temperature <= 0`` is greedy.

    ``temperature``: one for all rows, or a tensor with one per row."""
    greedy = None  # per-row temperatures: the rows to take greedily
    if torch.is_tensor(temperature):
        greedy = (temperature <= 0).to(logits.device)
        temperature = torch.where(greedy, 1.0, temperature.to(logits.device, torch.float32))[:, None]
    elif temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest head whose mass reaches top_p (always at least the most likely token).
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        picked = order.gather(-1, pick).squeeze(-1)
    else:
        picked = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return picked if greedy is None else torch.where(greedy, logits.argmax(-1), picked)


def _cache_keyword(model: Any) -> str:
    """The forward keyword for the KV cache: ``cache`` in newer transformers 5.x, ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT passes it through
    return _forward_cache_keyword(type(base))


@functools.lru_cache(maxsize=16)
def _forward_cache_keyword(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _finished(tokens: list[int], masks: GrammarMasks | None, state) -> list[int] | None:
    """A row's result at EOS: its tokens, or ``None`` when the grammar did not allow the end (a dead end)."""
    return tokens if masks is None or masks.can_end(state) else None


def sample_rows(model: Any, prompt_ids: list[int], n: int, **options) -> list[list[int] | None]:
    """``n`` completions of ``prompt_ids``: token ids up to (not including) EOS.

    ``None`` for a row cut off at ``max_new_tokens`` or stopped at a dead end
    (no token allowed, so EOS where the grammar does not accept the text).
    Keyword arguments as :func:`iter_sample_rows`, which yields each row as it ends.
    """
    results: list[list[int] | None] = [None] * n
    for row, tokens in iter_sample_rows(model, prompt_ids, n, **options):
        results[row] = tokens
    return results


@torch.no_grad()  # torch keeps grad off inside the generator only, not in its caller between rows
def iter_sample_rows(
    model: Any,
    prompt_ids: list[int],
    n: int,
    *,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
    masks: GrammarMasks | None = None,
    on_step: Callable[[list[int], torch.Tensor], None] | None = None,
    max_chunk: int = 4,
    cell_temperature: float | None = None,
) -> Iterator[tuple[int, list[int] | None]]:
    """Sample ``n`` completions of ``prompt_ids``, yielding ``(row, tokens)`` as each row ends.

    ``row`` is 0..n-1; ``tokens`` are its ids up to (not including) EOS, or ``None``
    for a row cut off at ``max_new_tokens`` or stopped at a dead end.  Every row is
    yielded once, in the order the rows end, so a caller can keep a finished sample
    before the slowest row of the batch is done (and stop early: closing the
    generator stops the decoding).

    ``on_step(rows, logits)``, if given, sees every sampling decision: the rows
    (0..n-1) about to sample and their next-token logits before masking.
    ``max_chunk`` caps the tokens a row feeds per forward pass (its sampled
    token plus forced ones; the rest wait for the next pass): rows drift out of
    step, and every row is padded to the longest chunk.
    ``cell_temperature``: the temperature of the tokens that write the cell (the
    grammar's ``cell_phases``; needs ``masks``); ``None``: ``temperature`` throughout.
    """
    device = next(model.parameters()).device
    prompt = torch.tensor([prompt_ids], device=device)
    keyword = _cache_keyword(model)
    out = model(input_ids=prompt, **{keyword: BufferedCache()}, use_cache=True)
    cache = _returned_cache(out)
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].expand(n, -1)
    width = logits.shape[-1]
    if masks is not None and masks.width != width:
        raise ValueError(f"grammar masks are for {masks.width} logits, the model gives {width}")
    anything = torch.ones(width, dtype=torch.bool)

    results: list[list[int] | None] = [None] * n
    generated: list[list[int]] = [[] for _ in range(n)]
    states: list = [masks.start() if masks else None for _ in range(n)]
    rows = list(range(n))  # original row index of each batch row; None once that row has ended
    attention = torch.ones((n, len(prompt_ids)), dtype=torch.long, device=device)
    position = torch.full((n,), len(prompt_ids), dtype=torch.long, device=device)
    pending: list[list[int]] = [[] for _ in range(n)]  # forced tokens not fed yet
    masked = False  # whether some key is hidden from attention (a pad of a live row)

    while True:
        live = [b for b, row in enumerate(rows) if row is not None]
        if not live:
            break
        if len(rows) - len(live) >= max(1, len(rows) // 8):  # drop ended rows from the batch
            index = torch.tensor(live, device=device)
            cache.batch_select_indices(index)
            attention, position, logits = attention[index], position[index], logits[index]
            rows = [rows[b] for b in live]
        deciding = [b for b, r in enumerate(rows) if r is not None and not pending[r]]
        if on_step is not None and deciding:
            on_step([rows[b] for b in deciding], logits[deciding])
        if masks is not None:
            allowed = torch.stack([anything if r is None or pending[r] else masks.allowed(states[r])[0] for r in rows])
            logits = logits.masked_fill(~allowed.to(device), float("-inf"))
        if cell_temperature is None or masks is None:
            tokens = sample_next(logits, temperature, top_p, generator).tolist()
        else:
            per_row = [
                cell_temperature if r is not None and masks.writing_cell(states[r]) else temperature for r in rows
            ]
            tokens = sample_next(logits, torch.tensor(per_row), top_p, generator).tolist()

        ended: list[int] = []  # rows that end in this pass
        chunks: list[list[int]] = []  # what each batch row feeds next ([] for a row that has ended)
        for b, (row, token) in enumerate(zip(rows, tokens)):
            if row is not None and pending[row]:  # no decision this pass: feed what is waiting
                chunks.append(pending[row][:max_chunk])
                pending[row] = pending[row][max_chunk:]
                continue
            chunk = [] if row is None else [token]
            while chunk:
                if chunk[-1] == eos_id:
                    results[row], chunk = _finished(generated[row], masks, states[row]), []
                    break
                generated[row].append(chunk[-1])
                if len(generated[row]) >= max_new_tokens:
                    chunk = []  # cut off: the result stays None
                    break
                if masks is None:
                    break
                states[row] = masks.advance(states[row], chunk[-1])
                forced = masks.allowed(states[row])[1]
                if forced is None:
                    break
                if forced == eos_id:  # a forced end needs no forward pass
                    results[row], chunk = _finished(generated[row], masks, states[row]), []
                    break
                chunk.append(forced)
            if not chunk:
                if row is not None:
                    ended.append(row)
                rows[b] = None
            elif len(chunk) > max_chunk:
                pending[row] = chunk[max_chunk:]
            chunks.append(chunk[:max_chunk])
        for row in ended:
            yield row, results[row]
        if all(row is None for row in rows):
            break

        k = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), k), pad_id, dtype=torch.long)
        real = torch.zeros((len(chunks), k), dtype=torch.long)
        for b, chunk in enumerate(chunks):  # left-pad, so every row's last token is the last column
            if chunk:
                ids[b, k - len(chunk) :] = torch.tensor(chunk)
                real[b, k - len(chunk) :] = 1
        # An ended row's pad may stay visible (nothing reads that row again): while no live row has a pad,
        # attention needs no mask at all, and the unmasked attention kernel is faster.
        visible = real.clone()
        visible[[b for b, chunk in enumerate(chunks) if not chunk]] = 1
        masked = masked or not bool(visible.all())
        ids, real, visible = ids.to(device), real.to(device), visible.to(device)
        steps = real.cumsum(-1) - 1  # 0, 1, ... over each row's real tokens (pads get -1 -> clamped)
        positions = position[:, None] + steps.clamp(min=0)
        attention = torch.cat([attention, visible], dim=1)
        out = model(
            input_ids=ids,
            attention_mask=attention if masked else None,
            position_ids=positions,
            **{keyword: cache},
            use_cache=True,
        )
        cache = _returned_cache(out)
        logits = out.logits[:, -1]
        position = position + real.sum(-1)
