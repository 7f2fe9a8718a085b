"""The one error type for malformed crystal text."""

from __future__ import annotations


class CrystalTextError(ValueError):
    """Malformed crystal text.

    ``line`` is the 1-based line number where parsing failed (``None`` when the
    problem is global), ``expected`` says what the parser wanted there.
    """

    def __init__(self, message: str, line: int | None = None, expected: str | None = None):
        self.line = line
        self.expected = expected
        where = f"line {line}: " if line is not None else ""
        want = f" (expected {expected})" if expected else ""
        super().__init__(f"{where}{message}{want}")
