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
    from ase_llmgen.sampling.grammar import CompositionGrammar

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
        ("data_x\n_cell_length_a 3\n", "unreadable CIF"),
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
