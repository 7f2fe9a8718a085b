"""Grammars for constrained decoding: the contract, the paper format's grammar and the infill answer's.

A codec (:class:`ase_llmgen.registry.Codec`) that supports constrained decoding gives a
``grammar`` factory; what it returns is any object with

* ``start``: the state of an empty text (states are hashable and never mutated),
* ``advance(state, text)``: the state after ``text``, or ``None`` if ``text`` breaks the grammar,
* ``can_end(state)``: whether the text may stop (EOS) here,
* ``key(state)``: what the set of allowed tokens depends on (masks are cached by it),
* ``signature()``: what the masks depend on besides the state (to share them between samplers),
* optionally ``whole_tokens(state)``: a set of token texts; where the vocabulary has all of
  them, only these may start here (the paper's coordinates, when they are single tokens), and
* optionally ``elements``: the element symbols it lets the text use, and
* optionally ``cell_phases``: the ``phase`` values of the states that write the cell, the lines
  before the first site (for a separate cell temperature, ``SampleSettings.cell_temperature``).

Per-sample filters (:class:`RowFilter`, e.g. the paper's distance guard in :mod:`.geometry`)
narrow the grammar's masks for one sample; a codec gives them through its ``filters`` factory.

The paper's lines are matched as regular patterns on a *canonical*
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

from ase_llmgen.text.paper import COORDINATES

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
    counts: tuple[int, ...] = ()  # sites per element so far (CompositionGrammar only)


class RowFilter:
    """One sample's narrowing of the grammar's masks (e.g. the distance guard, :mod:`.geometry`).

    A filter sees the sample's output as it is written (:meth:`feed`) and says
    whether a token's text may come next (:meth:`allows`; ``phase`` is the grammar
    state's ``phase``, ``None`` for states without one); :meth:`quiet` says
    when it has nothing to remove, so the per-token check can be skipped.
    """

    def feed(self, text: str) -> None:
        """Take ``text``, the next piece of output."""
        raise NotImplementedError

    def allows(self, text: str, phase: str | None) -> bool:
        """Whether ``text`` may be written next, in a line of ``phase``."""
        raise NotImplementedError

    def quiet(self, state) -> bool:
        """Whether this filter allows every token the grammar allows in ``state``."""
        return False


_COORDINATE_SET = frozenset(COORDINATES)


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
    cell_phases = ("lengths", "angles")

    def signature(self) -> tuple:
        """What the grammar's masks depend on besides the state (for sharing masks between samplers)."""
        return type(self).__name__, self.elements, self.max_atoms, self.min_atoms

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

    def whole_tokens(self, state: State) -> frozenset[str] | None:
        """The coordinates, where one starts: a tokenizer with one token per coordinate writes each as that
        token in training, never digit by digit, so samples stay on the path the model learnt (and its
        probability is renormalised onto it)."""
        if state.phase == "coords" and state.partial.rpartition(" ")[2] == "":
            return _COORDINATE_SET
        return None

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
                state = state._replace(phase=NEXT_PHASE[state.phase], partial="", atoms=atoms)
            else:
                partial = state.partial + ch
                if self.patterns[state.phase].fullmatch(partial, partial=True) is None:
                    return None
                state = state._replace(partial=partial)
        return state

    def can_end(self, state: State | None) -> bool:
        """Whether the output may stop (EOS) here."""
        return (
            state is not None
            and state.phase == "coords"
            and state.atoms + 1 >= self.min_atoms
            and self._complete(state)
        )


class CompositionGrammar(CrystalGrammar):
    """Crystal strings whose composition is ``formula`` times a whole number of formula units.

    Formula conditioning made exact: an element line is allowed only while the
    counts can still reach ``z`` formula units for some allowed ``z``, and the
    text may end only when they do.  The prompt still carries the formula; this
    only removes the samples that would ignore it.
    """

    def __init__(self, formula: str, max_atoms: int = 20, min_atoms: int = 1):
        from pymatgen.core import Composition

        try:
            amounts = Composition(formula).reduced_composition.get_el_amt_dict()
        except Exception as exc:  # pymatgen raises several types for junk
            raise ValueError(f"formula {formula!r} is not a chemical formula") from exc
        if not amounts or any(abs(a - round(a)) > 1e-6 or round(a) < 1 for a in amounts.values()):
            raise ValueError(f"formula {formula!r} needs whole numbers of atoms, e.g. 'Na2Cl2' for 'Na0.5Cl0.5'")
        elements = tuple(sorted(amounts))
        super().__init__(elements, max_atoms, min_atoms)
        self.formula = formula
        self.units = tuple(int(round(amounts[e])) for e in self.elements)
        per_unit = sum(self.units)
        self.z_values = [z for z in range(1, max_atoms // per_unit + 1) if z * per_unit >= min_atoms]
        if not self.z_values:
            raise ValueError(
                f"formula {formula} has {per_unit} atoms per formula unit: no whole number of formula units "
                f"fits in {min_atoms}..{max_atoms} atoms (raise max_atoms)"
            )
        self.start = State("lengths", "", 0, (0,) * len(self.elements))

    def signature(self) -> tuple:
        return super().signature() + (self.units, tuple(self.z_values))

    def _reachable(self, counts: tuple[int, ...]) -> bool:
        # z formula units need counts <= z * units everywhere; more atoms can only be added, never removed.
        need = max(-(-c // u) for c, u in zip(counts, self.units))
        return need <= self.z_values[-1]

    def _whole(self, counts: tuple[int, ...]) -> bool:
        z = counts[0] // self.units[0]
        return z in self.z_values and all(c == z * u for c, u in zip(counts, self.units))

    def _addable(self, counts: tuple[int, ...]) -> tuple[bool, ...]:
        return tuple(self._reachable(counts[:i] + (c + 1,) + counts[i + 1 :]) for i, c in enumerate(counts))

    def key(self, state: State) -> tuple:
        return super().key(state) + (self._addable(state.counts), self._whole(state.counts))

    def advance(self, state: State | None, text: str) -> State | None:
        for ch in text:
            if state is None:
                return None
            counts = state.counts
            if ch == "\n" and state.phase == "element" and state.partial in self.elements:
                i = self.elements.index(state.partial)
                counts = counts[:i] + (counts[i] + 1,) + counts[i + 1 :]
                if not self._reachable(counts):
                    return None
            elif ch == "\n" and state.phase == "coords" and not any(self._addable(counts)):
                return None  # no element can follow: the text must end here
            elif state.phase == "element" and ch != "\n":
                partial = state.partial + ch  # only symbols of elements that may still be added
                if not any(ok and e.startswith(partial) for e, ok in zip(self.elements, self._addable(counts))):
                    return None
            state = super().advance(state, ch)
            if state is not None and counts != state.counts:
                state = state._replace(counts=counts)
        return state

    def can_end(self, state: State | None) -> bool:
        return super().can_end(state) and self._whole(state.counts)


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
            state = state._replace(partial=partial)
        return state

    def can_end(self, state: State | None) -> bool:
        return state is not None and self._complete(state)
