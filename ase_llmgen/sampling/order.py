"""The site order a model learnt, enforced while it writes.

A model trained with ``site_order = "spatial"`` saw every crystal with its sites
sorted by their written fractional coordinates (x, then y, then z;
:func:`ase_llmgen.text.augment.sort_sites`).  In that model's language a site
line is always above the one before it, so a text that steps back is as
malformed as a coordinate of ``1.37``: this filter keeps each new coordinate
line strictly above the last one.  It needs no geometry (unlike the distance
guard it never looks at the lattice), and a sample it shapes is still a text
the model's training distribution could contain.  A side effect, and the
reason it matters: the same position can no longer be written twice.
"""

from __future__ import annotations

from ase_llmgen.sampling.decode import RowFilter
from ase_llmgen.sampling.grammar import State

# The highest line the format can write; after it no site can follow.
_TOP = ("0.99", "0.99", "0.99")


def _highest(line: str, complete: bool) -> tuple[str, ...] | None:
    """The highest coordinate line that starts with ``line`` (itself when ``complete``), or ``None`` if not one.

    Coordinates are ``0.dd``, so comparing their texts compares their values and the
    highest completion of a line raises each number to its highest completion in turn.
    """
    fields = line.split(" ")
    if len(fields) > 3:
        return None
    out = []
    for i, field in enumerate(fields):
        if complete or i < len(fields) - 1:
            if len(field) != 4:
                return None
            out.append(field)
        else:
            if not "0.99".startswith(field[:2]) or len(field) > 4:
                return None
            out.append(field + "0.99"[len(field) :])
    return tuple(out) + _TOP[len(out) :]


class SiteOrder(RowFilter):
    """One sample's last site line; a new one must come strictly after it (x, then y, then z)."""

    def __init__(self) -> None:
        self.line = ""  # the current line, literal
        self.lines = 0  # lines completed
        self.last: tuple[str, ...] | None = None

    def quiet(self, state: State) -> bool:
        """Nothing to check before the first site, nor outside coordinates and the start of a site."""
        if self.last is None or state.phase not in ("element", "coords"):
            return True
        return state.phase == "element" and (state.partial != "" or self.last < _TOP)

    def feed(self, text: str) -> None:
        """Take ``text``, the next piece of output."""
        for ch in text:
            if ch != "\n":
                self.line += ch
                continue
            line, self.line = self.line, ""
            self.lines += 1
            if self.lines >= 4 and self.lines % 2 == 0:  # lattice, angles, then element / coordinates pairs
                fields = tuple(line.split(" "))
                if len(fields) == 3:
                    self.last = fields

    def allows(self, text: str, phase: str) -> bool:
        """Whether ``text``, written next in a line of ``phase``, can still end above the last site."""
        if self.last is None:
            return True
        if phase == "element":  # a new site needs a line above the last
            return self.last < _TOP
        line, newline, _ = (self.line + text).partition("\n")
        highest = _highest(line, complete=bool(newline))
        return highest is None or highest > self.last  # not a coordinate line: the grammar's business
