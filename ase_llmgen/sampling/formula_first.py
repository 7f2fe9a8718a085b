"""Formula-first sampling: the model writes a chemical formula into its own prompt, then a crystal of it.

The models learn the whole prompt, conditions included (the loss covers every token, as in the paper),
so a model has learnt how formulas are distributed, not only crystals. Sampling the formula first and
then the crystal under the grammar that holds the text to that formula (the one ``--formula`` uses) is
plain ancestral sampling from the same model in the prompt's own order, formula before structure, as
CrystaLLM writes its formula first. Nothing outside the model chooses: no charge or distance check.

It matters for the wyckoff codec, whose compositions come from orbit multiplicities: the formulas the
built-in wyckoff model writes are charge-balanced (SMACT) about as often as MP-20's own, more often
than the compositions its crystals reach site by site (docs/benchmarks.md, "Compositional validity").
A model whose curriculum stated formula units (``CurriculumConfig.formula_units``) writes them next, so the
crystal's size is fixed before its cell: without them the grammar lets a crystal grow to any whole number
of formula units, and cells overfill.

:class:`FormulaFirstGrammar` wraps a codec's grammar: one decoding pass writes the formula (and units), the
rest of the prompt (forced), then the crystal, every row with its own formula.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from ase_llmgen.text.prompts import CONDITION_TEMPLATES, GEN_HEAD, Conditions, generation_prompt

FORMULA_LEAD, FORMULA_END = CONDITION_TEMPLATES["formula"].split("{}")
UNITS_LEAD = CONDITION_TEMPLATES["formula_units"].split("{}")[0]
MAX_FORMULA_CHARS = 40  # MP-20's longest reduced formula has 17 characters
MAX_UNITS_DIGITS = 3  # Conditions.formula_units is 1..999


class FFState(NamedTuple):
    """A row's place: ``phase`` is ``"formula"``, ``"lead"`` (the forced text between the formula and its units),
    ``"units"``, ``"prompt"`` (the forced rest of the prompt) or the inner grammar's phase; ``text`` the formula
    so far (then the formula); ``units`` the digits of the formula units so far; ``done`` the forced tokens
    written in the current phase."""

    phase: str
    text: str
    done: int = 0
    inner: Any = None
    units: str = ""


def prompt_parts(conditions: Conditions | None, units: bool = False) -> tuple[str, str, str]:
    """``(prompt, lead, rest)``: the prompt up to where a formula is written; with ``units``, what follows the
    formula up to its number of formula units (else ``""``); and what follows those (or the formula) up to the
    crystal (the other conditions asked for, in prompt order, and the tail)."""
    asked = (conditions or Conditions()).as_dict()
    if "formula" in asked or "formula_units" in asked:
        raise ValueError("formula-first sampling is for requests without a formula")
    whole = generation_prompt(Conditions(formula="H", formula_units=7 if units else None, **asked))
    prompt = GEN_HEAD + FORMULA_LEAD
    if not whole.startswith(prompt + "H" + FORMULA_END):  # the formula is the first condition of a prompt
        raise AssertionError("the prompt no longer starts with the formula")
    after = whole[len(prompt) + 1 :]
    if not units:
        return prompt, "", after
    lead = FORMULA_END + UNITS_LEAD
    if not after.startswith(lead + "7"):  # the units follow the formula
        raise AssertionError("the prompt no longer gives the formula units after the formula")
    return prompt, lead, after[len(lead) + 1 :]


def _formula_prefix(text: str) -> tuple[bool, bool]:
    """``(prefix, complete)``: whether ``text`` can start a formula like ``Ba(Bi3S4)2``, and whether it is one.

    Element symbols, counts without leading zeros and at most one level of parentheses, as MP-20's
    formulas are written. Which symbols are elements is checked per token (:meth:`FormulaFirstGrammar.advance`)."""
    depth, last, inside, digits = 0, "", 0, 0
    for ch in text:
        if ch.isupper():
            last, digits = "element", 0
            inside += depth
        elif ch.islower():
            if last != "element":
                return False, False
        elif ch.isdigit():
            if last not in ("element", "close", "digit") or (ch == "0" and last != "digit") or digits >= 3:
                return False, False
            last, digits = "digit", digits + 1
        elif ch == "(":
            if depth or last == "open":
                return False, False
            depth, last, inside = 1, "open", 0
        elif ch == ")":
            if not depth or not inside or last == "open":
                return False, False
            depth, last = 0, "close"
        else:
            return False, False
    return True, bool(text) and depth == 0 and last in ("element", "digit", "close")


class FormulaFirstGrammar:
    """The formula (and, with ``lead``, its formula units), the rest of the prompt, then the crystal of
    ``grammar_for(formula, units)``, in one text.

    ``grammar_for``: the codec's grammar holding a crystal to a formula and, unless ``None``, that many units
    of it (raising for one it cannot write, e.g. more atoms than allowed); ``elements``: the symbols a
    formula may use; ``lead`` / ``fixed``: the texts of the tokens between the formula and its units (empty:
    no units are written) / after the units (or the formula) up to the crystal, as the model's tokenizer
    writes the prompt (only those, in turn: the model reads its prompt as it learnt it); ``cell_phases``: the
    inner grammars' (the units are drawn with them). Units are offered only where their crystal can be
    written, so a row is never stuck at its units; a formula that has none (or whose crystal the grammar
    refuses) is a dead end: the row ends and is redrawn, like any other.
    """

    def __init__(
        self,
        grammar_for: Callable[[str, int | None], Any],
        elements: Iterable[str],
        fixed: tuple[str, ...],
        cell_phases: tuple[str, ...],
        signature: tuple,
        lead: tuple[str, ...] = (),
        max_units: int = 20,
    ):
        if not fixed:
            raise ValueError("a formula-first prompt has text after the formula")
        self.grammar_for, self.fixed, self.lead = grammar_for, tuple(fixed), tuple(lead)
        # The formula units set the cell's size as much as its lengths: they are drawn at the cell temperature.
        self.cell_phases = (*cell_phases, "units")
        self.max_units = int(max_units)
        self.elements = frozenset(elements)
        self._signature = ("FormulaFirstGrammar", self.lead, self.fixed, *signature)

    start = FFState("formula", "")

    def signature(self) -> tuple:
        """What the masks depend on besides the state."""
        return self._signature

    @lru_cache(maxsize=2048)  # noqa: B019 -- the grammar lives as long as its sampler
    def inner(self, formula: str, units: str = "") -> Any:
        """The crystal grammar of ``formula`` in ``units`` formula units (``""``: any); ``None``: none."""
        try:
            return self.grammar_for(formula, int(units) if units else None)
        except (ValueError, KeyError, ArithmeticError):  # model text: a formula the codec cannot write is a dead end
            return None

    @lru_cache(maxsize=512)  # noqa: B019
    def units(self, formula: str) -> frozenset[str]:
        """The numbers of formula units (as written) whose crystal the grammar can write."""
        return frozenset(str(z) for z in range(1, self.max_units + 1) if self.inner(formula, str(z)) is not None)

    def key(self, state: FFState) -> tuple:
        """What the allowed tokens after ``state`` depend on (masks are cached by it)."""
        if state.phase == "formula":
            return "formula", state.text
        if state.phase in ("lead", "prompt"):
            return state.phase, state.text if state.phase == "lead" else "", state.done
        if state.phase == "units":
            return "units", state.text, state.units
        return "crystal", state.text, state.units, self.inner(state.text, state.units).key(state.inner)

    def advance(self, state: FFState | None, text: str) -> FFState | None:
        """The state after ``text`` (one token's text), or ``None`` where it breaks the grammar."""
        if state is None or not text:
            return None
        if state.phase == "formula":
            ends = self.lead or self.fixed
            if text == ends[0]:  # the formula ends here
                if not _formula_prefix(state.text)[1]:
                    return None
                if self.lead:
                    return self._led(state.text, 1) if self.units(state.text) else None
                return None if self.inner(state.text) is None else self._prompted(state.text, "", 1)
            # Element symbols come whole from the vocabulary (never "B" then "r"), and only those allowed.
            if text[0].isalpha() and text not in self.elements:
                return None
            formula = state.text + text
            if len(formula) > MAX_FORMULA_CHARS or not _formula_prefix(formula)[0]:
                return None
            return FFState("formula", formula)
        if state.phase == "lead":
            return self._led(state.text, state.done + 1) if text == self.lead[state.done] else None
        if state.phase == "units":
            if text == self.fixed[0]:  # the units end here
                return self._prompted(state.text, state.units, 1) if state.units in self.units(state.text) else None
            units = state.units + text
            if not any(z.startswith(units) for z in self.units(state.text)):
                return None
            return FFState("units", state.text, 0, None, units)
        if state.phase == "prompt":
            if text != self.fixed[state.done]:
                return None
            return self._prompted(state.text, state.units, state.done + 1)
        inner = self.inner(state.text, state.units)
        after = inner.advance(state.inner, text)
        if after is None:
            return None
        return FFState(getattr(after, "phase", "crystal"), state.text, state.done, after, state.units)

    def _led(self, formula: str, done: int) -> FFState:
        """After ``done`` of the tokens between the formula and its units."""
        return FFState("lead", formula, done) if done < len(self.lead) else FFState("units", formula)

    def _prompted(self, formula: str, units: str, done: int) -> FFState:
        """After ``done`` of the fixed tokens: still in the prompt, or at the crystal's start."""
        if done < len(self.fixed):
            return FFState("prompt", formula, done, None, units)
        start = self.inner(formula, units).start
        return FFState(getattr(start, "phase", "crystal"), formula, done, start, units)

    def whole_tokens(self, state: FFState) -> frozenset[str] | None:
        """The rest of the prompt as the model learnt it, token by token; in the crystal, the inner grammar's
        whole tokens (see :class:`ase_llmgen.text.grammar.CrystalGrammar`)."""
        if state.phase == "prompt":
            return frozenset((self.fixed[state.done],))
        if state.phase == "lead":
            return frozenset((self.lead[state.done],))
        if state.phase in ("formula", "units"):
            return None
        whole = getattr(self.inner(state.text, state.units), "whole_tokens", None)
        return whole(state.inner) if whole is not None else None

    def can_end(self, state: FFState | None) -> bool:
        """Whether the text may end at ``state``: only inside a crystal the inner grammar would end."""
        if state is None or state.phase in ("formula", "lead", "units", "prompt"):
            return False
        return self.inner(state.text, state.units).can_end(state.inner)
