"""Hypothesis fuzzing of every parser of text that model output or users feed in.

10,000 cases in all (derandomized, so every run sees the same ones): random text and
mutations of real crystal texts (tests/data) through the paper codec, the CIF codec,
prompts, formulas, the wyckoff codec (and texts in its layout with absurd fields) and the
sampling grammars of both codecs.  A case fails when a parser raises anything but its
documented error, or accepts a crystal with a non-finite or zero-volume cell
(``ase_llmgen.fuzz.defect``).  ``bench/fuzz.py`` runs 10^5 and more, with a time limit per input.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ase_llmgen.fuzz import NASTY_PIECES, PARSERS, defect, mutate, random_wyckoff, seed_texts

from conftest import DATA

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _structures():
    from ase_llmgen.data.readers import read_records

    out = []
    for name in ("mp20_val_sample.csv", "perov_5_val_sample.csv", "carbon_24_val_sample.csv"):
        out += [r.atoms for r in read_records(DATA / name)[0]]
    return out


SEEDS = seed_texts(_structures())
# Text from the alphabet of crystal strings and prompts, with a nasty piece now and then.
crystalish = st.lists(
    st.sampled_from(list("0123456789. \n-") + ["Si", "O", "Na", "X", "90", "0.50"]) | st.sampled_from(NASTY_PIECES),
    max_size=40,
).map("".join)


def _mutated(kind: str):
    return st.tuples(st.sampled_from(SEEDS[kind]), st.randoms(use_true_random=False)).map(lambda p: mutate(*p))


# Texts in the wyckoff layout with absurd fields, from a seed (a text of 2000 orbits draws more than
# hypothesis lets a case draw).
wyckoff_layout = st.integers(0, 2**32).map(lambda seed: random_wyckoff(random.Random(seed)))
wyckoff_mult_layout = st.integers(0, 2**32).map(lambda seed: random_wyckoff(random.Random(seed), multiplicity=True))
wyckoff_formula_layout = st.integers(0, 2**32).map(
    lambda seed: random_wyckoff(random.Random(seed), multiplicity=True, formula_line=True)
)


# (parser, strategy, cases): 10,000 cases in all
CASES = [
    ("paper", st.text(max_size=200), 800),
    ("paper", crystalish, 1200),
    ("paper", _mutated("paper"), 1200),
    ("paper_structure", _mutated("paper"), 500),
    ("cif", _mutated("cif"), 700),
    ("cif", st.text(max_size=300), 300),
    ("prompt", st.text(max_size=300), 650),
    ("prompt", _mutated("prompt"), 1050),
    ("formula", st.text(alphabet="NaClOSiFe()0123456789.e ", max_size=30), 400),
    ("composition_grammar", _mutated("formula"), 400),
    ("grammar", _mutated("paper"), 900),
    ("wyckoff", st.text(max_size=200), 200),
    ("wyckoff", _mutated("wyckoff"), 550),
    ("wyckoff", wyckoff_layout, 450),
    ("wyckoff_grammar", _mutated("wyckoff"), 150),
    ("wyckoff_grammar", wyckoff_layout, 150),
    ("wyckoff_mult", _mutated("wyckoff_mult"), 100),
    ("wyckoff_mult", wyckoff_mult_layout, 100),
    ("wyckoff_mult_grammar", wyckoff_mult_layout, 50),
    ("wyckoff_formula", _mutated("wyckoff_formula"), 50),
    ("wyckoff_formula", wyckoff_formula_layout, 50),
    ("wyckoff_formula_grammar", wyckoff_formula_layout, 50),
]
assert sum(n for *_, n in CASES) == 10_000


@pytest.mark.parametrize("name, strategy, cases", CASES, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(CASES)])
def test_parser_never_misbehaves(name, strategy, cases):
    @settings(FUZZ, max_examples=cases)
    @given(strategy)
    def run(text):
        problem = defect(name, text)
        assert problem is None, f"{name}({text[:300]!r}): {problem}"

    run()


def test_every_parser_is_fuzzed():
    assert {name for name, *_ in CASES} == set(PARSERS)


def test_mutations_reach_the_cases_the_campaign_found():
    """The mutator writes the inputs of issue 18 (an overflowing number, a symmetry operation of many digits)."""
    rng = random.Random(0)
    texts = [mutate(SEEDS["paper"][0], rng, rounds=1) for _ in range(2000)]
    assert any("1" + "0" * 400 in t for t in texts)
    assert any("\u0663" in t for t in texts)


def test_wyckoff_layout_texts_reach_every_check():
    """``random_wyckoff`` writes texts the wyckoff parser refuses at each field (space group, lattice, element,
    letter, count and value of free coordinates) and texts it takes, some of which its grammar accepts too."""
    from ase_llmgen.text import wyckoff
    from ase_llmgen.text.errors import CrystalTextError

    reached = set()
    for seed in range(100):
        text = random_wyckoff(random.Random(seed))
        try:
            wyckoff.decode(text)
            reached.add("decoded")
        except CrystalTextError as exc:
            for what in ("space group number", "line 2", "chemical element", "Wyckoff position", "free coord"):
                if what in str(exc):
                    reached.add(what)
            if "fractional coordinates" in str(exc) and "must be" in str(exc):
                reached.add("coordinate value")
        if "grammar" not in reached and PARSERS["wyckoff_grammar"].parse(text) is not None:
            reached.add("grammar")
    assert reached == {
        "decoded",
        "grammar",
        "space group number",
        "line 2",
        "chemical element",
        "Wyckoff position",
        "free coord",
        "coordinate value",
    }
