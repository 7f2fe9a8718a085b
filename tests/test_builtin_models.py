"""The built-in models by name, and which one a request gets when no model is named.

``generate`` uses the shipped ``wyckoff`` model (trained on MP-20 train.csv; its texts are written in a
space group's Wyckoff orbits, so every crystal of a space-group request has the group's operations), with
its own cell temperature; a band-gap request, which it never learnt, goes to ``default``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
from ase.db import connect
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from ase_llmgen.cli import main
from ase_llmgen.models.bundle import BUILTIN_MODELS, learnt_codec, load_model, model_for, read_meta, resolve
from ase_llmgen.sampling.run import generate_to_file
from ase_llmgen.sampling.sources import LLMStructureSource, generate_structures
from ase_llmgen.text.prompts import Conditions


def test_builtin_names_resolve_to_shipped_folders():
    assert set(BUILTIN_MODELS) >= {"default", "wyckoff"}
    for name in BUILTIN_MODELS:
        folder = resolve(name)
        assert (folder / "model.safetensors").exists(), name
    assert learnt_codec(read_meta(resolve("wyckoff"))) == "wyckoff"
    assert learnt_codec(read_meta(resolve("default"))) == "paper"
    assert load_model("wyckoff").name == "wyckoff"  # provenance names the model, not where it is installed


def test_model_for_routes_to_the_wyckoff_model_unless_a_band_gap_is_asked():
    assert model_for() == model_for({}) == "wyckoff"
    assert model_for({"spacegroup": 225}) == model_for({"formula": "NaCl", "e_above_hull": 0.0}) == "wyckoff"
    assert model_for({"band_gap": 1.5}) == model_for({"band_gap": 1.5, "spacegroup": 225}) == "default"
    assert model_for({"band_gap": None}) == "wyckoff"  # a condition left unset asks for nothing
    assert model_for({"band_gap": 0.0}) == "default"  # a band gap of zero is asked for
    assert LLMStructureSource(band_gap=0.0).sampler.bundle.name == "default"
    assert LLMStructureSource(formula="NaCl").sampler.bundle.name == "wyckoff"


def test_unknown_model_name_lists_the_builtin_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="'wyckoff'"):
        resolve(tmp_path / "no_such_model")


def test_generate_with_a_space_group_uses_the_wyckoff_model(tmp_path):
    out = tmp_path / "sg.db"
    summary = generate_to_file(out, 4, conditions=Conditions(spacegroup=221), seed=0, progress=False)
    assert summary["complete"] and summary["written"] == 4
    rows = list(connect(out).select())
    assert {row.model for row in rows} == {"wyckoff"}
    assert all(row.req_spacegroup == 221 for row in rows)
    # Group 221's orbits: every crystal has its operations, so spglib finds 221 or a supergroup of it.
    assert sum(row.sg_number == 221 for row in rows) >= 3


def test_generate_uses_the_wyckoff_model_and_its_cell_temperature(tmp_path):
    plain = tmp_path / "plain.db"
    generate_to_file(plain, 2, seed=0, progress=False)
    rows = list(connect(plain).select())
    assert {row.model for row in rows} == {"wyckoff"}
    assert {row.cell_temperature for row in rows} == {0.9}  # the model's own default, recorded per row
    # Naming the model's default asks for the same thing: the rerun tops the database up.
    summary = generate_to_file(plain, 3, model="wyckoff", cell_temperature=0.9, seed=0, progress=False)
    assert summary["already_there"] == 2 and summary["written"] == 1
    # What the caller sets wins: the cell at the temperature, the paper's one temperature.
    same = tmp_path / "same.db"
    generate_to_file(same, 1, temperature=0.7, cell_temperature=0.7, seed=0, progress=False)
    assert [row.cell_temperature for row in connect(same).select()] == [0.7]


def _without(bundle, key: str):
    """The bundle with one metadata key removed (the weights shared, not copied)."""
    return dataclasses.replace(bundle, meta={k: v for k, v in bundle.meta.items() if k != key})


def test_a_cell_temperature_equal_to_the_temperature_is_the_same_request_as_none(tmp_path):
    # The wyckoff model (same release) without its default cell temperature: one temperature throughout.
    plain = _without(load_model("wyckoff"), "sampling_defaults")
    out = tmp_path / "one_temperature.db"
    generate_to_file(out, 2, model=plain, seed=0, progress=False)
    # Asking for the cell at the temperature draws the same samples: the same request, so the rerun tops up.
    summary = generate_to_file(out, 3, model="wyckoff", cell_temperature=0.7, seed=0, progress=False)
    assert summary["already_there"] == 2 and summary["written"] == 1
    assert len({row.request for row in connect(out).select()}) == 1


def test_a_database_an_earlier_builtin_model_wrote_is_not_topped_up_by_its_successor(tmp_path):
    # The built-in wyckoff model replaced one of the same name; the earlier one carried no release tag.
    now = load_model("wyckoff")
    assert now.meta.get("release")
    earlier = _without(now, "release")
    out = tmp_path / "earlier.db"
    generate_to_file(out, 2, model=earlier, seed=0, progress=False)
    summary = generate_to_file(out, 2, model="wyckoff", seed=0, progress=False)
    # Another model's rows are another request: none of them counts, the new model writes its own two.
    assert summary["already_there"] == 0 and summary["written"] == 2
    requests = {row.request for row in connect(out).select()}
    assert len(requests) == 2 and sum('"release"' in r for r in requests) == 1


def test_cli_generate_uses_the_wyckoff_model_and_takes_a_cell_temperature(tmp_path, capsys):
    out = tmp_path / "cli_default.db"
    assert main(["generate", "-n", "1", "-o", str(out), "-q"]) == 0
    assert main(["generate", "-n", "1", "-o", str(tmp_path / "hot.db"), "-q", "--cell-temperature", "1.0"]) == 0
    row = next(connect(out).select())
    assert (row.model, row.cell_temperature) == ("wyckoff", 0.9)
    assert next(connect(tmp_path / "hot.db").select()).cell_temperature == 1.0


def test_a_band_gap_request_or_a_named_model_uses_the_default_model(tmp_path):
    gap = tmp_path / "gap.db"
    generate_to_file(gap, 1, conditions=Conditions(band_gap=2.0), seed=0, progress=False)
    rows = list(connect(gap).select())
    assert {row.model for row in rows} == {"default"}
    assert "cell_temperature" not in rows[0]  # the paper-format model keeps the paper's one temperature
    named = tmp_path / "named.db"
    generate_to_file(named, 2, model="default", conditions=Conditions(spacegroup=225), seed=0, progress=False)
    assert {row.model for row in connect(named).select()} == {"default"}


def test_python_sources_route_the_same_way():
    source = LLMStructureSource(spacegroup=194, seed=1)
    atoms = source.take(2)
    assert [a.info["model"] for a in atoms] == ["wyckoff", "wyckoff"]
    structures = generate_structures(3, formula="NaCl", spacegroup=225, seed=0)
    assert [s.composition.reduced_formula for s in structures] == ["NaCl"] * 3  # formula met by multiplicities
    for s in structures:  # the group's operations are all there (a supergroup is possible, never a subgroup)
        ops = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_operations()
        assert len(ops) >= 48 or s.properties["model"] != "wyckoff"


def test_cli_generate_spacegroup_and_plugins_list(tmp_path, capsys):
    out = tmp_path / "cli.db"
    assert main(["generate", "-n", "2", "--spacegroup", "62", "-o", str(out), "-q"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["written"] == 2
    assert {row.model for row in connect(out).select()} == {"wyckoff"}
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert "built-in models" in listing and "wyckoff" in listing


def test_a_sample_past_the_models_window_is_warned_about_once(tiny_bundle):
    from ase_llmgen.models import scratch
    from ase_llmgen.sampling.sources import make_sampler

    short = scratch.build(d_model=32, n_layers=1, n_heads=2, max_len=16, seed=0)
    short.model.eval()
    sampler = make_sampler(short, max_atoms=1, seed=0)  # every text is longer than 16 tokens
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.sample(2, Conditions())
    assert [str(w.message) for w in caught if "positions" in str(w.message)][:1]
    assert sum("ran past the 16 positions" in str(w.message) for w in caught) == 1


def test_a_supergroup_is_redrawn_unless_kept(tmp_path):
    # F-43m (216) orbits often make rock salt (Fm-3m, 225): by default such samples are redrawn.
    exact = tmp_path / "exact.db"
    summary = generate_to_file(exact, 6, conditions=Conditions(spacegroup=216), seed=0, progress=False)
    assert summary["complete"]
    assert [row.sg_number for row in connect(exact).select()] == [216] * 6
    kept = tmp_path / "kept.db"
    conditions = Conditions(spacegroup=216)
    summary = generate_to_file(kept, 6, conditions=conditions, seed=0, progress=False, exact_spacegroup=False)
    assert summary["rejected"] == 0 and summary["written"] == 6


def test_a_required_check_sees_the_requested_conditions(tmp_path):
    # sg_match compares with the request, so the request must be in atoms.info before the check runs
    # (it was not: --require sg_match refused every sample).
    out = tmp_path / "req.db"
    summary = generate_to_file(
        out, 3, conditions=Conditions(spacegroup=221), seed=0, progress=False, require=("sg_match",),
        exact_spacegroup=False,
    )  # fmt: skip
    assert summary["complete"] and summary["written"] == 3
    assert all(row.sg_match for row in connect(out).select())
