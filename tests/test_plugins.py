"""The plugin system, including a third-party plugin installed from outside the package."""

import os
import subprocess
import sys
import textwrap

import pytest

from ase_llmgen import plugins

from conftest import DATA


def test_builtins_are_registered():
    assert {"paper", "cif"} <= set(plugins.codecs())
    assert {"scratch", "lora"} <= set(plugins.model_families())
    assert {"llm", "llm_pymatgen", "llm_ga_start"} <= set(plugins.generators())
    assert {"validity", "spacegroup", "formula"} <= set(plugins.checks())
    assert "chgnet" in plugins.calculators()
    assert "ase_llmgen.text.paper" in plugins.plugin_names()


def test_calculator_from_registry_gives_energies():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = plugins.get_calculator("chgnet")
    energy = atoms.get_potential_energy() / len(atoms)
    assert -6.0 < energy < -4.5  # CHGNet 0.3.0 on diamond Si: about -5.4 eV/atom
    with pytest.raises(KeyError, match="chgnet"):
        plugins.get_calculator("no_such_potential")


def _install_plugin(tmp_path):
    """A minimal installed distribution: a module plus dist-info with an entry point."""
    (tmp_path / "reverse_codec.py").write_text(
        textwrap.dedent("""
        import pluggy
        from ase_llmgen.registry import Codec, Check
        from ase_llmgen.text import paper

        hookimpl = pluggy.HookimplMarker("ase_llmgen")

        def encode(obj):
            return paper.encode(obj)[::-1]

        def decode(text):
            return paper.decode(text[::-1])

        @hookimpl
        def register_codecs():
            return [Codec("reverse", encode, decode, "the paper format, backwards (test plugin)")]

        @hookimpl
        def register_checks():
            return [Check("natoms_even", lambda atoms, conditions, **kw: {"natoms_even": len(atoms) % 2 == 0},
                          "test plugin check")]
    """)
    )
    info = tmp_path / "reverse_codec-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reverse-codec\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ase_llmgen]\nreverse = reverse_codec\n")
    (info / "RECORD").write_text("")
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "ase_llmgen.cli", *args], env=env, capture_output=True, text=True)


def test_third_party_plugin_found_through_entry_point_and_used_by_cli(tmp_path):
    env = _install_plugin(tmp_path)
    listing = _cli(["plugins"], env)
    assert listing.returncode == 0, listing.stderr
    assert "the paper format, backwards (test plugin)" in listing.stdout
    encoded = _cli(["encode", "--codec", "reverse", str(DATA / "mp20_val_sample.csv")], env)
    assert encoded.returncode == 0, encoded.stderr
    first = encoded.stdout.split("\n\n")[0]
    assert first[::-1].split("\n")[2] == "Tm"  # reversed paper text of TmMgHg2
    text_file = tmp_path / "rev.txt"
    text_file.write_text(encoded.stdout)
    decoded = _cli(["decode", "--codec", "reverse", str(text_file), "-o", str(tmp_path / "out.extxyz")], env)
    assert decoded.returncode == 0, decoded.stderr
    from ase.io import read

    assert len(read(tmp_path / "out.extxyz", index=":")) == 12


def test_plugin_check_runs_in_check_command(tmp_path):
    from ase.build import bulk
    from ase.db import connect

    env = _install_plugin(tmp_path)
    db_path = tmp_path / "x.db"
    connect(db_path).write(bulk("NaCl", "rocksalt", a=5.6))
    result = _cli(["check", str(db_path)], env)
    assert result.returncode == 0, result.stderr
    row = connect(db_path).get(id=1)
    assert row.natoms_even is True and row.sg_number == 225


def test_unknown_codec_is_a_clear_error(tmp_path):
    result = _cli(["encode", "--codec", "nope", str(DATA / "mp20_val_sample.csv")], dict(os.environ))
    assert result.returncode == 1
    assert "unknown codec 'nope'" in result.stderr and "paper" in result.stderr
