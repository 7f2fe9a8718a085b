import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_llmgen.text.paper import mask_element
from ase_llmgen.text.prompts import (
    GEN_TAIL,
    MASK,
    Conditions,
    PromptError,
    generation_prompt,
    infill_prompt,
    parse_prompt,
)

CRYSTAL = "5.0 5.0 5.0\n90 90 90\nSi\n0.00 0.00 0.00\nS\n0.50 0.50 0.50\nSn\n0.25 0.25 0.25\nS\n0.75 0.75 0.75"


def test_unconditional_prompt_is_the_papers():
    assert generation_prompt() == (
        "Below is a description of a bulk material. Generate a description of the lengths and angles of the "
        "lattice vectors and then the element type and coordinates for each atom within the lattice:\n"
    )


def test_conditions_formula_first_and_rounded():
    p = generation_prompt(Conditions(formula="NaCl", spacegroup=225, band_gap=1.234567, e_above_hull=-0.0))
    assert p.index("chemical formula is NaCl") < p.index("spacegroup number is 225") < p.index("band gap is 1.2346")
    assert "convex hull is 0.0. " in p


def test_mask_whole_element_lines_only():
    masked = mask_element(CRYSTAL, "S")
    assert masked.split("\n")[2] == "Si" and masked.split("\n")[6] == "Sn"
    assert masked.count(MASK) == 2
    with pytest.raises(ValueError):
        mask_element(CRYSTAL, "O")


def test_infill_round_trip():
    text = infill_prompt(mask_element(CRYSTAL, "Sn")) + "Sn"
    parsed = parse_prompt(text)
    assert parsed.task == "infill" and parsed.completion == "Sn" and MASK in parsed.masked


def test_bad_conditions_rejected():
    with pytest.raises(ValueError):
        Conditions(spacegroup=231)
    with pytest.raises(ValueError):
        Conditions(formula="not a formula!")
    with pytest.raises(ValueError):
        Conditions(band_gap=float("nan"))
    assert Conditions(formula="Sm(GdS2)2").formula == "Sm(GdS2)2"


conditions = st.builds(
    Conditions,
    formula=st.none() | st.sampled_from(["NaCl", "LiFePO4", "Sm(GdS2)2", "Fe2O3"]),
    spacegroup=st.none() | st.integers(1, 230),
    formation_energy=st.none() | st.floats(-5, 5, allow_nan=False),
    band_gap=st.none() | st.floats(0, 10, allow_nan=False),
    e_above_hull=st.none() | st.floats(0, 1, allow_nan=False),
)


@settings(max_examples=100, deadline=None)
@given(conditions)
def test_generation_prompt_round_trip(cond):
    parsed = parse_prompt(generation_prompt(cond) + CRYSTAL)
    assert parsed.task == "generate" and parsed.completion == CRYSTAL
    got = parsed.conditions.as_dict()
    assert set(got) == set(cond.as_dict())
    for key, value in cond.as_dict().items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(round(value, 4), abs=1e-9)
        else:
            assert got[key] == value


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_prompts_raise_prompt_error(text):
    try:
        parse_prompt(text)
    except PromptError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_garbage_after_the_header(tail):
    try:
        parsed = parse_prompt("Below is a description of a bulk material. " + tail)
    except PromptError:
        return
    assert tail.endswith(parsed.completion) or GEN_TAIL in tail
