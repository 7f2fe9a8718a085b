import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_llmgen.convert import to_structure
from ase_llmgen.plugins import get_codec
from ase_llmgen.text import CrystalTextError, decode, decode_structure, encode
from ase_llmgen.text.augment import permute, translate

from conftest import DATA


def assert_close(a: Atoms, b: Atoms):
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    pa, pb = a.cell.cellpar(), b.cell.cellpar()
    assert np.all(np.abs(pa[:3] - pb[:3]) <= 0.05 + 1e-9)
    assert np.all(np.abs(pa[3:] - pb[3:]) <= 0.5 + 1e-9)
    d = (a.get_scaled_positions() - b.get_scaled_positions() + 0.5) % 1 - 0.5
    assert np.abs(d).max() <= 0.005 + 1e-9


def test_round_trip_on_sample_crystals(sample_records):
    for record in sample_records:
        assert_close(record.atoms, decode(encode(record.atoms)))


def test_format_is_the_papers():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    text = encode(atoms)
    lines = text.split("\n")
    assert lines[0] == "4.0 4.0 4.0"
    assert lines[1] == "60 60 60"
    assert lines[2:] == ["Na", "0.00 0.00 0.00", "Cl", "0.50 0.50 0.50"]


def test_angles_are_rounded_not_truncated():
    atoms = Atoms("Si", cell=[3, 3, 3, 90, 90, 119.9999], pbc=True)
    assert encode(atoms).split("\n")[1] == "90 90 120"


def test_coordinates_wrap_after_rounding():
    atoms = Atoms("Si", cell=[3, 3, 3], scaled_positions=[[0.999, -0.001, 0.5]], pbc=True)
    assert encode(atoms).split("\n")[3] == "0.00 0.00 0.50"


def test_pymatgen_path(sample_records):
    structure = to_structure(sample_records[0].atoms)
    text = encode(structure)
    back = decode_structure(text)
    assert back.composition == structure.composition
    assert abs(back.lattice.a - structure.lattice.a) < 0.05


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("3.0 3.0\n90 90 90\nSi\n0.0 0.0 0.0", 1, "3 numbers"),
        ("3.0 3.0 3.0\n90 90 190\nSi\n0.0 0.0 0.0", 2, "between 0 and 180"),
        ("3.0 3.0 3.0\n90 90 90\nXx\n0.0 0.0 0.0", 3, "not a chemical element"),
        ("3.0 3.0 3.0\n90 90 90\nSi\n0.0 a 0.0", 4, "not a number"),
        ("3.0 3.0 3.0\n90 90 90\nSi\n0.0 0.0 0.0\nO", 6, "no coordinates"),
        ("3.0 -3.0 3.0\n90 90 90\nSi\n0.0 0.0 0.0", 1, "positive"),
        ("3.0 3.0 3.0\n10 10 100\nSi\n0.0 0.0 0.0", 2, "3D cell"),
    ],
)
def test_strict_parser_names_the_line(text, line, fragment):
    with pytest.raises(CrystalTextError) as info:
        decode(text)
    assert info.value.line == line
    assert fragment in str(info.value)


def test_augmentations_keep_the_crystal():
    rng = np.random.default_rng(0)
    atoms = bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)
    shifted = translate(atoms, rng)
    assert not np.allclose(shifted.get_scaled_positions(), atoms.get_scaled_positions())
    # All interatomic distances are unchanged by a rigid translation.
    assert np.allclose(
        np.sort(shifted.get_all_distances(mic=True).ravel()), np.sort(atoms.get_all_distances(mic=True).ravel())
    )
    shuffled = permute(atoms, np.random.default_rng(1))
    assert sorted(shuffled.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())


def test_cif_codec_round_trip(sample_records):
    codec = get_codec("cif")
    for record in sample_records[:3]:
        assert_close(record.atoms, codec.decode(codec.encode(record.atoms)))
    with pytest.raises(CrystalTextError):
        codec.decode("data_x\n_cell_length_a nonsense")


@pytest.mark.parametrize("name", ["perov_5_val_sample.csv", "carbon_24_val_sample.csv"])
def test_round_trip_other_datasets(name):
    from ase_llmgen.data.readers import read_records

    records, _ = read_records(DATA / name)
    for record in records:
        assert_close(record.atoms, decode(encode(record.atoms)))


lattice = st.tuples(
    st.floats(1.0, 30.0),
    st.floats(1.0, 30.0),
    st.floats(1.0, 30.0),
    st.floats(60.0, 120.0),
    st.floats(60.0, 120.0),
    st.floats(60.0, 120.0),
)
symbols = st.lists(st.sampled_from(["H", "Li", "O", "Si", "S", "Sn", "Fe", "Cs"]), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(lattice, symbols, st.integers(0, 2**31))
def test_round_trip_property(cellpar, syms, seed):
    cos = np.cos(np.radians(cellpar[3:]))
    if 1 - (cos**2).sum() + 2 * cos.prod() < 0.05:  # skip near-degenerate cells
        return
    frac = np.random.default_rng(seed).random((len(syms), 3))
    atoms = Atoms(syms, cell=list(cellpar), scaled_positions=frac, pbc=True)
    assert_close(atoms, decode(encode(atoms)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_garbage_gives_crystal_text_error_only(text):
    try:
        atoms = decode(text)
    except CrystalTextError:
        return
    assert len(atoms) > 0 and atoms.cell.volume > 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["3.0", "90", "Si", "0.1", " ", "\n", "-", "x", "1e3", "0.5 0.5 0.5"]), max_size=30))
def test_structured_garbage(parts):
    text = "".join(parts)
    try:
        decode(text)
    except CrystalTextError as exc:
        assert exc.line is None or exc.line >= 1
