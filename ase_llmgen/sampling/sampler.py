"""Batched sampling with the KV cache, temperature, top-p, seeds and a grammar.

Uses the decoding loop of :mod:`ase_llmgen.sampling.decode` (KV cache, nucleus
sampling, grammar masks, forced tokens fed without sampling), so every finished
sample parses.  What is format-specific comes from the model's codec
(:attr:`ase_llmgen.models.bundle.LMBundle.codec`): its grammar, its per-sample
filters (the paper's distance guard: no two sites closer than ``min_distance``),
its decoder, its element masking and site order for infill.  Samples that
still fail (e.g. cut off at the length limit, or structurally invalid) are redrawn up to a budget and counted in
:class:`SampleStats`, never hidden.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from ase import Atoms
from tqdm.auto import tqdm

from ase_llmgen.checks.builtin import check_spacegroup
from ase_llmgen.checks.validity import structurally_valid
from ase_llmgen.models.bundle import LMBundle, token_ids
from ase_llmgen.sampling.decode import FilteredMasks, GrammarMasks, iter_sample_rows
from ase_llmgen.sampling.formula_first import MAX_FORMULA_CHARS, MAX_UNITS_DIGITS, FormulaFirstGrammar, prompt_parts
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.grammar import DEFAULT_ELEMENTS, ElementGrammar
from ase_llmgen.text.prompts import Conditions, PromptError, generation_prompt, infill_prompt, parse_prompt

__all__ = ["SampleSettings", "SampleStats", "Sampler"]


@dataclass
class SampleStats:
    """What happened while sampling: every draw is counted once."""

    drawn: int = 0
    accepted: int = 0
    unparseable: int = 0  # text that the strict parser rejected (or cut off, or stopped at a dead end)
    invalid: int = 0  # parsed, but atoms closer than 0.5 A or volume < 0.1 A^3
    rejected: int = 0  # valid, but a required check said no (e.g. --require plausible)
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)  # first few parser messages, by kind

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"}


# Per tokenizer object (weakly held): its token texts.
_TOKEN_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def in_row_order(rows: Iterator[tuple[int, Any]], free: int = 0) -> Iterator[tuple[int, Any]]:
    """``(row, result)`` pairs of one batch, each row once in the order rows end, given back with every row from
    ``free`` on held until all rows before it have ended, then in row order; rows below ``free`` pass at once.

    Rows end in order of their length, so the first rows to end are the short texts: a caller that keeps the first
    ``k`` to end keeps the smallest cells. Held back, a row is kept only where the rows before it did not suffice,
    whatever its length, so the first ``k`` taken are ``k`` draws of the model. ``free``: the rows the caller takes
    whatever happens (it wants at least that many); they may stream.
    """
    held: dict[int, Any] = {}
    ended: set[int] = set()
    next_row = 0  # the lowest row that has not ended
    for row, result in rows:
        ended.add(row)
        if row < free:
            yield row, result
        else:
            held[row] = result
        while next_row in ended:
            if next_row in held:
                yield next_row, held.pop(next_row)
            next_row += 1
    yield from sorted(held.items())  # a stream that skipped a row: the rest all the same, in row order


def use_all_cores() -> None:
    """Sampling is matrix work: give torch every core (unless the user set a number)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


class Sampler:
    """Draws crystal texts and structures from a model."""

    def __init__(self, bundle: LMBundle, settings: SampleSettings | None = None, seed: int = 0, first_batch: int = 0):
        self.bundle, self.seed = bundle, seed
        # The model's own defaults fill what the settings leave unset (the wyckoff model's cell temperature).
        self.settings = (settings or SampleSettings()).for_model(bundle.meta, where=bundle.name)
        self.codec = bundle.codec  # the format the model writes: grammar, filters, decoder, masking
        # Batch k is drawn with torch seed (seed * 1_000_003 + k); a resumed run starts at a later k.
        self.batches = first_batch
        # Given the next batch number, the one to draw (e.g. claimed in a database, so that two runs of
        # one request at once draw different batches); None: the next number.
        self.batch_claim: Callable[[int], int] | None = None
        self._warned_length = False
        use_all_cores()

    def max_new_tokens(self) -> int:
        """The generation length limit (a sample still unfinished there counts as unparseable)."""
        if self.settings.max_new_tokens:
            return self.settings.max_new_tokens
        # A digit-per-token tokenizer needs one token per character.
        return self.codec.text_limit(self.settings.max_atoms)

    def complete(self, prompt: str, n: int, grammar: Any, max_new_tokens: int) -> list[str | None]:
        """``n`` completions of ``prompt`` (``None`` for one cut off at the length limit or at a dead end)."""
        out: list[str | None] = [None] * n
        for row, text in self.stream(prompt, n, grammar, max_new_tokens):
            out[row] = text
        return out

    def stream(self, prompt: str, n: int, grammar: Any, max_new_tokens: int) -> Iterator[tuple[int, str | None]]:
        """Draw one batch of ``n`` completions, yielding ``(row, text)`` as each row ends (``text`` as in
        :meth:`complete`).  The batch number is taken when the stream starts (:attr:`batch_number`)."""
        tok, model = self.bundle.tokenizer, self.bundle.model
        batch = self.batches if self.batch_claim is None else self.batch_claim(self.batches)
        self.batch_number, self.batches = batch, batch + 1
        generator = torch.Generator(device=self.bundle.device)
        generator.manual_seed(self.seed * 1_000_003 + batch)
        masks = None
        if grammar is not None:
            width = model.get_output_embeddings().weight.shape[0]
            filters = [] if isinstance(grammar, ElementGrammar) else self.filters()
            if filters:
                masks = FilteredMasks(grammar, token_texts(tok), tok.eos_token_id, width, filters)
            else:
                masks = GrammarMasks(grammar, token_texts(tok), tok.eos_token_id, width)
        prompt_ids = token_ids(tok, prompt, eos=False)
        limit = getattr(model.config, "max_position_embeddings", None)
        rows = iter_sample_rows(
            model,
            prompt_ids,
            n,
            eos_id=tok.eos_token_id,
            pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            max_new_tokens=max_new_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            generator=generator,
            masks=masks,
            cell_temperature=self.settings.cell_temperature_apart,
        )
        for row, ids in rows:
            # Said when a sample does run past the model's window, not when one could: the worst case
            # (max_atoms sites in P1) is far longer than most texts (wyckoff: 1.3% of MP-20 past 256 tokens).
            # (None: cut off at max_new_tokens, so it ran that far.)
            length = len(prompt_ids) + (max_new_tokens if ids is None else len(ids))
            if limit and length > limit and not self._warned_length:
                self._warned_length = True
                warnings.warn(
                    f"a sample ran past the {limit} positions {self.bundle.name} was trained on: samples that long "
                    f"are poor (max_atoms={self.settings.max_atoms}; a lower --max-atoms avoids them)",
                    stacklevel=2,
                )
            yield row, None if ids is None else tok.decode(ids, skip_special_tokens=True)

    def filters(self) -> list:
        """Per-sample filters of the codec on top of its grammar (the paper's: the distance guard, when on)."""
        return list(self.codec.filters(self.settings)) if self.codec.filters is not None else []

    def grammar(self, conditions: Conditions | None = None) -> Any:
        """The codec's grammar for these settings and ``conditions`` (``None`` when unconstrained).

        A formula condition makes the grammar admit that exact composition (any whole number of
        formula units) unless ``enforce_formula`` is off; the conditions the codec names in
        ``grammar_conditions`` (the wyckoff codec: the space group) go to its grammar too.
        """
        s = self.settings
        if not s.constrained:
            return None
        if self.codec.grammar is None:
            raise ValueError(
                f"codec {self.codec.name!r} has no grammar: sample it unconstrained "
                "(constrained=False, --unconstrained)"
            )
        formula = conditions.formula if conditions is not None and conditions.formula and s.enforce_formula else None
        min_atoms, max_atoms = s.min_atoms, s.max_atoms
        if formula and conditions.formula_units:  # exactly that many sites
            from pymatgen.core import Composition

            try:
                sites = conditions.formula_units * Composition(formula).num_atoms
            except Exception as exc:  # pymatgen raises several types for junk
                raise ValueError(f"formula {formula!r} is not a chemical formula") from exc
            if not min_atoms <= sites <= max_atoms:
                raise ValueError(
                    f"{conditions.formula_units} formula units of {formula} are {sites:g} sites, outside "
                    f"{min_atoms}..{max_atoms} (min_atoms, max_atoms)"
                )
            min_atoms = max_atoms = int(round(sites))
        # Conditions the codec's grammar can hold the text to (the wyckoff codec's space group), when requested.
        held = {name: getattr(conditions, name) for name in self.codec.grammar_conditions if conditions is not None}
        held = {name: value for name, value in held.items() if value is not None}
        grammar = self.codec.grammar(
            elements=s.elements, max_atoms=max_atoms, min_atoms=min_atoms, formula=formula, **held
        )
        if formula:
            needed = getattr(grammar, "elements", ())
            outside = set(needed) - set(s.elements or needed)
            if outside:
                raise ValueError(
                    f"formula {formula} needs {sorted(outside)}, outside the allowed elements {s.elements}"
                )
        return grammar

    def prompted(self, conditions: Conditions | None) -> Conditions | None:
        """The conditions a prompt states: formula units only to a model that learnt them. To others the phrase
        is text never seen (their cells came out degenerate, c = 0.1 A), so the grammar alone holds the count."""
        if conditions is None or conditions.formula_units is None or self.bundle.knows_formula_units:
            return conditions
        return dataclasses.replace(conditions, formula_units=None)

    def formula_first(self, conditions: Conditions | None, plain: Any) -> tuple[str, FormulaFirstGrammar] | None:
        """``(prompt, grammar)`` for formula-first sampling (:mod:`.formula_first`) where the settings ask for it
        and no formula is asked for, else ``None``. ``plain``: the codec's grammar for ``conditions`` (its
        signature and cell phases). A model that learnt formula units (its curriculum's ``formula_units``)
        writes them after its formula, so its crystal's size is set before its cell."""
        if not self.settings.formula_first or (conditions is not None and conditions.formula):
            return None
        if self.filters():
            raise ValueError("formula_first does not combine with the distance guard (min_distance > 0) yet")
        tok = self.bundle.tokenizer
        units = self.bundle.knows_formula_units
        if not units:
            warnings.warn(
                f"{self.bundle.name} never learnt formula units (its curriculum had no formula_units): its crystals "
                "may hold any whole number of formula units, and cells come out overfilled (docs/benchmarks.md, "
                "'Compositional validity', lever 1)",
                stacklevel=3,
            )
        prompt, lead, rest = prompt_parts(conditions, units)
        # The tokens around the formula as the tokenizer writes a whole prompt (so, as the model learnt them). The
        # grammar writes formulas and units a symbol or digit per token, as the crystal tokenizers do; a tokenizer
        # that merges them (BPE) learnt other tokens, which the model would then never be offered.
        texts = token_texts(tok)
        head = token_ids(tok, prompt, eos=False)
        formula, digits = ["Ba", "(", "Bi", "3", "S", "4", ")", "2"], ["1", "2"] if units else []
        lead_ids = token_ids(tok, prompt + "".join(formula) + lead, eos=False)[len(head) + len(formula) :]
        whole = token_ids(tok, prompt + "".join(formula) + lead + "".join(digits) + rest, eos=False)
        written = len(head) + len(formula) + len(lead_ids) + len(digits)
        if [texts[i] for i in whole[len(head) : written]] != formula + [texts[i] for i in lead_ids] + digits:
            raise ValueError(
                f"{self.bundle.name}'s tokenizer merges element symbols or digits of a formula: formula-first "
                "sampling needs a crystal tokenizer (a model trained with family 'scratch')"
            )
        elements = self.settings.elements or getattr(plain, "elements", None) or DEFAULT_ELEMENTS

        def grammar_for(formula: str, formula_units: int | None) -> Any:
            asked = dataclasses.replace(conditions or Conditions(), formula=formula, formula_units=formula_units)
            return self.grammar(asked)

        grammar = FormulaFirstGrammar(
            grammar_for,
            elements,
            tuple(texts[i] for i in whole[written:]),
            tuple(getattr(plain, "cell_phases", ())),
            plain.signature(),
            lead=tuple(texts[i] for i in lead_ids),
            max_units=self.settings.max_atoms,
        )
        return prompt, grammar

    def exact_group(self, conditions: Conditions | None, grammar: Any) -> int | None:
        """The space group a sample must have exactly (else it is redrawn): the requested one when the
        codec's grammar writes it and ``exact_spacegroup`` is on, else ``None``."""
        wanted = conditions.spacegroup if conditions is not None else None
        if not (wanted and grammar is not None and self.settings.exact_spacegroup):
            return None
        return int(wanted) if "spacegroup" in self.codec.grammar_conditions else None

    def batch_size_for(self, wanted: int | None, stats: SampleStats) -> int:
        """Rows to draw in the next batch when ``wanted`` more structures are wanted (``None``: as many as come).

        Enough for ``wanted`` at the acceptance rate seen so far (plus a fifth), at most ``batch_size``:
        ``-n 5`` draws a batch of 6, not 64.
        """
        if wanted is None:
            return self.settings.batch_size
        rate = max(stats.accepted / stats.drawn, 0.02) if stats.drawn else 1.0
        return max(1, min(self.settings.batch_size, math.ceil(1.2 * wanted / rate)))

    def iter_structures(
        self,
        conditions: Conditions | None = None,
        stats: SampleStats | None = None,
        accept: Callable[[Atoms], bool] | None = None,
        max_draws: int | None = None,
        wanted: int | None = None,
    ) -> Iterator[Atoms]:
        """Yield accepted structures until the caller stops or ``max_draws`` draws are spent: in the order of
        their rows in the batch (:func:`in_row_order`), so whenever the caller stops, what it took does not
        favour the rows that ended first (the short texts).

        ``wanted``: how many the caller will take; batches are then sized to it (:meth:`batch_size_for`)
        and to the draws left, instead of ``batch_size`` rows each, and the rows it is sure to take come
        as soon as each ends (a long run writes each crystal as it finishes); cut short all the same (killed,
        or another run filled the database), it has kept those of its batch in flight that ended first.
        ``stats`` counts every draw.  A sample of another space group than the one the grammar
        wrote is redrawn (:meth:`exact_group`); ``accept`` may refuse the rest (counted ``rejected``).
        ``atoms.info`` carries the provenance: text, prompt conditions, model,
        temperature, top-p, seed, batch and the sample's row in it.
        """
        stats = stats if stats is not None else SampleStats()
        prompt = generation_prompt(self.prompted(conditions))
        grammar = self.grammar(conditions)
        exact_group = self.exact_group(conditions, grammar)
        first = self.formula_first(conditions, grammar)
        if first is not None:
            prompt, grammar = first
        # Room for the formula (a token per symbol or digit) and the rest of the prompt, too.
        room = MAX_FORMULA_CHARS + len(grammar.lead) + MAX_UNITS_DIGITS + len(grammar.fixed) if first else 0
        limit = self.max_new_tokens() + room
        taken = 0
        while max_draws is None or stats.drawn < max_draws:
            size = self.batch_size_for(None if wanted is None else wanted - taken, stats)
            if wanted is not None and max_draws is not None:  # sized to the need, so to the budget left too
                size = min(size, max_draws - stats.drawn)
            # Rows the caller takes whatever happens come as they end; the rest in row order, so a caller that
            # stops early does not keep the rows that ended first, the short texts (the small cells).
            free = 0 if wanted is None else min(size, wanted - taken)
            rows = in_row_order(self.stream(prompt, size, grammar, limit), free)
            while True:
                started = time.time()
                item = next(rows, None)
                stats.seconds += time.time() - started  # sampling time, not the caller's
                if item is None:
                    break
                index, text = item
                batch = self.batch_number
                stats.drawn += 1
                if text is None:
                    stats.unparseable += 1
                    kind = "cut off at the length limit, or a dead end of the grammar"
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                    continue
                written = None  # formula first: the conditions the model wrote into its prompt
                if first is not None:
                    try:
                        parsed = parse_prompt(prompt + text)
                    except PromptError as exc:  # the grammar forces the prompt; model text all the same
                        stats.unparseable += 1
                        kind = str(exc).split(":")[0]
                        stats.errors[kind] = stats.errors.get(kind, 0) + 1
                        continue
                    written, text = parsed.conditions, parsed.completion
                try:
                    atoms = self.codec.decode(text)
                except CrystalTextError as exc:
                    stats.unparseable += 1
                    kind = str(exc).split(":")[0]
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                    continue
                if self.settings.require_valid and not structurally_valid(atoms):
                    stats.invalid += 1
                    continue
                if exact_group and not check_spacegroup(atoms, {"spacegroup": exact_group})["sg_match"]:
                    stats.rejected += 1
                    kind = f"spglib finds a group other than {exact_group} (special positions)"
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                    continue
                # Provenance first: a required check may read it (sg_match compares with the conditions).
                atoms.info.update(
                    {
                        "text": text,
                        "conditions": (conditions or Conditions()).as_dict(),
                        "model": self.bundle.name,
                        "temperature": self.settings.temperature,
                        "top_p": self.settings.top_p,
                        "cell_temperature": self.settings.cell_temperature,
                        "seed": self.seed,
                        "batch": batch,
                        "sample": index,
                        "constrained": self.settings.constrained,
                        "formula_enforced": grammar is not None
                        and bool(conditions and conditions.formula)
                        and self.settings.enforce_formula,
                        "min_distance": self.settings.min_distance if grammar is not None else 0.0,
                        "formula_first": first is not None,
                    }
                )
                if written is not None:  # what the model chose, beside what was asked
                    atoms.info["written_formula"] = written.formula
                    if written.formula_units is not None:
                        atoms.info["written_formula_units"] = written.formula_units
                if accept is not None and not accept(atoms):
                    stats.rejected += 1
                    continue
                stats.accepted += 1
                taken += 1
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

    def masked_text(self, atoms: Atoms, element: str) -> str:
        """``atoms`` written as the model learnt (its codec, its site order) with ``element`` masked."""
        return self.codec.masked(self.codec.encode(self.codec.ordered(atoms, self.bundle.site_order)), element)

    def infill(self, masked_text: str, n: int, elements: tuple[str, ...] | None = None) -> list[str]:
        """``n`` element symbols sampled for the ``[MASK]`` of ``masked_text`` (see :meth:`masked_text`)."""
        grammar = ElementGrammar(elements or self.settings.elements, max_atoms=1)
        answers = self.complete(infill_prompt(masked_text), n, grammar, max_new_tokens=6)
        return [a.strip() for a in answers if a and a.strip() in grammar.elements]
