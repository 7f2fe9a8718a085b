"""Validity checks with the CDVAE definitions (used by sampling and metrics)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from ase import Atoms

from ase_llmgen.convert import to_structure


def structurally_valid(obj: Any, cutoff: float = 0.5, min_volume: float = 0.1) -> bool:
    """CDVAE: every pairwise distance (periodic) >= ``cutoff`` A and volume >= ``min_volume`` A^3."""
    structure = to_structure(obj)
    if structure.volume < min_volume:
        return False
    if len(structure) < 2:
        return True
    dist = structure.distance_matrix + np.eye(len(structure)) * cutoff
    return bool(dist.min() >= cutoff)


def compositionally_valid(symbols: list[str] | dict | Atoms, use_pauling: bool = True) -> bool:
    """CDVAE/SMACT charge neutrality + electronegativity, with smact's ``oxidation_states_smact14`` set.

    ``symbols``: one symbol per site, ``{symbol: count}``, or an ``ase.Atoms``. Reduce counts by their
    gcd; one element or all metals is valid; otherwise some oxidation-state combination must be
    neutral and pass Pauling's test.
    """
    from math import gcd

    import smact

    counts: dict[str, int] = {}
    if isinstance(symbols, Atoms):
        symbols = symbols.get_chemical_symbols()
    if isinstance(symbols, dict):
        counts = {k: int(v) for k, v in symbols.items()}
    else:
        for s in symbols:
            counts[s] = counts.get(s, 0) + 1
    elements = sorted(counts)
    divisor = 0
    for c in counts.values():
        divisor = gcd(divisor, c)
    stoich = tuple(counts[e] // divisor for e in elements)
    if len(elements) == 1:
        return True
    space = smact.element_dictionary(elements)
    smact_elems = [space[e] for e in elements]
    if all(e in smact.metals for e in elements):
        return True
    electronegs = [e.pauling_eneg for e in smact_elems]
    # Noble gases have no oxidation states in this set (None): no charge-neutral combination exists.
    ox_combos = [tuple(sorted(set(e.oxidation_states_smact14 or []))) for e in smact_elems]
    return _neutral_combination_exists(ox_combos, stoich, electronegs, use_pauling)


def _neutral_combination_exists(
    ox_combos: list[tuple[int, ...]], stoich: tuple[int, ...], electronegs: list, use_pauling: bool
) -> bool:
    """Whether some choice of one oxidation state per element is neutral (and passes Pauling's test).

    The same answer as trying every combination (CDVAE's ``itertools.product`` loop), which takes
    hours for a sample with a dozen elements -- and model output is untrusted. A depth-first search
    prunes a branch when the remaining elements cannot bring the charge to zero, or when a cation is
    already at least as electronegative as an anion (smact's ``eneg_states_test``: no later choice
    mends that), and remembers the (element, charge, extreme electronegativities) states it has seen.
    """
    from smact.screening import pauling_test

    n = len(ox_combos)
    if any(not states for states in ox_combos):
        return False
    # Charge range the elements from i on can still add.
    low, high = [0] * (n + 1), [0] * (n + 1)
    for i in reversed(range(n)):
        low[i] = low[i + 1] + min(ox_combos[i]) * stoich[i]
        high[i] = high[i + 1] + max(ox_combos[i]) * stoich[i]

    if use_pauling and any(e is None for e in electronegs):
        # No order on a missing electronegativity: let smact judge each neutral combination.
        def leaf(chosen: tuple[int, ...]) -> bool:
            try:
                return bool(pauling_test(chosen, electronegs))
            except TypeError:  # older smact raised on a missing electronegativity; CDVAE counted it valid
                return True

        def search_all(i: int, charge: int, chosen: tuple[int, ...]) -> bool:
            if i == n:
                return charge == 0 and leaf(chosen)
            if not low[i] <= -charge <= high[i]:
                return False
            return any(search_all(i + 1, charge + ox * stoich[i], (*chosen, ox)) for ox in ox_combos[i])

        return search_all(0, 0, ())

    @functools.cache
    def search(i: int, charge: int, max_cation: float, min_anion: float) -> bool:
        if i == n:
            return charge == 0
        if not low[i] <= -charge <= high[i]:
            return False
        for ox in ox_combos[i]:
            top, bottom = max_cation, min_anion
            if use_pauling and ox > 0:
                top = max(top, electronegs[i])
            elif use_pauling and ox < 0:
                bottom = min(bottom, electronegs[i])
            if top >= bottom:
                continue
            if search(i + 1, charge + ox * stoich[i], top, bottom):
                return True
        return False

    return search(0, 0, -math.inf, math.inf)
