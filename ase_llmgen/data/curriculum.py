"""The multi-task curriculum: records -> training texts, deterministically.

Each example's randomness comes from ``(seed, epoch, index)`` alone, so an
epoch can be replayed exactly (resume after interruption) and example ``i`` can
be regenerated without the ones before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from ase import Atoms

from ase_llmgen.data.readers import Record
from ase_llmgen.plugins import get_codec
from ase_llmgen.registry import DEFAULT_CODEC, Codec
from ase_llmgen.text import augment
from ase_llmgen.text.prompts import Conditions, generation_prompt, infill_prompt

# What ``training_text`` keeps of a crystal it analysed: its one text, or the codec's writer of its random
# equivalent texts (``random_representatives``).
Written = str | Callable[[np.random.Generator], str]


@dataclass(frozen=True)
class CurriculumConfig:
    """How training texts are drawn (paper defaults: 1/3 infill, random translations)."""

    infill_fraction: float = 1 / 3
    conditional: bool = True  # add a random subset of the known conditions
    translate: bool = True
    permute: bool = False
    # "as_read": sites in the input's order (the paper); "spatial": sorted by fractional x, y, z
    # (text/augment.sort_sites), applied after the translation; a codec names the orders it knows
    site_order: str = "as_read"
    codec: str = DEFAULT_CODEC  # the registered codec that writes the texts
    # Write each crystal as one of its equivalent texts drawn at random (the codec's ``random_texts``: for the
    # wyckoff codecs, which representative of each orbit), not its one canonical text: the wyckoff format's
    # counterpart of ``translate``, for a model that would otherwise see the same text every epoch.
    random_representatives: bool = False
    # How often a prompt that states the formula also states its formula units per cell (0: never, the
    # paper). Formula-first sampling (sampling/formula_first.py) needs a model that learnt it: the count
    # fixes how many sites the crystal has before its cell is written.
    formula_units: float = 0.0
    # The share of generation texts whose prompt is the formula and its units alone (0: only the random mix of
    # conditions above, the paper): the order formula-first sampling draws in, practised on purpose (in the
    # random mix that exact prompt is 1 text in 30).
    formula_first: float = 0.0

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> CurriculumConfig:
        """The curriculum part of a training config (``TrainConfig.to_dict()``, or the ``train_config`` a
        model was saved with); a setting that is missing or ``None`` keeps its default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names and v is not None})

    def __post_init__(self) -> None:
        codec = get_codec(self.codec)
        if self.infill_fraction and codec.mask is None:
            raise ValueError(f"codec {self.codec!r} cannot mask elements: set infill_fraction = 0 for it")
        orders = codec.site_orders
        if self.site_order not in orders:
            raise ValueError(f"site_order must be one of {orders}, got {self.site_order!r}")
        if self.random_representatives and codec.random_texts is None:
            raise ValueError(f"codec {self.codec!r} writes one text per crystal: set random_representatives = false")
        if not 0.0 <= self.formula_units <= 1.0:
            raise ValueError(f"formula_units must be a probability in [0, 1], got {self.formula_units}")
        if not 0.0 <= self.formula_first <= 1.0:
            raise ValueError(f"formula_first must be a probability in [0, 1], got {self.formula_first}")


def _random_conditions(props: dict, rng: np.random.Generator) -> Conditions:
    # k ~ U{0..n} of the n known conditions, kept in prompt order (formula first):
    # this covers unconditional, single-condition and combined prompts alike.
    names = [n for n in ("formula", "formation_energy", "band_gap", "e_above_hull", "spacegroup") if n in props]
    k = int(rng.integers(0, len(names) + 1))
    chosen = set(rng.choice(names, size=k, replace=False)) if k else set()
    return Conditions(**{n: props[n] for n in names if n in chosen})


def formula_units(atoms: Atoms, formula: str) -> int | None:
    """How many units of ``formula`` the cell ``atoms`` holds (``None``: not a whole number of them).

    The record's cell, which for MP-20 is the cell the codecs write: the wyckoff codec's primitive cell of
    the standardised crystal had another site count for 1 of the first 1,500 train.csv crystals."""
    from pymatgen.core import Composition

    unit = Composition(formula).get_el_amt_dict()
    cell = Counter(atoms.get_chemical_symbols())
    if set(unit) != set(cell):
        return None
    ratios = {cell[el] / amount for el, amount in unit.items()}
    z = ratios.pop()
    if ratios or abs(z - round(z)) > 1e-6 or round(z) < 1:
        return None
    return round(z)


def training_text(
    record: Record,
    rng: np.random.Generator,
    config: CurriculumConfig | None = None,
    codec: Codec | None = None,
    cache: dict[int, Written] | None = None,
    key: int | None = None,
) -> str:
    """One training text (prompt + answer, no EOS) for ``record``, written by the configured codec
    (``codec``: that codec, already looked up).

    ``cache``/``key``: without translation or permutation a record's crystal is analysed once and kept
    in ``cache[key]`` (the wyckoff codec's spglib analysis costs more than a training step): its text,
    or with ``random_representatives`` the codec's writer of its random equivalent texts."""
    config = config or CurriculumConfig()
    codec = codec or get_codec(config.codec)
    atoms = record.atoms
    cacheable = cache is not None and key is not None and not (config.translate or config.permute)
    if cacheable and key in cache:
        written = cache[key]
    else:
        if config.translate:
            atoms = augment.translate(atoms, rng)
        if config.permute:
            atoms = augment.permute(atoms, rng)
        ordered = codec.ordered(atoms, config.site_order)
        written = codec.random_texts(ordered) if config.random_representatives else codec.encode(ordered)
        if cacheable:
            cache[key] = written
    crystal = written if isinstance(written, str) else written(rng)
    if rng.random() < config.infill_fraction:
        element = str(rng.choice(sorted(set(atoms.get_chemical_symbols()))))
        return infill_prompt(codec.masked(crystal, element)) + element
    # formula_first and formula_units draw only when asked for, so the texts of a curriculum without them stay
    # as they were (resume, replay).
    if config.formula_first and rng.random() < config.formula_first and record.properties.get("formula"):
        formula = record.properties["formula"]
        return (
            generation_prompt(Conditions(formula=formula, formula_units=formula_units(record.atoms, formula))) + crystal
        )
    conditions = _random_conditions(record.properties, rng) if config.conditional else Conditions()
    if conditions.formula and config.formula_units and rng.random() < config.formula_units:
        z = formula_units(record.atoms, conditions.formula)
        if z is not None:
            conditions = replace(conditions, formula_units=z)
    return generation_prompt(conditions) + crystal


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` records in ``epoch``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def training_texts(
    records: Sequence[Record],
    seed: int,
    epoch: int,
    config: CurriculumConfig | None = None,
    start: int = 0,
    cache: dict[int, Written] | None = None,
) -> Iterator[str]:
    """The texts of one epoch, from position ``start`` on (for resuming); ``cache``: see
    :func:`training_text` (keyed by the record's index; the same texts with or without it)."""
    config = config or CurriculumConfig()
    order = epoch_order(len(records), seed, epoch)
    codec = get_codec(config.codec)
    for position in range(start, len(records)):
        rng = np.random.default_rng([seed, epoch, position])
        index = int(order[position])
        yield training_text(records[index], rng, config, codec, cache, index)
