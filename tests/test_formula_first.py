"""Formula units as a condition, and formula-first sampling (the model writes its own formula, then a crystal)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.db import connect
from pymatgen.core import Composition

from ase_llmgen.data.curriculum import CurriculumConfig, formula_units, training_text
from ase_llmgen.models.tokenizer import build_tokenizer, crystal_vocabulary
from ase_llmgen.sampling.formula_first import FormulaFirstGrammar, prompt_parts
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.sampling.sources import LLMStructureSource
from ase_llmgen.text.prompts import LATER_PHRASES, Conditions, generation_prompt, parse_prompt


def test_formula_units_are_written_after_the_formula_and_read_back():
    asked = Conditions(formula="NaCl", spacegroup=225, band_gap=1.5, formula_units=4)
    prompt = generation_prompt(asked)
    assert "The chemical formula is NaCl. The number of formula units is 4. The spacegroup number is 225. " in prompt
    assert parse_prompt(prompt + "225\n5.6\nNa\na\nCl\nb\n").conditions == asked
    assert Conditions("NaCl", 225).spacegroup == 225  # positional use is as it was
    assert list(asked.as_dict()) == ["formula", "formula_units", "spacegroup", "band_gap"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 1000])
def test_bad_formula_units_are_refused(bad):
    with pytest.raises(ValueError, match="formula_units"):
        Conditions(formula="NaCl", formula_units=bad)


def test_formula_units_need_a_formula():
    with pytest.raises(ValueError, match="needs a formula"):
        Conditions(formula_units=2)


def test_tokens_of_saved_models_keep_their_ids():
    """The new phrase comes after every older token, so a tokenizer built today agrees with older ones."""
    vocab = crystal_vocabulary(codec="wyckoff")
    assert vocab[-len(LATER_PHRASES) :] == list(LATER_PHRASES)
    assert vocab.index("The chemical formula is ") == 9 and vocab.index("He") == 15
    tok = build_tokenizer(codec="wyckoff")
    text = generation_prompt(Conditions(formula="NaCl", formula_units=2))
    assert "The number of formula units is " in tok.tokenize(text)


def test_curriculum_states_formula_units_only_when_asked(sample_records):
    base = CurriculumConfig(translate=False, codec="wyckoff", site_order="letter")
    texts = [training_text(r, np.random.default_rng(i), base) for i, r in enumerate(sample_records)]
    assert not any("formula units" in t for t in texts)
    always = CurriculumConfig(translate=False, codec="wyckoff", site_order="letter", formula_units=1.0)
    seen = 0
    for i, r in enumerate(sample_records):
        text = training_text(r, np.random.default_rng(i), always)
        asked = parse_prompt(text.split("\n", 1)[0] + "\n").conditions if text.startswith("Below is a desc") else None
        if asked is None or asked.formula is None:
            continue
        seen += 1
        assert asked.formula_units is not None
        assert asked.formula_units * Composition(asked.formula).num_atoms == len(r.atoms)
    assert seen >= 3
    with pytest.raises(ValueError, match="probability"):
        CurriculumConfig(formula_units=2.0)


def test_curriculum_practises_the_formula_first_order_only_when_asked(sample_records):
    """formula_first: that share of generation texts is prompted with the formula and its units alone; at 0 the
    texts are those of a curriculum without it, draw for draw (a run resumed or replayed writes the same texts)."""
    settings = dict(translate=False, codec="wyckoff", site_order="letter", formula_units=0.5)
    base = CurriculumConfig(**settings)
    same = CurriculumConfig(**settings, formula_first=0.0)
    texts = [training_text(r, np.random.default_rng(i), base) for i, r in enumerate(sample_records)]
    assert texts == [training_text(r, np.random.default_rng(i), same) for i, r in enumerate(sample_records)]
    always = CurriculumConfig(**settings, formula_first=1.0, infill_fraction=0.0)
    for i, r in enumerate(sample_records):
        text = training_text(r, np.random.default_rng(i), always)
        asked = parse_prompt(text.split("\n", 1)[0] + "\n").conditions
        assert asked == Conditions(formula=r.properties["formula"], formula_units=formula_units(r.atoms, asked.formula))
        assert asked.formula_units * Composition(asked.formula).num_atoms == len(r.atoms)
    with pytest.raises(ValueError, match="formula_first must be a probability"):
        CurriculumConfig(formula_first=-0.1)
    from ase_llmgen.models.bundle import LMBundle

    assert LMBundle(None, None, "scratch", "x", {"train_config": {"formula_first": 0.5}}).knows_formula_units


def test_formula_units_of_a_cell(sample_records):
    atoms = sample_records[0].atoms
    formula = Composition(atoms.get_chemical_formula()).reduced_formula
    assert formula_units(atoms, formula) * Composition(formula).num_atoms == len(atoms)
    assert formula_units(atoms, "H2O" if "O" not in formula else "NaCl") is None


def test_formula_units_set_the_site_count(tiny_bundle):
    source = LLMStructureSource(
        tiny_bundle, formula="MgO2", formula_units=2, max_atoms=8, batch_size=16, seed=4, require_valid=False
    )
    atoms = source.take(3)
    assert atoms, source.stats.as_dict()
    assert all(len(a) == 6 and Composition(a.get_chemical_formula()).reduced_formula == "MgO2" for a in atoms)
    assert atoms[0].info["conditions"]["formula_units"] == 2
    with pytest.raises(ValueError, match="outside"):
        LLMStructureSource(tiny_bundle, formula="MgO2", formula_units=3, max_atoms=8).take(1)


def test_prompt_parts_split_where_the_model_writes():
    prompt, lead, rest = prompt_parts(Conditions(spacegroup=225), units=True)
    assert prompt.endswith("The chemical formula is ") and lead == ". The number of formula units is "
    assert rest.startswith(". The spacegroup number is 225. ")
    assert prompt_parts(None)[1] == ""
    with pytest.raises(ValueError, match="without a formula"):
        prompt_parts(Conditions(formula="NaCl"))


@pytest.mark.parametrize("units", [False, True])
def test_formula_first_crystals_hold_to_the_formula_the_model_wrote(tiny_bundle, units):
    """Each sample's composition is the formula the model wrote (times the units it wrote, when it writes them)."""
    bundle = tiny_bundle
    if units:  # a model that learnt formula units (its training config says so) writes them
        bundle = type(tiny_bundle)(**{**vars(tiny_bundle), "meta": {"train_config": {"formula_units": 0.5}}})
    settings = SampleSettings(
        formula_first=True, max_atoms=6, batch_size=16, require_valid=False, elements=("Na", "Cl", "Mg", "O")
    )
    if units:
        out, stats = Sampler(bundle, settings, seed=3).sample(4)
    else:  # a model without units is told that its cells may overfill
        with pytest.warns(UserWarning, match="never learnt formula units"):
            out, stats = Sampler(bundle, settings, seed=3).sample(4)
    assert out, stats
    for a in out:
        written = a.info["written_formula"]
        assert Composition(a.get_chemical_formula()).reduced_composition == Composition(written).reduced_composition
        assert set(Composition(written).as_dict()) <= {"Na", "Cl", "Mg", "O"}
        if units:
            assert len(a) == a.info["written_formula_units"] * Composition(written).num_atoms
        else:
            assert "written_formula_units" not in a.info
        assert a.info["formula_first"] is True and a.info["conditions"] == {}


def test_formula_first_grammar_offers_only_units_that_fit():
    """Units digits are offered only where a crystal of them can be written; a formula with none is a dead end."""
    sizes = {"NaCl": 2, "Mg2O3": 5}

    class Inner:
        start = "s"

        def key(self, state):
            return state

    def grammar_for(formula, units):
        if units is not None and units * sizes[formula] > 6:
            raise ValueError("too many sites")
        return Inner()

    g = FormulaFirstGrammar(grammar_for, ["Na", "Cl", "Mg", "O"], (". ", "G"), (), (), lead=(". ", "U"), max_units=20)
    assert g.units("NaCl") == frozenset({"1", "2", "3"}) and g.units("Mg2O3") == frozenset({"1"})
    state = g.start
    for text in ("Na", "Cl", ". ", "U"):
        state = g.advance(state, text)
    assert state.phase == "units"
    assert g.advance(state, "4") is None and g.advance(state, "3") is not None
    assert g.advance(state, ". ") is None  # no digits yet
    state = g.advance(g.advance(state, "2"), ". ")
    assert state.phase == "prompt" and g.whole_tokens(state) == frozenset({"G"})
    assert g.advance(g.start, "Xe") is None  # only allowed elements


def test_generate_cli_formula_first(tmp_path, tiny_model_dir):
    from ase_llmgen.cli import main

    out = tmp_path / "ff.db"
    args = ["generate", "-n", "3", "-o", str(out), "--formula-first", "--keep-invalid", "--model", str(tiny_model_dir)]
    assert main([*args, "--max-atoms", "6", "--elements", "Na,Cl,Mg,O", "--batch-size", "16", "--seed", "1", "-q"]) == 0
    rows = list(connect(out).select())
    assert len(rows) == 3 and all(r.formula_first and r.written_formula for r in rows)
    for r in rows:
        assert Composition(r.formula).reduced_composition == Composition(r.written_formula).reduced_composition
    units = tmp_path / "units.db"
    args = ["generate", "-n", "2", "-o", str(units), "--formula", "NaCl", "--formula-units", "2", "--keep-invalid"]
    assert main([*args, "--model", str(tiny_model_dir), "--max-atoms", "6", "--batch-size", "16", "-q"]) == 0
    assert [r.natoms for r in connect(units).select()] == [4, 4]
    assert all(r.req_formula_units == 2 for r in connect(units).select())


def test_generate_cli_formula_units_errors_name_the_option(tmp_path, tiny_model_dir, capsys):
    from ase_llmgen.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "-n", "1", "-o", "x.db", "--formula", "NaCl", "--formula-units", "0"])
    assert "--formula-units" in capsys.readouterr().err
    out = tmp_path / "x.db"
    assert main(["generate", "-n", "1", "-o", str(out), "--formula-units", "2", "--model", str(tiny_model_dir)]) != 0
    assert "formula_units needs a formula" in capsys.readouterr().err
    assert not out.exists() or connect(out).count() == 0


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "x"])
def test_formula_units_that_are_no_number_name_the_field(bad):
    with pytest.raises(ValueError, match="formula_units must be a whole number"):
        Conditions(formula="NaCl", formula_units=bad)


def test_formula_units_as_a_float_make_the_same_request():
    assert Conditions(formula="NaCl", formula_units=2.0) == Conditions(formula="NaCl", formula_units=2)
    assert type(Conditions(formula="NaCl", formula_units=2.0).formula_units) is int


def test_formula_first_needs_the_formula_held():
    with pytest.raises(ValueError, match="enforce_formula"):
        SampleSettings(formula_first=True, enforce_formula=False)


def test_formula_units_reach_the_prompt_only_of_a_model_that_learnt_them(tiny_bundle):
    """To other models the phrase is unseen text (their cells came out degenerate): the grammar alone holds Z."""
    asked = Conditions(formula="NaCl", formula_units=2)
    plain = Sampler(tiny_bundle, SampleSettings(), seed=0)
    assert plain.prompted(asked) == Conditions(formula="NaCl")
    learnt = type(tiny_bundle)(**{**vars(tiny_bundle), "meta": {"train_config": {"formula_units": 1.0}}})
    assert Sampler(learnt, SampleSettings(), seed=0).prompted(asked) == asked
    assert plain.grammar(asked).min_atoms == plain.grammar(asked).max_atoms == 4
