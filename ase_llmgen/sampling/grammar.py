"""The crystal-string grammar, enforced token by token during sampling.

Lines of the paper's format are matched as regular patterns on a *canonical*
alphabet where digits are replaced by their class: that is
exact for these patterns (digit classes 0, 1, 2-7, 8-9), and lets allowed-token masks be cached per grammar
state instead of per literal prefix.  Works with any tokenizer (single-digit
or BPE): a token is allowed when its whole text keeps the output a viable
prefix of a crystal string.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import regex
from ase.data import chemical_symbols

ALL_ELEMENTS = tuple(chemical_symbols[1:])
# Elements a model may write by default: H to Pu, the range of the Materials Project.
DEFAULT_ELEMENTS = tuple(chemical_symbols[1:95])
# Digit classes: 0, 1, 2-7, 8-9 -- enough to say "an angle is 1..179" exactly.
_CANON = str.maketrans("345679", "222228")

_D = "[0128]"
_LEN = rf"(?:0\.[128]|[128]{_D}{{0,2}}\.{_D})"  # lattice length 0.1 to 999.9 A, one decimal
_ANG = rf"(?:[128]|[128]{_D}|1[012]{_D})"  # integer angle, 1..179
_FRAC = rf"0\.{_D}{_D}"  # fractional coordinate in [0, 1), two decimals
PHASES = ("lengths", "angles", "element", "coords")
NEXT_PHASE = {"lengths": "angles", "angles": "element", "element": "coords", "coords": "element"}


class State(NamedTuple):
    """Where the output is: the line type, the canonical text of that line so far, atoms completed."""

    phase: str
    partial: str
    atoms: int


class CrystalGrammar:
    """Accepts exactly the paper-format strings with ``min_atoms..max_atoms`` sites of ``elements``."""

    def __init__(self, elements: Iterable[str] | None = None, max_atoms: int = 20, min_atoms: int = 1):
        self.elements = tuple(sorted(set(elements or DEFAULT_ELEMENTS)))
        unknown = set(self.elements) - set(ALL_ELEMENTS)
        if unknown:
            raise ValueError(f"not chemical elements: {sorted(unknown)}")
        if not 1 <= min_atoms <= max_atoms:
            raise ValueError("need 1 <= min_atoms <= max_atoms")
        self.max_atoms, self.min_atoms = max_atoms, min_atoms
        element_re = "(?:" + "|".join(sorted(self.elements, key=len, reverse=True)) + ")"
        self.patterns = {
            "lengths": regex.compile(f"{_LEN} {_LEN} {_LEN}"),
            "angles": regex.compile(f"{_ANG} {_ANG} {_ANG}"),
            "element": regex.compile(element_re),
            "coords": regex.compile(f"{_FRAC} {_FRAC} {_FRAC}"),
        }

    start = State("lengths", "", 0)

    def key(self, state: State) -> tuple:
        """What the set of allowed tokens depends on (for caching masks).

        The three numbers of a line share one pattern and are separated by single spaces, so
        only the field index and the number being written matter, not the numbers before it.
        """
        field, _, current = state.partial.rpartition(" ")
        index = field.count(" ") + 1 if field else 0
        return state.phase, index, current, state.atoms + 1 >= self.max_atoms, state.atoms + 1 >= self.min_atoms

    def _complete(self, state: State) -> bool:
        return self.patterns[state.phase].fullmatch(state.partial) is not None

    def advance(self, state: State | None, text: str) -> State | None:
        """The state after ``text``, or ``None`` if ``text`` breaks the grammar."""
        for ch in text.translate(_CANON):
            if state is None:
                return None
            if ch == "\n":
                if not self._complete(state):
                    return None
                atoms = state.atoms + (state.phase == "coords")
                if state.phase == "coords" and atoms >= self.max_atoms:
                    return None
                state = State(NEXT_PHASE[state.phase], "", atoms)
            else:
                partial = state.partial + ch
                if self.patterns[state.phase].fullmatch(partial, partial=True) is None:
                    return None
                state = State(state.phase, partial, state.atoms)
        return state

    def can_end(self, state: State | None) -> bool:
        """Whether the output may stop (EOS) here."""
        return (
            state is not None
            and state.phase == "coords"
            and state.atoms + 1 >= self.min_atoms
            and self._complete(state)
        )


class ElementGrammar(CrystalGrammar):
    """The infill answer: one element symbol of ``elements``, then the end."""

    start = State("element", "", 0)

    def advance(self, state: State | None, text: str) -> State | None:
        for ch in text:
            if state is None or ch == "\n":
                return None
            partial = state.partial + ch
            if self.patterns["element"].fullmatch(partial, partial=True) is None:
                return None
            state = State("element", partial, 0)
        return state

    def can_end(self, state: State | None) -> bool:
        return state is not None and self._complete(state)
