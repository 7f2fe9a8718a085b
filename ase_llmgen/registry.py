"""Registration records returned by the hooks of :mod:`ase_llmgen.hookspecs`.

They are plain frozen dataclasses holding callables, so a plugin needs nothing
from ase-llmgen but these names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms

# The codec of models that name none (the shipped default, every model made before codecs were recorded).
DEFAULT_CODEC = "paper"


@dataclass(frozen=True)
class Codec:
    """A crystal <-> text format, and everything generation, training, infill and likelihood need from it.

    ``encode`` takes ``ase.Atoms`` or a pymatgen ``Structure`` and returns text;
    ``decode`` takes text and returns ``ase.Atoms`` or raises
    :class:`ase_llmgen.text.errors.CrystalTextError`.  The rest is optional; what a
    codec leaves out, the package does without (or refuses, naming the codec):

    ``grammar(elements=None, max_atoms=20, min_atoms=1, formula=None)``
        a grammar for constrained decoding (the contract: :mod:`ase_llmgen.text.grammar`)
        that accepts the texts of ``min_atoms..max_atoms`` sites of ``elements`` (``None``:
        the codec's default set), and with ``formula`` only that composition, any whole
        number of formula units.  ``None``: the codec samples unconstrained only.
    ``grammar_conditions``
        the prompt conditions (names of ``Conditions`` fields, e.g. ``("spacegroup",)``) the
        ``grammar`` factory also takes as keywords; the sampler passes those that are requested.
    ``filters(settings)``
        per-sample filters on top of the grammar for the sampling ``settings`` (a
        ``SampleSettings``): a list of factories of :class:`ase_llmgen.text.grammar.RowFilter`.
    ``mask(text, element)``
        the text with every site of ``element`` replaced by ``[MASK]``
        (:data:`ase_llmgen.text.prompts.MASK`), for infill (training and the GA's infill
        mutation); ``None``: no infill with this codec.
    ``site_orders`` / ``order_sites(atoms, order)``
        the orders in which a model may learn sites (the first is the default) and the
        function that puts ``atoms`` in one; a model's metadata names its order.
    ``tokens`` / ``token_pattern``
        for a tokenizer built for the codec: multi-character pieces that may each be one
        token (``coordinate_tokens``), and the regular expression that finds them in text
        (default: any of them, longest first).
    ``max_length(max_atoms)``
        the most characters a text of ``max_atoms`` sites takes: the sampler's length limit.
    ``random_texts(obj)``
        for training with ``random_representatives``: analyse a crystal once and return a function of a
        ``numpy.random.Generator`` that writes one of its equivalent texts at random per call (the wyckoff
        codecs: each orbit from a random one of its representatives); ``None``: one text per crystal.
    """

    name: str
    encode: Callable[[Any], str]
    decode: Callable[[str], Atoms]
    description: str = ""
    grammar: Callable[..., Any] | None = None
    grammar_conditions: tuple[str, ...] = ()
    filters: Callable[[Any], list] | None = None
    mask: Callable[[str, str], str] | None = None
    site_orders: tuple[str, ...] = ("as_read",)
    order_sites: Callable[[Atoms, str], Atoms] | None = None
    tokens: tuple[str, ...] = ()
    token_pattern: str = ""
    max_length: Callable[[int], int] | None = None
    random_texts: Callable[[Any], Callable[[Any], str]] | None = None

    def ordered(self, atoms: Atoms, order: str) -> Atoms:
        """``atoms`` with its sites in ``order`` (one of :attr:`site_orders`)."""
        if order not in self.site_orders:
            raise ValueError(f"codec {self.name!r} knows the site orders {self.site_orders}, not {order!r}")
        return atoms if self.order_sites is None else self.order_sites(atoms, order)

    def masked(self, text: str, element: str) -> str:
        """:attr:`mask`, or a clear error for a codec without one."""
        if self.mask is None:
            raise ValueError(f"codec {self.name!r} cannot mask elements: no infill with it")
        return self.mask(text, element)

    def text_limit(self, max_atoms: int) -> int:
        """The most characters of a text of ``max_atoms`` sites (:attr:`max_length`, else a generous guess)."""
        if self.max_length is not None:
            return int(self.max_length(max_atoms))
        return 64 + 64 * max_atoms


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
