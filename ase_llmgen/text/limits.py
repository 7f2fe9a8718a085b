"""What a decoded crystal must be, whichever codec read it: finite numbers, a 3D cell of
sensible size, positions within reach of the cell.

Model output and users' files are untrusted: a text may spell ``1`` followed by 400
zeros (infinite in floating point), or a length so small that the volume underflows
to zero.  Such numbers parse, but no structure should come out of them.  The bounds
are far outside any inorganic crystal and inside what the paper's format can write
(lengths 0.1-999.9 A with one decimal; coordinates 0.00-0.99).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_LENGTH = 0.1  # A: the smallest non-zero length the paper's format writes
MAX_LENGTH = 1000.0  # A: the grammar writes at most 999.9
MAX_FRACTIONAL = 100.0  # |x| of a fractional coordinate; the format writes 0 <= x < 1
MIN_CELL_SHAPE = 1e-8  # 1 - sum cos^2 + 2 prod cos: volume / (a b c), squared; 0 for a flat cell


def lengths_problem(lengths: Sequence[float]) -> str | None:
    """Why ``lengths`` (a, b, c in A) cannot be a cell, or ``None`` when they can."""
    if not all(math.isfinite(x) for x in lengths):
        return f"lattice lengths {list(lengths)} are not all finite"
    if not all(MIN_LENGTH <= x <= MAX_LENGTH for x in lengths):
        return f"lattice lengths {list(lengths)} must lie between {MIN_LENGTH} and {MAX_LENGTH:g} A"
    return None


def angles_problem(angles: Sequence[float]) -> str | None:
    """Why ``angles`` (alpha, beta, gamma in degrees) cannot be a 3D cell, or ``None`` when they can."""
    if not all(math.isfinite(x) and 0 < x < 180 for x in angles):
        return f"angles {list(angles)} must lie strictly between 0 and 180 degrees"
    cos = [math.cos(math.radians(x)) for x in angles]
    shape = 1 - sum(c * c for c in cos) + 2 * cos[0] * cos[1] * cos[2]
    if not shape > MIN_CELL_SHAPE:
        return f"angles {list(angles)} do not form a 3D cell (zero volume)"
    return None


def coordinates_problem(frac: Sequence[float]) -> str | None:
    """Why fractional coordinates ``frac`` cannot be a site, or ``None`` when they can."""
    if not all(math.isfinite(x) and abs(x) <= MAX_FRACTIONAL for x in frac):
        return f"fractional coordinates {list(frac)} must be finite and within +-{MAX_FRACTIONAL:g}"
    return None
