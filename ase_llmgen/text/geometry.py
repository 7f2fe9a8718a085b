"""The distance guard, the paper codec's per-sample filter: sites closer than ``min_distance`` are never sampled.

The grammar only knows the *shape* of a crystal string.  Most structurally
invalid samples of a small model are a site written again at a position
already taken (MP-20 test, default model, tau 0.7: 156 of 203 invalid samples
had two sites within 0.01 A).  Once the lattice lines are written, every
position the paper format can express is a point of a 100 x 100 x 100 grid of
fractional coordinates (two decimals), so the guard keeps, per sample, which
grid points are still at least ``min_distance`` (minimum image) from every site
written so far, and masks each coordinate digit that would leave no free point
in reach.  The model still chooses among the free positions with its own
probabilities; only positions that would make the crystal invalid are removed.

Exact for the parsed structure: the parser builds the same lattice from the
same rounded numbers and the same grid coordinates (a distance equal to
``min_distance`` within 1e-6 A counts as too close, as pymatgen's rounding may
put it just under).  A lattice whose numbers give no cell (impossible angles),
or a cell so thin against ``min_distance`` that the search for a site's blocked
points would pass 30 million offsets, switches the guard off for that sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from ase.geometry import cellpar_to_cell

from ase_llmgen.text.grammar import RowFilter, State

GRID = 100  # two decimals per fractional coordinate
# Unwrapped offsets searched around a site (chunked; ~1 s at the limit). Beyond it the cell is so thin
# against min_distance (a perpendicular width under ~min_distance / 3) that it is junk: the guard stays off.
_MAX_SEARCH = 30_000_000
# pymatgen's distances (the validity check) and ours differ in the last bits: a tie counts as too close.
_TIE = 1e-6


class SiteGrid(RowFilter):
    """One sample's output so far and the grid positions still free for a new site."""

    def __init__(self, min_distance: float):
        self.min_distance = min_distance
        self.line = ""  # the current line, literal
        self.lines = 0  # lines completed
        self.free: np.ndarray | None = None  # bool (GRID, GRID, GRID) once the lattice is known; None = guard off
        self.n_free = GRID**3
        self.stencil: np.ndarray | None = None  # (M, 3) grid offsets mod GRID within min_distance of a site
        self._lengths = ""

    @property
    def any_free(self) -> bool:
        """Whether a new site still has somewhere to go."""
        return self.n_free > 0

    def quiet(self, state: State) -> bool:
        """Off (no cell), or nothing to check: only coordinates and the start of a site need room."""
        if self.free is None or state.phase not in ("element", "coords"):
            return True
        return state.phase == "element" and (state.partial != "" or self.any_free)

    def feed(self, text: str) -> None:
        """Take ``text``, the next piece of output."""
        for ch in text:
            if ch == "\n":
                self._end_line()
            else:
                self.line += ch

    def _end_line(self) -> None:
        line, self.line = self.line, ""
        self.lines += 1
        if self.lines == 1:
            self._lengths = line
        elif self.lines == 2:
            self._set_lattice(self._lengths, line)
        elif self.lines >= 4 and self.lines % 2 == 0 and self.free is not None:
            site = _site(line)
            if site is not None:
                self._occupy(site)

    def _set_lattice(self, lengths: str, angles: str) -> None:
        try:
            cellpar = [float(v) for v in lengths.split()] + [float(v) for v in angles.split()]
            with np.errstate(all="ignore"):
                cell = cellpar_to_cell(cellpar)
                inverse = np.linalg.inv(cell)
        except (ValueError, AssertionError, np.linalg.LinAlgError):  # ase asserts on impossible angles
            return
        if len(cellpar) != 6 or not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-6:
            return
        # Half-widths of the searched box in grid steps: a sphere of radius d spans d*|column i of the
        # inverse cell| in fractional coordinate i.
        reach = [math.ceil(GRID * self.min_distance * np.linalg.norm(inverse[:, i])) for i in range(3)]
        if math.prod(2 * r + 1 for r in reach) > _MAX_SEARCH:
            return
        oy, oz = np.meshgrid(np.arange(-reach[1], reach[1] + 1), np.arange(-reach[2], reach[2] + 1), indexing="ij")
        oy, oz = oy.ravel(), oz.ravel()
        plane = np.outer(oy, cell[1]) / GRID + np.outer(oz, cell[2]) / GRID
        limit = (self.min_distance + _TIE) ** 2
        slices = [
            (ox, ((plane + ox * cell[0] / GRID) ** 2).sum(axis=1) < limit) for ox in range(-reach[0], reach[0] + 1)
        ]
        if max(reach) < GRID // 2:  # the box fits in one period: each offset is a distinct grid point
            parts = [np.stack([np.full(near.sum(), ox), oy[near], oz[near]], axis=1) for ox, near in slices]
            self.stencil = np.concatenate(parts).astype(np.int32)
        else:  # the sphere wraps round: mark offsets on the wrapped grid, at most GRID^3 points
            template = np.zeros((GRID, GRID, GRID), dtype=bool)
            for ox, near in slices:
                template[ox % GRID, oy[near] % GRID, oz[near] % GRID] = True
            self.stencil = np.argwhere(template).astype(np.int32)
        self.free = np.ones((GRID, GRID, GRID), dtype=bool)

    def _blocked(self, site: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(((site + self.stencil) % GRID).T)

    def _occupy(self, site: np.ndarray) -> None:
        blocked = self._blocked(site)
        self.n_free -= int(self.free[blocked].sum())
        self.free[blocked] = False

    def allows(self, text: str, phase: str) -> bool:
        """Whether ``text``, written next in a line of ``phase``, leaves a free position in reach.

        On a coordinate line, ``text`` that ends the line must also leave room
        for another site: after the last site that fits, only the end is allowed.
        """
        if self.free is None:
            return True
        if phase == "element":  # a new site needs somewhere to go
            return self.any_free
        line, newline, _ = (self.line + text).partition("\n")
        fields = line.split(" ")
        digits = []  # the decimals of each coordinate written so far on this line
        for field in fields[:3]:
            decimals = field[2:] if field.startswith("0.") else ""
            if not decimals.isdigit() and decimals:
                return True  # not a coordinate the grammar writes; leave it to the grammar
            digits.append(decimals)
        box = []
        for decimals in digits + [""] * (3 - len(digits)):
            if len(decimals) == 0:
                box.append(slice(None))
            elif len(decimals) == 1:
                box.append(slice(10 * int(decimals), 10 * int(decimals) + 10))
            else:
                box.append(slice(int(decimals[:2]), int(decimals[:2]) + 1))
        if not self.free[tuple(box)].any():
            return False
        if newline:
            site = _site(line)
            if site is not None:  # room left for a next site once this one is placed?
                return self.n_free > int(self.free[self._blocked(site)].sum())
        return True


def _site(line: str) -> np.ndarray | None:
    """The grid point of a coordinate line, or ``None`` if it is not one."""
    try:
        site = np.array([int(round(float(v) * GRID)) for v in line.split()])
    except ValueError:
        return None
    return site if site.shape == (3,) and ((site >= 0) & (site < GRID)).all() else None


def guard(min_distance: float) -> Callable[[], SiteGrid]:
    """The distance guard as a filter factory for :class:`~ase_llmgen.sampling.decode.FilteredMasks`."""
    if min_distance <= 0:
        raise ValueError("min_distance must be positive (leave the guard out to switch it off)")
    return functools.partial(SiteGrid, min_distance)
