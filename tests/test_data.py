import csv
from collections import Counter

import numpy as np
import pytest
from ase.build import bulk
from ase.db import connect
from ase.io import write

from ase_llmgen.data import CurriculumConfig, DataError, read_records, training_texts
from ase_llmgen.text.prompts import parse_prompt

from conftest import DATA, SHARED, needs_shared


def test_reads_cdvae_csv_with_properties(sample_records):
    assert len(sample_records) == 12
    first = sample_records[0]
    assert first.properties["formula"] == "TmMgHg2"
    assert first.properties["spacegroup"] == 225
    assert "row 1" in first.source and "mp_20" not in first.source or "mp20" in first.source


def _broken_copy(tmp_path):
    rows = list(csv.DictReader(open(DATA / "mp20_val_sample.csv")))
    rows[3]["cif"] = "data_broken\n_cell_length_a abc\n"
    path = tmp_path / "broken.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_bad_row_names_file_and_row(tmp_path):
    path = _broken_copy(tmp_path)
    with pytest.raises(DataError, match=r"broken\.csv: row 4 \(mp-"):
        read_records(path)


def test_bad_row_skipped_with_count(tmp_path):
    records, skipped = read_records(_broken_copy(tmp_path), on_error="skip")
    assert len(records) == 11 and len(skipped) == 1 and "row 4" in skipped[0]


def test_missing_cif_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no 'cif' column"):
        read_records(path)


def test_reads_ase_db_and_ase_files(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6)
    db_path = tmp_path / "s.db"
    connect(db_path).write(atoms, formula_hint="x", spacegroup=225)
    records, _ = read_records(db_path)
    assert len(records) == 1 and records[0].properties["spacegroup"] == 225
    # A database written by ase-llmgen: its checks' keys stand in for formula and space group.
    from ase_llmgen.checks.database import check_database

    checked = tmp_path / "checked.db"
    connect(checked).write(bulk("NaCl", "rocksalt", a=5.6))
    check_database(checked)
    records, _ = read_records(checked)
    assert records[0].properties == {"formula": "NaCl", "spacegroup": 225}
    write(tmp_path / "s.extxyz", [atoms, bulk("NaCl", "rocksalt", a=5.6)])
    records, _ = read_records(tmp_path / "s.extxyz")
    assert [len(r.atoms) for r in records] == [1, 2]
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "missing.cif")


def test_curriculum_is_deterministic_and_mixed(sample_records):
    a = list(training_texts(sample_records, seed=3, epoch=1))
    b = list(training_texts(sample_records, seed=3, epoch=1))
    assert a == b
    assert list(training_texts(sample_records, seed=3, epoch=1, start=5)) == a[5:]
    assert a != list(training_texts(sample_records, seed=3, epoch=2))
    texts = [t for epoch in range(30) for t in training_texts(sample_records, seed=0, epoch=epoch)]
    tasks = Counter(parse_prompt(t).task for t in texts)
    assert 0.25 < tasks["infill"] / len(texts) < 0.42
    n_conditions = Counter(
        len(parse_prompt(t).conditions.as_dict()) for t in texts if parse_prompt(t).task == "generate"
    )
    assert n_conditions[0] > 0 and n_conditions[1] > 0 and max(n_conditions) >= 3
    # Infill answers are the masked element and parse back.
    for t in texts[:50]:
        p = parse_prompt(t)
        if p.task == "infill":
            assert p.completion in {s for r in sample_records for s in r.atoms.get_chemical_symbols()}


def test_curriculum_without_conditions(sample_records):
    config = CurriculumConfig(infill_fraction=0.0, conditional=False)
    for t in training_texts(sample_records, seed=0, epoch=0, config=config):
        p = parse_prompt(t)
        assert p.task == "generate" and not p.conditions.as_dict()


def test_spatial_site_order(sample_records):
    """site_order="spatial" writes sites sorted by (x, y, z) and keeps the crystal; bad names are refused."""
    config = CurriculumConfig(infill_fraction=0.0, conditional=False, site_order="spatial")
    texts = list(training_texts(sample_records, seed=0, epoch=0, config=config))
    as_read = list(training_texts(sample_records, seed=0, epoch=0, config=CurriculumConfig(0.0, False)))
    assert texts != as_read
    for t, u in zip(texts, as_read):
        lines, others = parse_prompt(t).completion.splitlines(), parse_prompt(u).completion.splitlines()
        coords = [tuple(map(float, line.split())) for line in lines[3::2]]
        assert coords == sorted(coords)
        # The same translated crystal, only reordered: identical header, same (element, position) multiset.
        assert lines[:2] == others[:2]
        assert sorted(zip(lines[2::2], lines[3::2])) == sorted(zip(others[2::2], others[3::2]))
    with pytest.raises(ValueError, match="site_order"):
        CurriculumConfig(site_order="alphabetical")


@needs_shared
def test_full_mp20_val_reads_cleanly():
    records, skipped = read_records(SHARED / "mp_20" / "val.csv")
    assert len(records) == 9047 and not skipped
    assert np.mean([len(r.atoms) for r in records]) < 20


def test_fixed_crystal_texts_are_encoded_once_and_unchanged(monkeypatch):
    """Without translation or permutation a record's crystal text is cached: same texts, one encode per record."""
    from ase_llmgen.text import wyckoff

    records, _ = read_records(DATA / "mp20_val_sample.csv")
    config = CurriculumConfig(translate=False, codec="wyckoff", site_order="letter")
    plain = [list(training_texts(records, 0, epoch, config)) for epoch in range(2)]
    calls = []
    encode = wyckoff.encode
    monkeypatch.setattr(wyckoff, "encode", lambda atoms, **kw: calls.append(1) or encode(atoms, **kw))
    cache: dict[int, str] = {}
    cached = [list(training_texts(records, 0, epoch, config, cache=cache)) for epoch in range(2)]
    assert cached == plain and len(cache) == len(records)
    assert len(calls) == len(records)  # two epochs, each record encoded once
