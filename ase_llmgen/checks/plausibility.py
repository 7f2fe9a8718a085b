"""Physical plausibility beside CDVAE's validity: contacts against covalent radii, and volume.

CDVAE's structural validity only asks that no two atoms be closer than 0.5 A, whatever the
elements, so a crystal with a 0.8 A Li-O contact, or an Fe cell at a quarter of iron's density,
counts as valid. This check asks two more questions:

* contacts: every interatomic distance (periodic images included) is at least
  ``MIN_CONTACT_RATIO`` times the sum of the two covalent radii (``ase.data.covalent_radii``):
  the crystal passes ase_ga's ``atoms_too_close`` screen with ``blmin`` from
  ``closest_distances_generator(numbers, MIN_CONTACT_RATIO)``;
* volume: the cell volume over the volume its composition takes in known crystals,
  ``V / sum_i n_i v_i``, lies within ``VOLUME_RATIO_RANGE``; ``v_i`` are per-element volumes
  fit to the MP-20 training crystals (``data/atomic_volumes_mp20.json``), so the question is
  "is this density one a crystal of these elements could have".

Thresholds (``bench/plausibility.py``; MP-20 val and test, held out from the volume fit):
the shortest contact is >= 0.652 x the radius sum in all 9,046 test crystals (0.1st percentile
0.70); the volume ratio is >= 0.67 in all of val and test, median 1.00, 99.9th percentile 2.25
(test) / 2.42 (val), with a tail of layered and molecular crystals: 5 of 9,046 test and 7 of
9,047 val crystals lie above 3.0. So ``plausible`` holds for 99.9% of MP-20 and flags what
almost no known crystal looks like; an fcc Cu or bcc Fe cell at a quarter of its density has a
volume ratio of 3.9 / 4.4.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

MIN_CONTACT_RATIO = 0.6
VOLUME_RATIO_RANGE = (0.5, 3.0)
CAP = 1.5  # contact ratios are reported up to this (no closer pair: nothing is close)
VOLUMES_FILE = Path(__file__).parent / "data" / "atomic_volumes_mp20.json"


@lru_cache(maxsize=1)
def element_volumes() -> dict[str, float]:
    """Per-element volumes (A^3/atom) fit to MP-20 train (see the module docstring)."""
    return json.loads(VOLUMES_FILE.read_text())["volumes"]


def expected_volume(composition: dict[str, float], volumes: dict[str, float] | None = None) -> float:
    """``sum_i n_i v_i``; an element the fit never saw counts its covalent sphere at a typical packing."""
    from ase.data import atomic_numbers

    volumes = volumes if volumes is not None else element_volumes()
    total = 0.0
    for symbol, n in composition.items():
        v = volumes.get(symbol)
        if not v:  # not in MP-20 (or fit to 0): covalent sphere / 0.68, MP-20's median packing
            v = 4.0 / 3.0 * math.pi * covalent_radii[atomic_numbers[symbol]] ** 3 / 0.68
        total += n * v
    return total


def min_contact_ratio(atoms: Atoms) -> float:
    """The smallest ``distance / (r_cov_i + r_cov_j)`` over all pairs, periodic images included (<= ``CAP``).

    For a cell whose shortest lattice vector is below 1/200 of the search radius, the ratio of an atom to its own
    image along it: an upper bound of the minimum, far below any plausibility threshold."""
    from ase.geometry import minkowski_reduce
    from ase.neighborlist import neighbor_list

    if len(atoms) == 0:
        return CAP
    radii = covalent_radii[atoms.numbers]
    cutoff = CAP * 2.0 * float(radii.max())
    if atoms.pbc.all():
        # The same lattice, Minkowski-reduced: the neighbour search over a sheared cell (gamma 179 degrees, as
        # model output can have) took seconds, over the reduced one milliseconds; distances are unchanged.
        reduced, _ = minkowski_reduce(atoms.cell, pbc=True)
        shortest = float(np.linalg.norm(reduced, axis=1).min())
        if shortest < cutoff / 200:  # images by the hundred thousand; each atom's own image is closer than
            # 0.02 of a contact anyway, so that pair (an upper bound of the minimum) settles "implausible"
            return float(shortest / (2.0 * radii.max()))
        atoms = atoms.copy()
        atoms.set_cell(reduced, scale_atoms=False)
        atoms.wrap()
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    if len(d) == 0:
        return CAP
    return float(min(CAP, np.min(d / (radii[i] + radii[j]))))


def volume_ratio(atoms: Atoms) -> float:
    """Cell volume over :func:`expected_volume` of its composition (``inf`` for a degenerate cell)."""
    volume = abs(atoms.get_volume())
    if not volume > 0:
        return math.inf
    symbols = atoms.get_chemical_symbols()
    return float(volume / expected_volume({s: symbols.count(s) for s in set(symbols)}))


def check_plausible(
    atoms: Atoms,
    conditions: dict | None = None,
    min_ratio: float = MIN_CONTACT_RATIO,
    volume_range: tuple[float, float] = VOLUME_RATIO_RANGE,
    **options,
) -> dict:
    """``min_contact_ratio``, ``volume_ratio`` and ``plausible`` (both within the thresholds)."""
    contact = min_contact_ratio(atoms)
    ratio = volume_ratio(atoms)
    return {
        "min_contact_ratio": round(contact, 4),
        "volume_ratio": round(ratio, 4) if math.isfinite(ratio) else 1e9,
        "plausible": bool(contact >= min_ratio and volume_range[0] <= ratio <= volume_range[1]),
    }
