"""The constrained sampler, the structure sources and `ase-llmgen generate`, with a tiny random model."""

import numpy as np
import pytest
from ase.db import connect
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_llmgen.sampling.sampler import Sampler, SampleSettings
from ase_llmgen.sampling.sources import LLMStructureSource, generate_structures
from ase_llmgen.text import CrystalTextError, decode, encode
from ase_llmgen.text.grammar import CrystalGrammar, ElementGrammar
from ase_llmgen.text.prompts import Conditions, generation_prompt


def test_grammar_accepts_encoded_crystals(sample_records):
    grammar = CrystalGrammar(max_atoms=20)
    for record in sample_records:
        state = grammar.advance(grammar.start, encode(record.atoms))
        assert grammar.can_end(state)


@pytest.mark.parametrize(
    "text", ["0.0 1.0 1.0", "1.0 1.0 1.0\n180", "1.0 1.0 1.0\n90 90 90\nXx", "1.0 1.0 1.0\n90 90 90\nSi\n1.00", "1.00"]
)
def test_grammar_rejects(text):
    grammar = CrystalGrammar()
    assert grammar.advance(grammar.start, text) is None


def test_grammar_limits_atoms_and_elements():
    grammar = CrystalGrammar(elements=["Na", "Cl"], max_atoms=1)
    state = grammar.advance(grammar.start, "5.6 5.6 5.6\n90 90 90\nNa\n0.00 0.00 0.00")
    assert grammar.can_end(state) and grammar.advance(state, "\n") is None
    assert grammar.advance(grammar.start, "5.6 5.6 5.6\n90 90 90\nK") is None
    element = ElementGrammar(["Na", "K"])
    assert element.can_end(element.advance(element.start, "Na"))
    assert element.advance(element.start, "Cl") is None


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="0123456789. \nSiONaCl", max_size=80))
def test_whatever_the_grammar_accepts_parses(text):
    grammar = CrystalGrammar()
    state = grammar.advance(grammar.start, text)
    if grammar.can_end(state):
        try:
            decode(text)
        except CrystalTextError as exc:  # only the joint angle condition is beyond a grammar
            assert "3D cell" in str(exc)


def test_constrained_samples_all_parse(any_tiny_bundle):
    sampler = Sampler(any_tiny_bundle, SampleSettings(batch_size=16, max_atoms=4, temperature=1.0), seed=0)
    texts = sampler.complete(generation_prompt(), 16, sampler.grammar(), 120)
    finished = [t for t in texts if t is not None]
    assert finished
    for text in finished:
        try:
            atoms = decode(text)
            assert 1 <= len(atoms) <= 4
        except CrystalTextError as exc:
            assert "3D cell" in str(exc)


def test_unconstrained_random_model_mostly_fails(tiny_bundle):
    sampler = Sampler(tiny_bundle, SampleSettings(batch_size=8, constrained=False, max_new_tokens=40), seed=0)
    _, stats = sampler.sample(2, progress=False)
    assert stats.drawn >= 8 and stats.unparseable > 0


def test_sampling_is_seeded(tiny_bundle):
    def draw(seed):
        return Sampler(tiny_bundle, SampleSettings(batch_size=4, max_atoms=3), seed=seed).complete(
            generation_prompt(), 4, CrystalGrammar(max_atoms=3), 80
        )

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_element_restriction_and_infill(tiny_bundle):
    settings = SampleSettings(
        batch_size=16, max_atoms=3, elements=("Na", "Cl"), require_valid=False, max_attempts_factor=50
    )
    atoms, stats = Sampler(tiny_bundle, settings, seed=1).sample(3)
    assert stats.drawn == stats.accepted + stats.unparseable + stats.invalid
    for a in atoms:
        assert set(a.get_chemical_symbols()) <= {"Na", "Cl"}
        assert a.info["temperature"] == 0.7 and a.info["model"] == "scratch"
    answers = Sampler(tiny_bundle, settings, seed=1).infill(
        "5.6 5.6 5.6\n90 90 90\n[MASK]\n0.00 0.00 0.00", 8, elements=("K", "Rb")
    )
    assert answers and set(answers) <= {"K", "Rb"}


def test_sources_yield_atoms_and_structures(tiny_bundle):
    source = LLMStructureSource(tiny_bundle, formula="NaCl", elements=("Na", "Cl"), max_atoms=4, batch_size=16, seed=2)
    atoms = source.take(2)
    assert source.stats.drawn >= len(atoms)
    for a in atoms:
        assert a.info["conditions"] == {"formula": "NaCl"} and a.info["task"] == "generate"
        assert np.all(a.pbc)
    structures = generate_structures(1, tiny_bundle, elements=("Na", "Cl"), max_atoms=4, batch_size=16, seed=3)
    from pymatgen.core import Structure

    assert all(isinstance(s, Structure) and "text" in s.properties for s in structures)


def test_generate_cli_writes_db_and_tops_up(tmp_path, tiny_model_dir):
    from ase_llmgen.cli import main

    out = tmp_path / "gen.db"
    args = [
        "generate",
        "-n",
        "3",
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--elements",
        "Na,Cl",
        "--max-atoms",
        "4",
        "--batch-size",
        "16",
        "--spacegroup",
        "225",
        "-q",
    ]
    assert main(args) == 0
    rows = list(connect(out).select())
    assert len(rows) == 3
    assert all(r.req_spacegroup == 225 and "sg_match" in r and "valid" in r for r in rows)
    first_batches = {r.batch for r in rows}
    args[2] = "5"
    assert main(args) == 0  # tops up to 5 with new batches, no repeats
    rows = list(connect(out).select())
    assert len(rows) == 5
    texts = [r.data["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    assert max(r.batch for r in rows) > max(first_batches) or len(first_batches) > 1
    assert main(args) == 0 and connect(out).count() == 5  # nothing more to do


def test_generate_cli_min_atoms(tmp_path, tiny_model_dir, capsys):
    from ase_llmgen.cli import main

    out = tmp_path / "new" / "folder" / "big.db"  # folders are made as needed
    args = ["generate", "-n", "4", "-o", str(out), "--model", str(tiny_model_dir), "--elements", "Na,Cl"]
    args += ["--batch-size", "16", "--keep-invalid", "-q", "--max-atoms", "5"]
    assert main([*args, "--min-atoms", "4"]) == 0
    assert {row.natoms for row in connect(out).select()} <= {4, 5}
    assert main([*args, "--min-atoms", "6"]) == 1
    assert "min_atoms" in capsys.readouterr().err


def test_generate_cli_to_cif(tmp_path, tiny_model_dir):
    from ase.io import read

    from ase_llmgen.cli import main

    out = tmp_path / "gen.cif"
    assert (
        main(
            [
                "generate",
                "-n",
                "2",
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--elements",
                "Na,Cl",
                "--max-atoms",
                "4",
                "--batch-size",
                "16",
                "-q",
            ]
        )
        == 0
    )
    assert len(read(out, index=":")) == 2


def test_conditions_reach_the_prompt(tiny_bundle, monkeypatch):
    seen = []
    sampler = Sampler(tiny_bundle, SampleSettings(batch_size=2, max_atoms=2, max_attempts_factor=1), seed=0)
    real = sampler.stream  # every batch is drawn through stream (complete collects it)
    monkeypatch.setattr(sampler, "stream", lambda prompt, *a, **k: seen.append(prompt) or real(prompt, *a, **k))
    sampler.sample(1, Conditions(formula="NaCl", spacegroup=225))
    assert "The chemical formula is NaCl. The spacegroup number is 225. " in seen[0]


def test_missing_model_is_a_clear_cli_error(tmp_path):
    from ase_llmgen.cli import main

    assert main(["generate", "-n", "1", "-o", str(tmp_path / "x.db"), "--model", str(tmp_path / "nope")]) == 1


@pytest.mark.parametrize("max_chunk", [1, 2, 4])
def test_decoding_loop_matches_a_full_forward_pass(any_tiny_bundle, max_chunk):
    """Every sampling decision sees the logits a plain forward pass over the whole text gives.

    This checks the cached prompt copied to all rows, the forced tokens fed in
    padded multi-token chunks, and the rows dropped from the batch as they end.
    """
    import copy

    import torch

    from ase_llmgen.models.bundle import token_ids
    from ase_llmgen.sampling.decode import GrammarMasks, sample_rows
    from ase_llmgen.sampling.sampler import token_texts

    model = copy.deepcopy(any_tiny_bundle.model).double()  # float64: compare logits tightly
    tok = any_tiny_bundle.tokenizer
    grammar = CrystalGrammar(max_atoms=3)
    masks = GrammarMasks(grammar, token_texts(tok), tok.eos_token_id, model.config.vocab_size)
    prompt = token_ids(tok, generation_prompt(Conditions(formula="NaCl")), eos=False)
    seen: dict[int, list[torch.Tensor]] = {}

    def record(rows, logits):
        for row, vector in zip(rows, logits):
            seen.setdefault(row, []).append(vector.clone())

    rows = sample_rows(
        model,
        prompt,
        8,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        max_new_tokens=150,
        temperature=1.5,
        top_p=1.0,
        generator=torch.Generator().manual_seed(0),
        masks=masks,
        on_step=record,
        max_chunk=max_chunk,
    )
    finished = [i for i, r in enumerate(rows) if r is not None]
    assert len(finished) >= 2 and len({len(rows[i]) for i in finished}) > 1  # ragged rows were exercised
    for i in finished:
        tokens = rows[i]
        # Which positions were sampled (not forced by the grammar)? The end is sampled too unless forced.
        sampled, state = [], grammar.start
        for j, token in enumerate([*tokens, tok.eos_token_id]):
            if masks.allowed(state)[1] is None:
                sampled.append(j)
            if token != tok.eos_token_id:
                state = masks.advance(state, token)
        with torch.no_grad():
            full = model(input_ids=torch.tensor([prompt + tokens])).logits[0]
        expected = [full[len(prompt) - 1 + j] for j in sampled if j <= len(tokens)]
        assert len(seen[i]) == len(expected)
        for got, want in zip(seen[i], expected):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        text = tok.decode(tokens, skip_special_tokens=True)
        assert grammar.can_end(grammar.advance(grammar.start, text))


def test_composition_grammar_admits_whole_formula_units_only():
    from ase_llmgen.text.grammar import CompositionGrammar

    grammar = CompositionGrammar("Na2Cl2", max_atoms=4)  # reduced to NaCl: 1 or 2 formula units
    head = "5.6 5.6 5.6\n90 90 90\n"
    one = head + "Na\n0.00 0.00 0.00\nCl\n0.50 0.50 0.50"
    assert grammar.can_end(grammar.advance(grammar.start, one))
    assert not grammar.can_end(grammar.advance(grammar.start, head + "Na\n0.00 0.00 0.00"))
    two = one + "\nCl\n0.25 0.25 0.25\nNa\n0.75 0.75 0.75"
    assert grammar.can_end(grammar.advance(grammar.start, two))
    assert grammar.advance(grammar.start, head + "Na\n0.00 0.00 0.00\nNa\n0.10 0.10 0.10\nNa\n") is None
    assert grammar.advance(grammar.start, head + "K") is None
    # After two Na only Cl may follow: the symbol itself is refused, not just the line end.
    two_na = head + "Na\n0.00 0.00 0.00\nNa\n0.10 0.10 0.10\n"
    assert grammar.advance(grammar.start, two_na + "Cl") is not None
    assert grammar.advance(grammar.start, two_na + "Na") is None
    with pytest.raises(ValueError, match="formula unit"):
        CompositionGrammar("Li3PS4", max_atoms=4)


def test_formula_condition_is_enforced_unless_switched_off(tiny_bundle):
    from pymatgen.core import Composition

    from ase_llmgen.text.grammar import CompositionGrammar

    source = LLMStructureSource(tiny_bundle, formula="MgO2", max_atoms=6, batch_size=16, seed=4, require_valid=False)
    atoms = source.take(3)
    assert atoms, source.stats.as_dict()
    for a in atoms:
        assert Composition(a.get_chemical_formula()).reduced_formula == "MgO2"
        assert a.info["formula_enforced"] is True
    grammar = source.sampler.grammar(source.conditions)
    texts = source.sampler.complete(generation_prompt(source.conditions), 32, grammar, 200)
    finished = [t for t in texts if t is not None]
    assert finished and all(grammar.can_end(grammar.advance(grammar.start, t)) for t in finished)  # no dead ends
    free = LLMStructureSource(tiny_bundle, formula="MgO2", enforce_formula=False, seed=4)
    assert not isinstance(free.sampler.grammar(free.conditions), CompositionGrammar)
    with pytest.raises(ValueError, match="outside the allowed elements"):
        LLMStructureSource(tiny_bundle, formula="MgO2", elements=("Na", "Cl")).take(1)


def test_generate_cli_formula_enforced_and_prompt_only(tmp_path, tiny_model_dir):
    from ase_llmgen.cli import main

    common = ["--model", str(tiny_model_dir), "--max-atoms", "4", "--batch-size", "16", "--seed", "1", "-q"]
    enforced = tmp_path / "enforced.db"
    assert main(["generate", "-n", "3", "-o", str(enforced), "--formula", "NaCl", "--keep-invalid", *common]) == 0
    rows = list(connect(enforced).select())
    assert len(rows) == 3 and all(r.formula_match and r.formula_enforced for r in rows)
    assert len(list(connect(enforced).select("formula_match=True"))) == 3
    loose = tmp_path / "prompt_only.db"
    args = ["generate", "-n", "2", "-o", str(loose), "--formula", "NaCl", "--prompt-only-formula", "--keep-invalid"]
    assert main([*args, *common]) == 0
    assert all(r.formula_enforced is False for r in connect(loose).select())


def test_generate_to_file_takes_a_loaded_model_and_tops_up(tmp_path, tiny_bundle):
    from ase_llmgen.sampling.run import generate_to_file

    out = tmp_path / "bundle.db"
    kwargs = dict(model=tiny_bundle, elements=("Na", "Cl"), max_atoms=4, batch_size=16, progress=False)
    generate_to_file(out, 2, require_valid=False, **kwargs)
    generate_to_file(out, 3, require_valid=False, **kwargs)  # same request: tops up to 3
    rows = list(connect(out).select())
    assert len(rows) == 3 and {r.model for r in rows} == {tiny_bundle.name}


def test_cell_temperature_draws_the_cell_apart_from_the_sites(tiny_bundle):
    def texts(cell_temperature):
        settings = SampleSettings(batch_size=12, max_atoms=3, temperature=1.5, cell_temperature=cell_temperature)
        sampler = Sampler(tiny_bundle, settings, seed=3)
        return [t for t in sampler.complete(generation_prompt(), 12, sampler.grammar(), 120) if t is not None]

    greedy_cell = texts(0.0)  # the cell greedy, the sites at 1.5
    assert len(greedy_cell) >= 6
    assert len({t.split("\n")[0] + t.split("\n")[1] for t in greedy_cell}) == 1  # one cell for every row
    assert len({"\n".join(t.split("\n")[2:]) for t in greedy_cell}) > 1  # sites still drawn
    free = texts(None)  # 1.5 throughout
    assert len({t.split("\n")[0] for t in free}) > 1
    assert texts(1.5) == free  # a cell temperature equal to the temperature changes nothing, draw for draw


def test_sample_next_takes_a_temperature_per_row():
    import torch

    from ase_llmgen.sampling.decode import sample_next

    logits = torch.tensor([[0.0, 3.0, 1.0]] * 64 + [[2.0, 0.0, 1.0]] * 64)
    generator = torch.Generator().manual_seed(0)
    temperature = torch.tensor([0.0] * 64 + [5.0] * 64)
    picked = sample_next(logits, temperature, 1.0, generator)
    assert picked[:64].tolist() == [1] * 64  # temperature 0: greedy
    assert len(set(picked[64:].tolist())) == 3  # hot rows spread over every token


def test_cell_temperature_needs_the_grammar():
    with pytest.raises(ValueError, match="cell_temperature needs the grammar"):
        SampleSettings(constrained=False, cell_temperature=1.0)
    with pytest.raises(ValueError, match="cell_temperature must be >= 0"):
        SampleSettings(cell_temperature=-1.0)


def test_a_model_folder_sets_its_own_cell_temperature(tiny_bundle):
    import dataclasses

    own = dataclasses.replace(tiny_bundle, meta={**tiny_bundle.meta, "sampling_defaults": {"cell_temperature": 0.0}})
    assert Sampler(own, SampleSettings(temperature=1.5)).settings.cell_temperature == 0.0
    assert Sampler(own, SampleSettings(cell_temperature=0.9)).settings.cell_temperature == 0.9  # the caller wins
    assert Sampler(own, SampleSettings(constrained=False)).settings.cell_temperature is None  # needs the grammar
    assert Sampler(tiny_bundle, SampleSettings()).settings.cell_temperature is None  # no default: the paper's way
    with pytest.raises(ValueError, match="bad: 'sampling_defaults' names \\['top_k'\\]"):
        SampleSettings().for_model({"sampling_defaults": {"top_k": 5}}, where="bad")
    with pytest.raises(ValueError, match="must be a mapping"):
        SampleSettings().for_model({"sampling_defaults": [1.3]})
    with pytest.raises(ValueError, match="mine: 'sampling_defaults' cell_temperature must be a number >= 0"):
        SampleSettings().for_model({"sampling_defaults": {"cell_temperature": "hot"}}, where="mine")
    # JSON's 1 is 1.0: the same request as --cell-temperature 1.0
    assert SampleSettings().for_model({"sampling_defaults": {"cell_temperature": 1}}).cell_temperature == 1.0
    assert isinstance(
        SampleSettings().for_model({"sampling_defaults": {"cell_temperature": 1}}).cell_temperature, float
    )


def test_rows_come_back_in_row_order_past_those_the_caller_takes_anyway():
    from ase_llmgen.sampling.sampler import in_row_order

    ended = [(3, "d"), (1, "b"), (0, "a"), (2, "c"), (4, "e")]  # the order rows end in: short texts first
    assert [row for row, _ in in_row_order(iter(ended))] == [0, 1, 2, 3, 4]
    assert [row for row, _ in in_row_order(iter(ended), free=2)] == [1, 0, 2, 3, 4]  # 0 and 1 pass at once
    assert list(in_row_order(iter(ended), free=5)) == ended  # every row taken anyway: as they end
    assert [row for row, _ in in_row_order(iter([(2, "c"), (1, "b")]))] == [1, 2]  # a row missing: the rest kept


def test_a_caller_that_stops_early_gets_the_first_rows_not_the_first_to_end(tiny_bundle):
    # Rows end in order of length, so taking the first to end would keep the smallest cells (`generate -n 50`
    # drew 60 rows and kept the 50 shortest). Taken in row order, what a caller keeps is a draw of the model.
    settings = dict(max_atoms=6, batch_size=16, require_valid=False, temperature=1.0)
    source = LLMStructureSource(tiny_bundle, seed=4, **settings)
    rows = [atoms.info["sample"] for atoms, _ in zip(source, range(5))]
    assert rows == sorted(rows) and len(set(rows)) == 5
