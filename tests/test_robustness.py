"""Regression tests of issue 18 (a fault and fuzz campaign): every bad input named, nothing hangs,
nothing half-written.  Kill-and-resume runs are in tests/test_kill_resume.py, fuzzing in tests/test_fuzz.py."""

from __future__ import annotations

import pytest
from ase.build import bulk

from ase_llmgen.cli import main
from ase_llmgen.text import cif, paper
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.prompts import GEN_HEAD, GEN_TAIL, PromptError, parse_prompt

# --- the paper codec: no NaN, infinite, zero-volume or absurd crystals


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("3 3 3\n90 90 90\nSr\n1" + "0" * 400 + " 0 0", 4, "finite"),  # 1e400: inf, then NaN after % 1
        ("1" + "0" * 300 + " 3 3\n90 90 90\nSr\n0 0 0", 1, "between"),  # 1e300 A
        ("0." + "0" * 200 + "1 3 3\n90 90 90\nSr\n0 0 0", 1, "between"),  # volume underflows to 0
        ("0.05 3 3\n90 90 90\nSr\n0 0 0", 1, "between"),
        ("3 3 3\n90 90 90\nSr\n0 0 1000.5", 4, "within"),
        ("3 3 3\n60 60 120\nSr\n0 0 0", 2, "3D cell"),
        ("3 3 3\n90 90 90\nSr\n\u0663.\u0665 0 0", 4, "not a number"),  # float() reads Arabic-Indic digits
    ],
)
def test_paper_decode_refuses_unusable_numbers(text, line, words):
    with pytest.raises(CrystalTextError, match=words) as info:
        paper.decode(text)
    assert info.value.line == line
    with pytest.raises(CrystalTextError):
        paper.decode_structure(text)


def test_paper_encode_refuses_what_decode_would(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell([2000, 3.6, 3.6], scale_atoms=False)
    with pytest.raises(ValueError, match="cannot write this structure as text"):
        paper.encode(atoms)


def test_decode_to_cif_never_writes_nan(tmp_path, capsys):
    src = tmp_path / "bad.txt"
    src.write_text("3 3 3\n90 90 90\nSr\n1" + "0" * 400 + " 0 0\n")
    out = tmp_path / "x.cif"
    assert main(["decode", str(src), "-o", str(out)]) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "bad.txt: structure 1: line 4" in err and "Traceback" not in err


# --- parse_prompt


def test_non_integer_space_group_in_a_prompt_is_a_prompt_error():
    with pytest.raises(PromptError, match="space-group number is a whole number"):
        parse_prompt(GEN_HEAD + "The spacegroup number is 1.5. " + GEN_TAIL)
    with pytest.raises(PromptError, match="no space-group number"):
        parse_prompt(GEN_HEAD + "The spacegroup number is " + "9" * 5000 + ". " + GEN_TAIL)
    with pytest.raises(PromptError, match="finite"):
        parse_prompt(GEN_HEAD + "The band gap is " + "9" * 400 + ". " + GEN_TAIL)


def test_a_huge_formula_is_refused_without_parsing_it():
    # 10^6 characters: pymatgen's formula parser took 13 s on this; the length is checked first.
    text = GEN_HEAD + "The chemical formula is " + "N" * 10**6 + ". " + GEN_TAIL
    with pytest.raises(PromptError, match=r"1000000 chars.*at most 200 characters"):
        parse_prompt(text)


def test_a_formula_with_fractions_is_refused_by_the_composition_grammar():
    from ase_llmgen.text.grammar import CompositionGrammar

    with pytest.raises(ValueError, match="whole numbers of atoms"):
        CompositionGrammar("Na0.5Cl0.3333")


# --- the CIF codec

NACL = cif.encode(bulk("NaCl", "rocksalt", a=5.6))


@pytest.mark.parametrize(
    "text, words",
    [
        (NACL.replace("Na  Na0", "G  G0"), "'G' is not a chemical element"),
        (NACL.replace("Na  Na0", "X  X0"), "'X' is not a chemical element"),
        (NACL.replace("-0.0000  1\n", "-0.0000  0.5\n"), "partially occupied"),
        (NACL.replace("_cell_length_a   3.9598", "_cell_length_a   nan"), "not all finite"),
        (NACL.replace("_cell_length_a   3.9598", "_cell_length_a   1e400"), "not all finite"),
        (NACL.replace("_cell_length_a   3.9598", "_cell_length_a   5000"), "between"),
        (NACL.replace("_cell_angle_alpha   60.0000", "_cell_angle_alpha   120.0000"), "3D cell"),
        (NACL.replace("'x, y, z'", "'x" + "1" * 5000 + ", y, z'"), "characters long"),
        (NACL.replace("'x, y, z'", "'x" + "1" * 5000 + ", y, z'").split("loop_\n _atom")[0], "characters long"),
        ("data_x\n_cell_length_a 3\n", "unreadable CIF"),
        (NACL.split("loop_")[0].replace("'P 1'", "'Fm-3x'") + "loop_" + NACL.split("loop_")[2], "unknown space group"),
    ],
)
def test_cif_decode_names_what_is_wrong(text, words):
    with pytest.raises(CrystalTextError, match=words):
        cif.decode(text)


def _symmetric_cif(n_sites: int) -> str:
    from pymatgen.symmetry.groups import SpaceGroup

    ops = [op.as_xyz_str() for op in SpaceGroup("Fm-3m").symmetry_ops]
    lines = (
        ["data_big"]
        + [f"_cell_length_{x} 20.0" for x in "abc"]
        + [f"_cell_angle_{x} 90" for x in ("alpha", "beta", "gamma")]
    )
    lines += ["loop_", "_symmetry_equiv_pos_as_xyz"] + [f"'{op}'" for op in ops]
    lines += ["loop_", "_atom_site_type_symbol", "_atom_site_label"] + [f"_atom_site_fract_{x}" for x in "xyz"]
    lines += [f"Na Na{i} {0.013 * i:.4f} {0.021 * i:.4f} {0.034 * i:.4f}" for i in range(n_sites)]
    return "\n".join(lines) + "\n"


def test_cif_decode_bounds_the_symmetry_expansion_before_parsing():
    # 192 operations x 500 sites took pymatgen 62 s; it is refused up front, naming why.
    with pytest.raises(CrystalTextError, match=r"192 \* 500|96000"):
        cif.decode(_symmetric_cif(500))
    assert len(cif.decode(_symmetric_cif(2))) > 2  # small expansions still read


def test_encode_of_a_disordered_cif_is_refused(tmp_path, capsys):
    path = tmp_path / "dis.cif"
    path.write_text(
        "data_dis\n_cell_length_a 4.0\n_cell_length_b 4.0\n_cell_length_c 4.0\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_atom_site_type_symbol\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\n_atom_site_occupancy\nNa Na1 0 0 0 0.5\nK K1 0 0 0 0.5\nCl Cl1 0.5 0.5 0.5 1\n"
    )
    assert main(["encode", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "dis.cif: image 1: disordered" in captured.err and "Na 0.5 / K 0.5" in captured.err


# --- databases: no lock file, all or nothing, named errors


def test_no_ase_lock_is_taken_or_waited_for_and_a_stale_one_is_removed(tmp_path, monkeypatch):
    import os
    import time

    import ase.utils

    from ase_llmgen.checks.database import check_database, write_structures

    def never(self):
        raise AssertionError(f"waited on ASE's lock {self.name}: it has no timeout")

    monkeypatch.setattr(ase.utils.Lock, "acquire", never)
    path = tmp_path / "c.db"
    write_structures(path, [bulk("Cu")])
    lock = tmp_path / "c.db.lock"
    lock.write_text("")  # left by a killed ASE process just now: ignored, not waited for
    assert check_database(path) == (1, 0) and lock.exists()
    os.utime(lock, (time.time() - 3600,) * 2)  # an hour old: stale, removed for ASE's own tools
    with pytest.warns(UserWarning, match="c.db.lock"):
        write_structures(path, [bulk("Cu")])
    assert not lock.exists()


def test_check_is_all_or_nothing_beyond_ase_commit_interval(tmp_path, monkeypatch):
    from ase.db import connect

    from ase_llmgen.checks import database

    path = tmp_path / "big.db"
    db = database.open_db(path, write=True)
    with database.transaction(db):
        for _ in range(1800):  # ASE commits inside `with db:` every 5,000 uses: ~1,666 updates
            db.write(bulk("Cu"), mark=0)
    calls = []

    def failing_late(atoms, conditions, symprec=0.2):
        calls.append(1)
        if len(calls) == 1750:
            raise RuntimeError("disk full")
        return {"mark": 1}

    monkeypatch.setattr(database, "run_checks", failing_late)
    with pytest.raises(RuntimeError, match="disk full"):
        database.check_database(path)
    assert connect(path).count("mark=1") == 0  # before: 1,666 rows updated


@pytest.mark.parametrize("content", [bytes(range(256)) * 20, b"material_id,cif\nmp-1,x\n"])
def test_a_file_that_is_no_database_is_named(tmp_path, capsys, content):
    path = tmp_path / "junk.db"
    path.write_bytes(content)
    for args in (["check", str(path)], ["encode", str(path)], ["mutate", str(path), "-o", str(tmp_path / "m.db")]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "junk.db: not an ASE database" in err and "Traceback" not in err


def test_binary_csv_toml_and_pickled_weights_are_named(tmp_path, capsys, tiny_model_dir):
    import shutil

    (tmp_path / "bin.csv").write_bytes(bytes(range(128, 256)) * 4)
    (tmp_path / "bin.toml").write_bytes(bytes(range(128, 256)) * 4)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    cases = [
        (["encode", str(tmp_path / "bin.csv")], "bin.csv: not a readable CSV text file"),
        (["train", "--config", str(tmp_path / "bin.toml")], "bin.toml: not a text file"),
        (["generate", "-n", "1", "-o", str(tmp_path / "g.db"), "--model", str(pickled)], "weights only as pickles"),
    ]
    for args, words in cases:
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err


# --- generate: crystals written as they finish, honest counts, files keep the checks


def _generate(tmp_path, bundle, name="g.db", n=5, **kw):
    from ase_llmgen.sampling.run import generate_to_file

    options = dict(model=bundle, max_atoms=4, seed=2, require_valid=False, progress=False) | kw
    return generate_to_file(tmp_path / name, n, **options)


def test_each_crystal_is_written_and_counted_as_it_finishes(tmp_path, tiny_bundle, monkeypatch):
    from ase.db import connect

    from ase_llmgen.sampling import run

    seen = []

    class Bar:  # the progress bar, recording how many rows the file held at each step
        def __init__(self, total, **kw):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, k):
            seen.append(connect(tmp_path / "g.db").count())

        def set_postfix(self, **kw):
            pass

    monkeypatch.setattr(run, "tqdm", Bar)
    summary = _generate(tmp_path, tiny_bundle, batch_size=64, progress=True)
    assert seen == [1, 2, 3, 4, 5]  # one step per crystal, each already in the file
    assert summary["drawn"] < 64  # -n 5 does not cost a batch of 64


def test_ctrl_c_in_the_first_batch_keeps_what_finished(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from ase.db import connect

    from ase_llmgen.sampling import run

    real, calls = run.write_below, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "write_below", interrupted)
    out = tmp_path / "g.db"
    args = ["generate", "-n", "50", "-o", str(out), "--model", str(tiny_model_dir), "--max-atoms", "4", "-q"]
    assert main(args + ["--keep-invalid", "--batch-size", "64"]) == 130
    assert "finished work is saved" in capsys.readouterr().err
    assert [row.batch for row in connect(out).select()] == [0, 0]


def test_a_rerun_notices_duplicate_rows_and_counts_them_once(tmp_path, tiny_bundle):
    from ase.db import connect

    from ase_llmgen.checks.database import open_db

    first = _generate(tmp_path, tiny_bundle, n=4)
    assert first["written"] == 4 and first["duplicates"] == 0
    db = open_db(tmp_path / "g.db", write=True)
    for row in list(db.select())[:2]:  # as two runs at once used to write them
        db.write(row.toatoms(), key_value_pairs=row.key_value_pairs, data=row.data)
    again = _generate(tmp_path, tiny_bundle, n=6)
    assert again["duplicates"] == 2 and again["already_there"] == 4 and again["written"] == 2
    assert connect(tmp_path / "g.db").count() == 8


def test_summary_counts_agree_with_the_rows(tmp_path, tiny_bundle):
    from ase.db import connect

    summary = _generate(tmp_path, tiny_bundle, n=12)  # --keep-invalid: invalid rows are kept and counted
    db = connect(tmp_path / "g.db")
    assert summary["rows_valid"] == db.count("valid=True")
    assert summary["rows_struct_invalid"] == db.count("struct_valid=False")
    assert summary["rows_comp_invalid"] == db.count("comp_valid=False")
    assert summary["invalid"] == 0  # nothing was redrawn: "invalid" counts structurally invalid redraws
    redrawn = _generate(tmp_path, tiny_bundle, name="r.db", n=6, require_valid=True)
    assert connect(tmp_path / "r.db").count("struct_valid=False") == 0 and redrawn["rows_struct_invalid"] == 0


@pytest.mark.parametrize("suffix", ["cif", "extxyz"])
def test_files_keep_the_check_results(tmp_path, tiny_bundle, suffix):
    from ase.io import read

    summary = _generate(tmp_path, tiny_bundle, name=f"out.{suffix}", n=3)
    assert summary["written"] == 3
    text = (tmp_path / f"out.{suffix}").read_text()
    assert "9999999" not in text and "0000001" not in text  # no float noise such as 0.8799999999999999
    images = read(tmp_path / f"out.{suffix}", index=":", **({"store_tags": True} if suffix == "cif" else {}))
    assert len(images) == 3
    prefix = "_ase_llmgen_" if suffix == "cif" else ""
    for atoms in images:
        assert {f"{prefix}struct_valid", f"{prefix}comp_valid", f"{prefix}sg_number", f"{prefix}density"} <= set(
            atoms.info
        )


# --- the command line says its defaults


def test_help_shows_every_default_and_documents_mutate(capsys):
    import argparse

    from ase_llmgen.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            default = action.default
            if action.option_strings and default not in (None, False, argparse.SUPPRESS):
                assert "default" in " ".join((sub._get_formatter()._expand_help(action) or "").split()), (
                    name,
                    action.dest,
                )
        if name == "mutate":
            assert "llm_infill (the default" in text and "--per-parent children" in text
            assert "ASE db selection of the parents" in text
