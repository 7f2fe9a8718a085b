"""Validity checks with the CDVAE definitions (used by sampling and metrics)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

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


def compositionally_valid(symbols: list[str] | dict, use_pauling: bool = True) -> bool:
    """CDVAE/SMACT charge neutrality + electronegativity, with smact's ``oxidation_states_smact14`` set.

    Reduce counts by their gcd; one element or all metals is valid; otherwise
    some oxidation-state combination must be neutral and pass Pauling's test.
    """
    from math import gcd

    import smact
    from smact.screening import pauling_test

    counts: dict[str, int] = {}
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
    ox_combos = [e.oxidation_states_smact14 or [] for e in smact_elems]
    for ox_states in itertools.product(*ox_combos):
        # smact.neutral_ratios with one fixed stoichiometry per element reduces to this sum.
        if sum(o * s for o, s in zip(ox_states, stoich)) != 0:
            continue
        if not use_pauling:
            return True
        try:
            if pauling_test(ox_states, electronegs):
                return True
        except TypeError:  # an element without a Pauling electronegativity (e.g. noble gases)
            return True
    return False
