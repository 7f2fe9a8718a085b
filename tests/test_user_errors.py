"""What a user gets for bad input and unusual files: a clear error, never a hang, a crash or a bad file."""

from __future__ import annotations

import json

import pytest
from ase.build import bulk
from ase.db import connect

from ase_llmgen.cli import build_parser, main


@pytest.mark.parametrize(
    "flags",
    [
        ["--batch-size", "0"],
        ["--temperature", "-1"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--symprec", "-1"],
        ["-n", "0"],
    ],
)
def test_generate_rejects_out_of_range_options_before_sampling(flags, capsys):
    args = ["generate", "-o", "x.db"] + (["-n", "2"] if "-n" not in flags else []) + flags
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    assert flags[0] in capsys.readouterr().err  # the option is named


def test_sample_settings_reject_what_would_hang_or_mislead():
    from ase_llmgen.sampling.sampler import SampleSettings

    for bad in ({"batch_size": 0}, {"temperature": -0.5}, {"top_p": 0.0}, {"top_p": 2.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SampleSettings(**bad)


def test_negative_symprec_is_an_error_not_a_crash():
    from ase_llmgen.checks.symmetry import detect_spacegroup

    with pytest.raises(ValueError, match="symprec"):
        detect_spacegroup(bulk("NaCl", "rocksalt", a=5.6), symprec=-1)


def test_generate_to_an_unknown_format_fails_before_loading_a_model(tmp_path, capsys):
    # A model path that does not exist: the format error must come first.
    assert main(["generate", "-n", "1", "-o", str(tmp_path / "out.foo"), "--model", str(tmp_path / "none")]) == 1
    assert "out.foo" in capsys.readouterr().err


def test_generate_extxyz_reads_back(tmp_path, tiny_model_dir):
    from ase.io import read

    out = tmp_path / "out.extxyz"
    args = ["generate", "-n", "3", "-o", str(out), "--model", str(tiny_model_dir), "--max-atoms", "4", "-q"]
    assert main(args + ["--keep-invalid", "--spacegroup", "225"]) == 0
    images = read(out, index=":")
    assert len(images) == 3
    assert all(a.info["req_spacegroup"] == 225 and "text" not in a.info for a in images)


def test_generate_says_when_the_budget_runs_out(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from ase_llmgen.sampling import sampler

    monkeypatch.setattr(sampler, "structurally_valid", lambda atoms: False)  # every draw is rejected
    out = tmp_path / "out.db"
    args = ["generate", "-n", "2", "-o", str(out), "--model", str(tiny_model_dir), "--batch-size", "4", "-q"]
    assert main(args + ["--max-atoms", "4"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["complete"] is False and summary["written"] == 0 and summary["drawn"] == 20  # 10 per crystal
    assert "only 0 of 2" in captured.err and "budget" in captured.err


def test_bad_selection_names_the_database(tmp_path):
    from ase_llmgen.checks.database import check_database

    path = tmp_path / "c.db"
    connect(path).write(bulk("Cu"))
    with pytest.raises(ValueError, match=r"c\.db.*bad selection"):
        check_database(path, "foo>>3")


def test_write_structures_takes_pymatgen_structures(tmp_path):
    from pymatgen.core import Lattice, Structure

    from ase_llmgen.checks.database import write_structures

    structure = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structure.properties.update({"model": "default", "temperature": 0.7, "conditions": {"spacegroup": 221}})
    write_structures(tmp_path / "s.db", [structure])
    row = next(connect(tmp_path / "s.db").select())
    assert row.model == "default" and row.req_spacegroup == 221 and row.sg_number == 221


def test_disordered_structure_is_a_clear_error():
    from pymatgen.core import Lattice, Structure

    from ase_llmgen.convert import to_atoms

    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        to_atoms(disordered)


def test_a_check_plugin_without_symprec_still_runs(monkeypatch):
    from ase_llmgen.checks import database
    from ase_llmgen.registry import Check

    plain = Check("natoms_even", lambda atoms, conditions: {"natoms_even": len(atoms) % 2 == 0})
    monkeypatch.setattr(database, "checks", lambda: {"natoms_even": plain})
    assert database.run_checks(bulk("NaCl", "rocksalt", a=5.6), {}) == {"natoms_even": True}


def test_ase_ga_header_row_is_not_a_structure(tmp_path):
    from ase import Atoms

    from ase_llmgen.data.readers import read_records

    path = tmp_path / "ga.db"
    with connect(path) as db:
        db.write(Atoms(), simulation_cell=True)  # what ase_ga's PrepareDB writes first
        db.write(bulk("Cu"), sg_number=0)  # spglib could not tell: no space-group condition
    records, skipped = read_records(path)
    assert len(records) == 1 and not skipped
    assert "spacegroup" not in records[0].properties


def test_train_config_errors_name_the_file_and_field(tmp_path):
    from ase_llmgen.training.config import TrainConfig

    broken = tmp_path / "broken.toml"
    broken.write_text("epochs 3\n")
    with pytest.raises(ValueError, match=r"broken\.toml: not valid TOML"):
        TrainConfig.from_file(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('epochs = "ten"\nsplit_seed = 3\n')
    with pytest.raises(ValueError, match=r"wrong\.toml: epochs = 'ten' should be float"):
        TrainConfig.from_file(wrong)
    fine = tmp_path / "fine.yaml"
    fine.write_text("epochs: 2\nsplit_seed: null\nlora_targets: [q_proj]\n")
    assert TrainConfig.from_file(fine).epochs == 2


def test_evaluate_with_no_readable_reference_is_an_error(tmp_path):
    from ase_llmgen.metrics.evaluate import reference_features

    bad = tmp_path / "bad.csv"
    bad.write_text("material_id,cif\nmp-1,not a cif\n")
    with pytest.raises(ValueError, match=r"bad\.csv: no readable crystals \(1 rows unreadable"):
        reference_features(bad, n_jobs=1, progress=False, cache=False)


def test_model_path_that_is_a_file(tmp_path):
    from ase_llmgen.models.bundle import resolve

    (tmp_path / "crystals.db").write_text("")
    with pytest.raises(FileNotFoundError, match="is a file, not a model folder"):
        resolve(tmp_path / "crystals.db")


def test_quiet_cli_silences_transformers_progress_bars(tmp_path, tiny_model_dir):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    try:
        main(["generate", "-n", "1", "-o", str(tmp_path / "o.db"), "--model", str(tiny_model_dir), "-q"])
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
