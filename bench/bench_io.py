"""Shared by the resumable bench scripts: results as JSON lines, and binomial confidence intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of k successes in n trials ([nan, nan] for n = 0)."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file written as results finish (a line cut by a kill is skipped: redone)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
