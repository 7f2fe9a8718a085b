"""The multi-task curriculum: records -> training texts, deterministically.

Each example's randomness comes from ``(seed, epoch, index)`` alone, so an
epoch can be replayed exactly (resume after interruption) and example ``i`` can
be regenerated without the ones before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ase_llmgen.data.readers import Record
from ase_llmgen.text import augment, paper
from ase_llmgen.text.prompts import Conditions, generation_prompt, infill_prompt, mask_element


@dataclass(frozen=True)
class CurriculumConfig:
    """How training texts are drawn (paper defaults: 1/3 infill, random translations)."""

    infill_fraction: float = 1 / 3
    conditional: bool = True  # add a random subset of the known conditions
    translate: bool = True
    permute: bool = False
    # "as_read": sites in the input's order (the paper); "spatial": sorted by fractional x, y, z
    # (text/augment.sort_sites), applied after the translation
    site_order: str = "as_read"

    def __post_init__(self) -> None:
        if self.site_order not in augment.SITE_ORDERS:
            raise ValueError(f"site_order must be one of {augment.SITE_ORDERS}, got {self.site_order!r}")


def _random_conditions(props: dict, rng: np.random.Generator) -> Conditions:
    # k ~ U{0..n} of the n known conditions, kept in prompt order (formula first):
    # this covers unconditional, single-condition and combined prompts alike.
    names = [n for n in ("formula", "formation_energy", "band_gap", "e_above_hull", "spacegroup") if n in props]
    k = int(rng.integers(0, len(names) + 1))
    chosen = set(rng.choice(names, size=k, replace=False)) if k else set()
    return Conditions(**{n: props[n] for n in names if n in chosen})


def training_text(record: Record, rng: np.random.Generator, config: CurriculumConfig = CurriculumConfig()) -> str:
    """One training text (prompt + answer, no EOS) for ``record``."""
    atoms = record.atoms
    if config.translate:
        atoms = augment.translate(atoms, rng)
    if config.permute:
        atoms = augment.permute(atoms, rng)
    atoms = augment.order_sites(atoms, config.site_order)
    crystal = paper.encode(atoms)
    if rng.random() < config.infill_fraction:
        element = str(rng.choice(sorted(set(atoms.get_chemical_symbols()))))
        return infill_prompt(mask_element(crystal, element)) + element
    conditions = _random_conditions(record.properties, rng) if config.conditional else Conditions()
    return generation_prompt(conditions) + crystal


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` records in ``epoch``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def training_texts(
    records: Sequence[Record], seed: int, epoch: int, config: CurriculumConfig = CurriculumConfig(), start: int = 0
) -> Iterator[str]:
    """The texts of one epoch, from position ``start`` on (for resuming)."""
    order = epoch_order(len(records), seed, epoch)
    for position in range(start, len(records)):
        rng = np.random.default_rng([seed, epoch, position])
        yield training_text(records[order[position]], rng, config)
