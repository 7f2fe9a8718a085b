"""Prompts of the three tasks of the multi-task curriculum (paper Sec. 3).

* unconditional generation: :func:`generation_prompt` with no conditions
* conditional generation: formula (with or without its number of formula units per cell), space
  group, formation energy, band gap and energy above hull, any subset (formula first)
* infill: one element masked (by the codec, e.g. :func:`ase_llmgen.text.paper.mask_element`), the model names it

Builders return the text a model sees; :func:`parse_prompt` reads any of them
back (with or without the model's completion) or raises :class:`PromptError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ase_llmgen.text.errors import CrystalTextError

GEN_HEAD = "Below is a description of a bulk material. "
GEN_TAIL = (
    "Generate a description of the lengths and angles of the lattice vectors and then the "
    "element type and coordinates for each atom within the lattice:\n"
)
MASK = "[MASK]"
INFILL_HEAD = (
    'Below is a partial description of a bulk material where one element has been replaced with the string "[MASK]":\n'
)
INFILL_TAIL = "\nGenerate an element that could replace [MASK] in the bulk material:\n"

# Order in which conditions are written: formula first, as in the paper.
CONDITION_TEMPLATES = {
    "formula": "The chemical formula is {}. ",
    "formula_units": "The number of formula units is {}. ",
    "spacegroup": "The spacegroup number is {}. ",
    "formation_energy": "The formation energy per atom is {}. ",
    "band_gap": "The band gap is {}. ",
    "e_above_hull": "The energy above the convex hull is {}. ",
}
# The constant pieces of every template (a tokenizer may keep each as one token).
FIXED_PHRASES = tuple(
    dict.fromkeys(
        (
            GEN_HEAD,
            GEN_TAIL,
            INFILL_HEAD,
            INFILL_TAIL,
            MASK,
            *(part for t in CONDITION_TEMPLATES.values() for part in t.split("{}") if part),
        )
    )
)
# Phrases added after the first models shipped: a tokenizer puts them after all its other tokens, so every
# token a saved model knows keeps its id in a tokenizer built today.
LATER_PHRASES = ("The number of formula units is ",)


class PromptError(CrystalTextError):
    """A prompt that does not follow any of the task templates."""


_FORMULA = re.compile(r"[A-Za-z0-9()]+")
# pymatgen's formula parser is superlinear (a 10^6-character formula took 13 s); no real formula is this long.
MAX_FORMULA_LENGTH = 200


def _is_formula(text: str) -> bool:
    from pymatgen.core import Composition

    if len(text) > MAX_FORMULA_LENGTH or not _FORMULA.fullmatch(text):
        return False
    try:
        return all(el.Z > 0 for el in Composition(text).elements) and Composition(text).num_atoms > 0
    except Exception:  # pymatgen raises several types for junk
        return False


@dataclass(frozen=True)
class Conditions:
    """What a generated crystal is asked to be. ``None`` means unconstrained."""

    formula: str | None = None
    spacegroup: int | None = None
    formation_energy: float | None = None
    band_gap: float | None = None
    e_above_hull: float | None = None
    # Formula units per cell (the cell the codec writes); needs a formula. Last, so positional use stays as
    # it was; written right after the formula.
    formula_units: int | None = None

    def as_dict(self) -> dict:
        """The conditions that are set, in prompt order."""
        return {name: getattr(self, name) for name in CONDITION_TEMPLATES if getattr(self, name) is not None}

    def __post_init__(self):
        if self.spacegroup is not None and not 1 <= int(self.spacegroup) <= 230:
            raise ValueError(f"spacegroup must be 1..230, got {self.spacegroup}")
        if self.formula_units is not None:
            if self.formula is None:
                raise ValueError("formula_units needs a formula: it counts units of that formula per cell")
            units = self.formula_units
            try:
                whole = not isinstance(units, bool) and int(units) == units
            except (TypeError, ValueError, OverflowError):  # "x", NaN, inf
                whole = False
            if not whole:
                raise ValueError(f"formula_units must be a whole number, got {units!r}")
            if not 1 <= int(units) <= 999:
                raise ValueError(f"formula_units must be 1..999, got {units}")
            object.__setattr__(self, "formula_units", int(units))  # 2.0 and 2 make the same request
        if self.formula is not None and not _is_formula(self.formula):
            shown = self.formula if len(self.formula) <= 60 else f"{self.formula[:60]}... ({len(self.formula)} chars)"
            raise ValueError(
                f"formula {shown!r} is not a chemical formula like 'LiFePO4' or 'Sm(GdS2)2' "
                f"(at most {MAX_FORMULA_LENGTH} characters)"
            )
        for name in ("formation_energy", "band_gap", "e_above_hull"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value}")


def format_value(name: str, value) -> str:
    """Write a condition value as the prompts do (floats rounded to 4 places)."""
    if name == "formula":
        return str(value)
    if name in ("spacegroup", "formula_units"):
        return str(int(value))
    return str(round(float(value), 4) + 0.0)  # + 0.0 turns -0.0 into 0.0


def generation_prompt(conditions: Conditions | None = None) -> str:
    """The prompt of (un)conditional generation, up to where the crystal starts."""
    parts = [GEN_HEAD]
    for name, value in (conditions or Conditions()).as_dict().items():
        parts.append(CONDITION_TEMPLATES[name].format(format_value(name, value)))
    parts.append(GEN_TAIL)
    return "".join(parts)


def infill_prompt(masked_text: str) -> str:
    """The infill prompt for a crystal text with one element masked."""
    if MASK not in masked_text:
        raise ValueError(f"infill text has no {MASK}")
    return INFILL_HEAD + masked_text + INFILL_TAIL


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt read back: the task, its conditions and the text after the prompt."""

    task: str  # "generate" or "infill"
    conditions: Conditions
    completion: str  # crystal text (generate) or the element (infill); may be ""
    masked: str | None = None  # the masked crystal (infill)


_VALUE_RES = {"formula": r"([A-Za-z0-9()]+)", "spacegroup": r"(\d+)", "formula_units": r"(\d+)"}
_CONDITION_RES = {
    name: re.compile(re.escape(template).replace(r"\{\}", _VALUE_RES.get(name, r"(-?\d+(?:\.\d+)?)")))
    for name, template in CONDITION_TEMPLATES.items()
}


def _condition_value(name: str, raw: str):
    """A condition's value from its text in a prompt (a :class:`PromptError` for one that is no such value)."""
    try:
        if name == "formula":
            return raw
        if name in ("spacegroup", "formula_units"):
            if len(raw) > 3:  # int() of a huge digit string is slow or refused; neither has 4 digits
                what = "space-group number" if name == "spacegroup" else "number of formula units"
                raise ValueError(f"{raw[:20]!r} is no {what}")
            return int(raw)
        return float(raw)
    except ValueError as exc:
        raise PromptError(f"bad {name} in the prompt: {exc}") from exc


def parse_prompt(text: str) -> ParsedPrompt:
    """Read a prompt (and any completion after it) back into its parts."""
    if text.startswith(GEN_HEAD):
        rest = text[len(GEN_HEAD) :]
        found: dict = {}
        progress = True
        while progress and not rest.startswith(GEN_TAIL):
            progress = False
            for name, pattern in _CONDITION_RES.items():
                m = pattern.match(rest)
                if m:
                    if name in found:
                        raise PromptError(f"condition {name!r} given twice")
                    found[name] = _condition_value(name, m.group(1))
                    rest = rest[m.end() :]
                    progress = True
                    break
        if not rest.startswith(GEN_TAIL):
            raise PromptError(
                f"unrecognised text in the prompt at {rest[:40]!r}",
                expected="a condition (a space-group number is a whole number 1-230) or the task line",
            )
        try:
            conditions = Conditions(**found)
        except ValueError as exc:
            raise PromptError(str(exc)) from exc
        return ParsedPrompt("generate", conditions, rest[len(GEN_TAIL) :])
    if text.startswith(INFILL_HEAD):
        rest = text[len(INFILL_HEAD) :]
        cut = rest.find(INFILL_TAIL)
        if cut < 0:
            raise PromptError("infill prompt has no question line", expected=repr(INFILL_TAIL.strip()))
        masked = rest[:cut]
        if MASK not in masked:
            raise PromptError(f"infill prompt has no {MASK} in the crystal")
        return ParsedPrompt("infill", Conditions(), rest[cut + len(INFILL_TAIL) :], masked)
    raise PromptError("text starts with neither task template", expected=repr(GEN_HEAD) + " or the infill header")
