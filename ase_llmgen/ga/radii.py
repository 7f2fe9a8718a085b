"""Ionic radii, oxidation-state guesses and charge balance for substitution mutations.

The paper's infill mutation keeps a proposed element only when it has a
similar ionic radius in the same oxidation state as the element it replaces
(tolerance 0.1 A) and the new composition is charge neutral.  This module is
that filter's chemistry, taken from pymatgen:

* radii: ``pymatgen.core.Species(el, ox).ionic_radius`` (pymatgen's Shannon-based
  radii, averaged over coordination: Na+ 1.16, K+ 1.52, Mg2+ 0.86 A).  Metals
  in oxidation state 0 (alloys, intermetallics) use the metallic radius.
* oxidation states: ``Composition.oxi_state_guesses()`` (most probable first);
  an all-metal or single-element composition is taken as neutral atoms (state
  0), the convention of the SMACT compositional validity check.
* charge balance: some neutral assignment of oxidation states exists.

>>> similar_substitutes("Mg", 2)          # MgO: what could sit on the Mg site?
['Co', 'Cu', 'Fe', 'Ge', 'Ni', 'Pt', 'Zn']
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

from ase import Atoms
from ase.data import chemical_symbols

# Elements the table covers: H to Pu, the range of the Materials Project.
TABLE_ELEMENTS = tuple(chemical_symbols[1:95])


def _counts(obj: Any) -> dict[str, int]:
    """Element counts of Atoms, a Structure, a formula, a dict or a list of symbols."""
    if isinstance(obj, Atoms):
        symbols: Iterable[str] = obj.get_chemical_symbols()
    elif isinstance(obj, str):
        from pymatgen.core import Composition

        return {el.symbol: int(round(n)) for el, n in Composition(obj).items()}
    elif isinstance(obj, dict):
        return {str(k): int(v) for k, v in obj.items()}
    elif hasattr(obj, "species"):  # pymatgen Structure
        symbols = [site.specie.symbol for site in obj]
    else:
        symbols = obj
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    return counts


@cache
def _metals() -> frozenset[str]:
    # The same metal list as the SMACT compositional validity check, so both agree.
    import smact

    return frozenset(smact.metals)


def is_metal(symbol: str) -> bool:
    """Whether SMACT counts ``symbol`` as a metal."""
    return symbol in _metals()


@cache
def radius(symbol: str, oxidation_state: int) -> float | None:
    """Radius in A of ``symbol`` in ``oxidation_state``, or ``None`` when pymatgen has none.

    State 0 means a neutral metal atom: the metallic radius (metals only).
    """
    from pymatgen.core import Element, Species

    if symbol not in TABLE_ELEMENTS or oxidation_state != int(oxidation_state):
        return None
    with warnings.catch_warnings():  # pymatgen warns for every missing radius
        warnings.simplefilter("ignore")
        if oxidation_state == 0:
            if not is_metal(symbol):
                return None
            value = Element(symbol).metallic_radius
        else:
            try:
                value = Species(symbol, int(oxidation_state)).ionic_radius
            except ValueError:  # pymatgen rejects some states outright
                return None
    return float(value) if value is not None else None


@cache
def radius_table(common_only: bool = True) -> dict[tuple[str, int], float]:
    """``{(symbol, oxidation_state): radius}`` for every element and state with a radius.

    ``common_only`` keeps pymatgen's common oxidation states (plus 0 for
    metals), so a substitute is an element in a state it usually takes.
    """
    from pymatgen.core import Element

    table: dict[tuple[str, int], float] = {}
    for symbol in TABLE_ELEMENTS:
        element = Element(symbol)
        states = set(element.common_oxidation_states) if common_only else set(element.ionic_radii)
        if is_metal(symbol):
            states.add(0)
        for state in sorted(states):
            r = radius(symbol, state)
            if r is not None:
                table[(symbol, int(state))] = r
    return table


def similar_substitutes(
    element: str,
    oxidation_state: int,
    tolerance: float = 0.1,
    common_only: bool = True,
    elements: Iterable[str] | None = None,
) -> list[str]:
    """Elements whose radius in ``oxidation_state`` is within ``tolerance`` A of ``element``'s.

    ``element`` itself is excluded; ``elements`` optionally restricts the
    answer (e.g. to what a calculator supports).  Empty when ``element`` has
    no radius in that state.
    """
    reference = radius(element, oxidation_state)
    if reference is None:
        return []
    allowed = set(elements) if elements is not None else None
    return sorted(
        symbol
        for (symbol, state), r in radius_table(common_only).items()
        if state == oxidation_state
        and symbol != element
        and abs(r - reference) <= tolerance + 1e-9  # the table's radii have 3 decimals
        and (allowed is None or symbol in allowed)
    )


def is_similar(old: str, new: str, oxidation_state: int, tolerance: float = 0.1, common_only: bool = True) -> bool:
    """Whether ``new`` can replace ``old`` in ``oxidation_state`` (radii within ``tolerance`` A)."""
    return new in similar_substitutes(old, oxidation_state, tolerance, common_only)


@lru_cache(maxsize=4096)
def _guess(reduced: tuple[tuple[str, int], ...]) -> tuple[tuple[tuple[str, float], ...], ...]:
    from pymatgen.core import Composition

    symbols = [s for s, _ in reduced]
    if len(symbols) == 1 or all(is_metal(s) for s in symbols):
        return (tuple((s, 0.0) for s in symbols),)
    try:
        guesses = Composition(dict(reduced)).oxi_state_guesses()
    except Exception:  # pymatgen raises several types for exotic compositions
        return ()
    return tuple(tuple((s, float(g[s])) for s in symbols) for g in guesses)


def _reduced(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    from math import gcd

    divisor = 0
    for n in counts.values():
        divisor = gcd(divisor, int(n))
    return tuple(sorted((s, int(n) // max(divisor, 1)) for s, n in counts.items() if n > 0))


def oxidation_state_guesses(obj: Any) -> list[dict[str, float]]:
    """All charge-neutral oxidation-state assignments, most probable first.

    Accepts ``ase.Atoms``, a pymatgen ``Structure``, a formula, a ``{symbol: count}``
    dict or a list of symbols.  Values are per-element averages (pymatgen's
    convention), so a mixed-valence element such as Fe in Fe3O4 gets 8/3.
    """
    counts = _counts(obj)
    if not counts:
        return []
    return [dict(g) for g in _guess(_reduced(counts))]


def guess_oxidation_states(obj: Any) -> dict[str, float] | None:
    """The most probable oxidation state of each element, or ``None`` if none is neutral.

    Integral states are returned as ``int``; all-metal compositions get 0.
    """
    guesses = oxidation_state_guesses(obj)
    if not guesses:
        return None
    return {s: int(v) if float(v).is_integer() else v for s, v in guesses[0].items()}


def charge_balanced(symbols: Any) -> bool:
    """Whether some oxidation-state assignment makes the composition neutral.

    One element, or only metals, counts as balanced (as in SMACT validity).
    """
    return bool(oxidation_state_guesses(symbols))
