"""The sampling settings: one object, from the command line (or Python) down to the decoder.

Every sampling setting and its default is written here once; the CLI, the structure
sources, :func:`ase_llmgen.sampling.run.generate_to_file`, the GA operators and the
sampler take a :class:`SampleSettings` (or keyword overrides of its fields, which
:meth:`SampleSettings.of` turns into one).  Imports nothing heavy (no torch), so the
command line can read the defaults for its help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class SampleSettings:
    """How to sample (paper: temperature 0.7 or 1.0, top-p 0.9)."""

    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 64
    max_atoms: int = 20
    elements: tuple[str, ...] | None = None  # restrict sampled elements; None = all
    constrained: bool = True  # grammar-constrained decoding
    require_valid: bool = True  # redraw structurally invalid samples too
    max_attempts_factor: int = 10  # give up after n * factor draws
    max_new_tokens: int | None = None  # default: from max_atoms and the tokenizer
    min_atoms: int = 1
    enforce_formula: bool = True  # with a formula condition, the grammar admits only that composition
    # Sites closer than this (A, minimum image) are never sampled (needs the grammar; 0 = off, the default).
    # Off by default: the samples it rescues have short contacts (archive/benchmarks_by_session.md section 7), and
    # redrawing an invalid sample gives a better crystal. The GA operators raise it to blmin's shortest bond.
    min_distance: float = 0.0
    # With a codec whose grammar writes the requested space group (wyckoff), redraw a sample in which spglib
    # (at the checks' 0.2 A) finds another group: the group's operations are always there, but orbits whose
    # coordinates fall on special values can add symmetry (e.g. F-43m orbits that make rock salt, Fm-3m).
    exact_spacegroup: bool = True
    # The temperature of the lines that write the cell (lattice; wyckoff: group and lattice), the rest at
    # `temperature`; None = the model's default (SampleSettings.for_model; the built-in wyckoff model: 0.9), else
    # `temperature` throughout (the paper). Needs the grammar, which says where the cell ends.
    cell_temperature: float | None = None
    # With no formula asked for, the model first writes one into its prompt, then a crystal of it (the grammar
    # holds the crystal to it, as for a formula asked for): sampling/formula_first.py. Needs the grammar.
    formula_first: bool = False

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.cell_temperature is not None and not self.cell_temperature >= 0:
            raise ValueError(f"cell_temperature must be >= 0 (0 = greedy) or None, got {self.cell_temperature}")
        if self.cell_temperature is not None and not self.constrained:
            raise ValueError("cell_temperature needs the grammar (constrained=True): it says where the cell ends")
        if self.formula_first and not self.constrained:
            raise ValueError("formula_first needs the grammar (constrained=True): it holds the crystal to the formula")
        if self.formula_first and not self.enforce_formula:
            raise ValueError("formula_first holds the crystal to the formula the model wrote: it needs enforce_formula")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1 <= self.min_atoms <= self.max_atoms:
            raise ValueError(
                f"need 1 <= min_atoms <= max_atoms, got min_atoms={self.min_atoms}, max_atoms={self.max_atoms}"
            )
        if self.min_atoms > 1 and not self.constrained:
            raise ValueError("min_atoms needs the grammar (constrained=True): unconstrained text cannot be held to it")
        if not self.min_distance >= 0:
            raise ValueError(f"min_distance must be >= 0 A (0 switches the guard off), got {self.min_distance}")
        if self.elements is not None and not isinstance(self.elements, tuple):
            self.elements = tuple(self.elements)

    @classmethod
    def of(cls, settings: SampleSettings | None = None, **overrides) -> SampleSettings:
        """``settings`` (default: the defaults) with the fields named in ``overrides`` replaced.

        ``None`` values are left out, so a caller can pass optional arguments through; an unknown
        name is a ``TypeError`` that lists the known ones.
        """
        unknown = set(overrides) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown sampling setting(s) {sorted(unknown)}; known: {list(FIELDS)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        if settings is None:
            return cls(**changes)
        return dataclasses.replace(settings, **changes) if changes else settings

    def for_model(self, meta: Mapping[str, Any], where: str = "the model") -> SampleSettings:
        """These settings with a model's own defaults for the fields left unset.

        A model folder's metadata (``ase_llmgen.json``) may hold ``"sampling_defaults"``, e.g.
        ``{"cell_temperature": 0.9}`` for the built-in wyckoff model, whose cells come out small at
        the paper's 0.7 throughout.  Only :data:`MODEL_DEFAULTS` fields, and only when left at ``None``, take
        the model's value; what a caller sets always wins.  ``where`` names the model in errors.
        """
        wanted = meta.get("sampling_defaults") or {}
        if not isinstance(wanted, Mapping):
            raise ValueError(f"{where}: 'sampling_defaults' must be a mapping, got {type(wanted).__name__}")
        unknown = set(wanted) - set(MODEL_DEFAULTS)
        if unknown:
            raise ValueError(
                f"{where}: 'sampling_defaults' names {sorted(unknown)}; a model may set only {list(MODEL_DEFAULTS)}"
            )
        changes = {}
        for name, value in wanted.items():
            if getattr(self, name) is not None or value is None:
                continue
            # JSON may hold 1 for 1.0: the same number must make the same request (and a string is an error here,
            # naming the model, not a TypeError deep in the decoder).
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{where}: 'sampling_defaults' {name} must be a number >= 0, got {value!r}")
            changes[name] = float(value)
        if not self.constrained:  # the cell temperature needs the grammar; without it the paper's one temperature
            changes.pop("cell_temperature", None)
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def cell_temperature_apart(self) -> float | None:
        """The cell temperature when it differs from ``temperature``, else ``None``: one temperature throughout
        draws the same samples, so the decoder takes its one-temperature path and a request names none."""
        return None if self.cell_temperature in (None, self.temperature) else self.cell_temperature

    @staticmethod
    def split(kwargs: dict) -> dict:
        """Remove the sampling settings from ``kwargs`` (in place) and return them."""
        return {k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS}


FIELDS = tuple(f.name for f in dataclasses.fields(SampleSettings))
# The fields a model folder may give its own default for (SampleSettings.for_model): those whose None means unset.
MODEL_DEFAULTS = ("cell_temperature",)
# The defaults, for whoever shows or reuses one (the CLI's help, other settings that start from them).
DEFAULTS = SampleSettings()
