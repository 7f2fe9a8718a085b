"""The command line as a newcomer meets it: help, exit codes, encode/decode, evaluate."""

import json

import pytest

from ase_llmgen.cli import build_parser, main

from conftest import DATA


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("plugins", "encode", "decode", "check", "train", "generate", "mutate", "evaluate"):
        assert command in out
    assert "ase db crystals.db" in out  # examples in the epilog


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["generate"])  # -n and -o missing
    assert info.value.code == 2


def test_encode_decode_round_trip(tmp_path, capsys):
    assert main(["encode", str(DATA / "mp20_val_sample.csv")]) == 0
    text = capsys.readouterr().out
    assert text.count("\n\n") == 11
    (tmp_path / "c.txt").write_text(text)
    assert main(["decode", str(tmp_path / "c.txt"), "-o", str(tmp_path / "c.extxyz")]) == 0
    from ase.io import read

    images = read(tmp_path / "c.extxyz", index=":")
    assert [a.get_chemical_formula(empirical=True) for a in images][0] == "Hg2MgTm"


def test_decode_error_names_the_structure_and_line(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("3.0 3.0 3.0\n90 90 90\nSi\n0 0 0\n\n3.0 3.0\n90 90 90\nSi\n0 0 0\n")
    assert main(["decode", str(tmp_path / "bad.txt")]) == 1
    err = capsys.readouterr().err
    assert "structure 2" in err and "line 1" in err and "bad.txt" in err


def test_evaluate_sample_against_itself(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    code = main(
        [
            "evaluate",
            str(DATA / "mp20_val_sample.csv"),
            "--reference",
            str(DATA / "mp20_val_sample.csv"),
            "--json",
            str(out_json),
            "--markdown",
            str(tmp_path / "r.md"),
            "--jobs",
            "1",
        ]
    )
    assert code == 0
    results = json.loads(out_json.read_text())
    assert results["n_samples"] == 12
    # Only valid samples are matched (CDVAE): each valid one covers itself, so recall = valid share, precision 1.
    assert results["coverage"]["precision"] == pytest.approx(1.0)
    assert results["coverage"]["recall"] == pytest.approx(results["n_valid"] / 12)
    assert "LLaMA-2 70B" in (tmp_path / "r.md").read_text()


def test_mutate_cli_writes_children_with_parents_and_resumes(tmp_path, tiny_model_dir):
    from ase.build import bulk
    from ase.db import connect

    parents = tmp_path / "parents.db"
    db = connect(parents)
    db.write(bulk("MgO", "rocksalt", a=4.2))
    db.write(bulk("NaCl", "rocksalt", a=5.6))
    out = tmp_path / "children.db"
    args = ["mutate", str(parents), "-o", str(out), "--operator", "uniform_substitution", "--seed", "1", "-q"]
    assert main(args) == 0
    rows = list(connect(out).select())
    assert rows and all(r.parent_id in (1, 2) and r.operator == "uniform_substitution" for r in rows)
    assert all(":" in r.description and "valid" in r for r in rows)
    assert main(args) == 0 and connect(out).count() == len(rows)  # parents already done are skipped
    # The LLM operator runs through the same command with a model folder (a tiny random one here).
    assert (
        main(["mutate", str(parents), "-o", str(out), "--operator", "llm_infill", "--model", str(tiny_model_dir), "-q"])
        == 0
    )
    assert main(["mutate", str(parents), "-o", str(out), "--operator", "nope"]) == 1
    # The cell temperature reaches the operator's sampler (and its provenance), as it does generate's.
    hot = tmp_path / "hot.db"
    llm = ["mutate", str(parents), "-o", str(hot), "--operator", "llm_infill", "--model", str(tiny_model_dir), "-q"]
    assert main([*llm, "--cell-temperature", "0.5"]) == 0
    assert {r.get("cell_temperature") for r in connect(hot).select()} == {0.5}
