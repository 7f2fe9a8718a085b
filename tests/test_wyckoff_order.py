"""The wyckoff codecs' site orders: by Wyckoff letter (the default) and by electronegativity (cations first)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ase_llmgen.plugins import get_codec
from ase_llmgen.text import wyckoff

from conftest import DATA, tiny_config


def _orbits(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    return list(zip(lines[2::2], lines[3::2]))


@pytest.mark.parametrize("name", ["wyckoff", "wyckoff_mult"])
def test_electronegativity_order_writes_the_same_orbits_cations_first(name, mp20_structures):
    """Every shipped structure: the same head and orbits as the letter order, elements by electronegativity then
    letter, the same crystal decoded; the letter order is the default and the caller's atoms are left alone."""
    codec = get_codec(name)
    assert codec.site_orders == ("letter", "electronegativity")
    moved = 0
    for atoms in mp20_structures:
        letter = codec.encode(codec.ordered(atoms, "letter"))
        ordered = codec.ordered(atoms, "electronegativity")
        text = codec.encode(ordered)
        assert wyckoff.ORDER_INFO_KEY not in atoms.info and letter == codec.encode(atoms)
        assert text.split("\n")[:2] == letter.split("\n")[:2]
        assert sorted(_orbits(text)) == sorted(_orbits(letter))
        x = [wyckoff.electronegativity(element) for element, _ in _orbits(text)]
        assert x == sorted(x), text
        back, back_letter = codec.decode(text), codec.decode(letter)
        assert sorted(back.get_chemical_symbols()) == sorted(back_letter.get_chemical_symbols())
        assert np.allclose(back.cell, back_letter.cell)
        moved += text != letter
    assert moved > len(mp20_structures) // 2  # the orders differ for most crystals, so the test can fail


def test_explicit_site_order_and_unknown_ones():
    spinel = wyckoff.encode(bulk("NaCl", "rocksalt", a=5.64), site_order="electronegativity")
    assert spinel.split("\n")[2::2] == ["Na", "Cl"]  # Na 0.93 before Cl 3.16, whichever letter each has
    with pytest.raises(ValueError, match="unknown site order 'alphabetical'"):
        wyckoff.encode(bulk("Cu"), site_order="alphabetical")
    with pytest.raises(ValueError, match="knows the site orders"):
        get_codec("wyckoff").ordered(bulk("Cu"), "spatial")
    assert wyckoff.electronegativity("O") == pytest.approx(3.44) and wyckoff.electronegativity("He") == float("inf")
    # The letter order undoes one recorded before; ties of electronegativity go alphabetically, as in pymatgen.
    salt = get_codec("wyckoff").ordered(bulk("NaCl", "rocksalt", a=5.64), "electronegativity")
    assert wyckoff.ORDER_INFO_KEY not in get_codec("wyckoff").ordered(salt, "letter").info
    assert sorted(["Si", "Cu", "Te"], key=wyckoff.element_rank) == ["Cu", "Si", "Te"]  # Cu and Si: both 1.90


def test_a_model_trained_in_electronegativity_order(tmp_path):
    """The curriculum writes its texts in the order, the model records it and samples crystals."""
    from ase_llmgen.data.curriculum import CurriculumConfig, training_texts
    from ase_llmgen.data.readers import read_records
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sources import generate_atoms
    from ase_llmgen.text.prompts import GEN_TAIL
    from ase_llmgen.training import train

    records, _ = read_records(DATA / "mp20_val_sample.csv")
    config = CurriculumConfig(translate=False, codec="wyckoff", site_order="electronegativity", infill_fraction=0)
    letter = CurriculumConfig(translate=False, codec="wyckoff", site_order="letter", infill_fraction=0)
    texts, letter_texts = list(training_texts(records, 0, 0, config)), list(training_texts(records, 0, 0, letter))
    assert texts != letter_texts
    for text in texts:
        x = [wyckoff.electronegativity(e) for e in text.split(GEN_TAIL)[1].split("\n")[2::2]]
        assert x == sorted(x), text
    out = tmp_path / "en"
    train(tiny_config(out, codec="wyckoff", site_order="electronegativity", epochs=1), progress=False)
    bundle = load_model(out / "model")
    assert bundle.site_order == "electronegativity"
    assert len(list(generate_atoms(2, bundle, max_atoms=6, batch_size=2, seed=0))) == 2
