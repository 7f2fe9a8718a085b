"""Registration records returned by the hooks of :mod:`ase_llmgen.hookspecs`.

They are plain frozen dataclasses holding callables, so a plugin needs nothing
from ase-llmgen but these names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms


@dataclass(frozen=True)
class Codec:
    """A reversible crystal <-> text format.

    ``encode`` takes ``ase.Atoms`` or a pymatgen ``Structure`` and returns text;
    ``decode`` takes text and returns ``ase.Atoms`` or raises
    :class:`ase_llmgen.text.errors.CrystalTextError`.
    """

    name: str
    encode: Callable[[Any], str]
    decode: Callable[[str], Atoms]
    description: str = ""


@dataclass(frozen=True)
class ModelFamily:
    """A family of causal LMs: ``load(path, **kw)`` returns an ``LMBundle``."""

    name: str
    load: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class GeneratorSpec:
    """A structure source: ``factory(**kw)`` returns an iterable of ``ase.Atoms``."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class MutatorSpec:
    """A GA operator: ``factory(**kw)`` returns an ``ase_ga`` ``OffspringCreator``."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class Check:
    """A structure check.

    ``run(atoms, conditions)`` returns a dict of ASE-db key-value pairs
    (numbers, strings or bools).  ``conditions`` holds what was requested for
    the structure (keys of :class:`ase_llmgen.text.prompts.Conditions`), which a
    check may compare against.  A check that also takes a ``symprec`` keyword
    (spglib tolerance in A) is given the one the user chose.
    """

    name: str
    run: Callable[..., dict]
    description: str = ""
    keys: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CalculatorSpec:
    """An ASE calculator (typically an ML potential) for relaxations and energies.

    ``factory(**settings)`` returns a fresh ``ase.calculators.calculator.Calculator``;
    ``settings`` are the keyword arguments it accepts (e.g. ``device``), stored
    with every energy it produces so results say how they were made.
    ``energy_scale``: ``"mp2020"`` when its energies already carry the Materials Project 2020
    corrections (CHGNet 0.3.0: trained on corrected MPtrj energies), ``"raw"`` when they are plain
    GGA/GGA+U energies (SevenNet-0), to which ``MaterialsProject2020Compatibility`` is applied
    before formation energies are taken against MP's references.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    energy_scale: str = "mp2020"
