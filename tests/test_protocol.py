"""The paper's data protocol: train on one file, validate on another, recipes by name, blank band gaps,
early stopping on the validation loss, and bf16 autocast."""

import json
import math

import numpy as np
import pytest
import torch

from ase_llmgen.data.curriculum import CurriculumConfig, training_text
from ase_llmgen.data.readers import read_records
from ase_llmgen.training import TrainConfig, loop, train
from ase_llmgen.training.config import RECIPES, recipe_path

from conftest import DATA, tiny_config

TRAIN = DATA / "mp20_train_sample.csv"  # band_gap blank in every row, as in the full train split
VAL = DATA / "mp20_val_sample.csv"


def tiny(out, **kw):
    return tiny_config(out, **{"data": str(TRAIN), "val_data": str(VAL), "epochs": 1, "eval_every": 1, **kw})


def events(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_blank_band_gap_is_never_a_condition():
    records, skipped = read_records(TRAIN)
    assert len(records) == 12 and not skipped
    assert all("band_gap" not in r.properties and "formation_energy" in r.properties for r in records)
    texts = [training_text(r, np.random.default_rng(i), CurriculumConfig()) for i in range(200) for r in records[:1]]
    assert not any("band gap" in t for t in texts)
    assert any("formation energy" in t for t in texts)  # the other conditions are still drawn


def test_validation_comes_from_val_data_and_training_uses_all_of_data(tmp_path):
    state = train(tiny(tmp_path), progress=False)
    start = events(tmp_path)[0]
    assert start["n_train"] == 12 and start["n_val"] == 12  # nothing of train held out, all of val used
    assert state["status"] == "finished" and state["step"] == 3
    meta = json.loads((tmp_path / "model" / "ase_llmgen.json").read_text())
    assert meta["train_config"]["val_data"] == str(VAL)


def test_without_val_data_a_fraction_of_data_is_held_out(tmp_path):
    train(tiny(tmp_path, val_data="", val_fraction=0.25), progress=False)
    start = events(tmp_path)[0]
    assert (start["n_train"], start["n_val"]) == (9, 3)


def test_patience_stops_early_and_a_rerun_does_not_train_on(tmp_path):
    # lr 0 keeps the validation loss flat, so it never improves after the first evaluation
    config = tiny(tmp_path, epochs=5, lr=0.0, patience=2)
    state = train(config, progress=False)
    assert state["status"] == "finished" and state.get("early_stopped") and state["step"] == 3
    assert (tmp_path / "model" / "model.safetensors").exists()
    again = train(config, progress=False)
    assert again["step"] == 3


def test_bf16_autocast_trains_close_to_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "native_bf16", lambda device_type: True)  # run bf16 even where it is emulated
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        train(tiny(out, precision=precision, epochs=2), progress=False)
        losses[precision] = [e["train_loss"] for e in events(out) if "train_loss" in e]
    assert all(math.isfinite(x) for x in losses["bf16"])
    # same data and initial weights: bf16 matmuls move the loss by well under a percent here
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    with pytest.raises(ValueError, match="precision"):
        train(tiny(tmp_path / "bad", precision="fp8"), progress=False)


def test_bf16_falls_back_to_fp32_where_the_cpu_has_no_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "native_bf16", lambda device_type: False)
    train(tiny(tmp_path / "fp32", precision="fp32"), progress=False)
    with pytest.warns(RuntimeWarning, match="no bfloat16 support"):
        train(tiny(tmp_path / "bf16", precision="bf16"), progress=False)
    losses = {p: [e["train_loss"] for e in events(tmp_path / p) if "train_loss" in e] for p in ("fp32", "bf16")}
    assert losses["bf16"] == losses["fp32"]  # the very same fp32 steps
    log = events(tmp_path / "bf16")
    assert log[0]["precision"] == "fp32"
    assert {"event": "precision_fallback", "step": 0, "configured": "bf16", "used": "fp32"} in log
    meta = json.loads((tmp_path / "bf16" / "model" / "ase_llmgen.json").read_text())
    assert meta["train_config"]["precision"] == "bf16"  # as configured: a resume elsewhere may use it


def test_native_bf16_asks_onednn_on_cpu_and_trusts_other_devices():
    assert loop.native_bf16("cuda") is True
    assert loop.native_bf16("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_recipes_by_name_resolve_data_under_the_data_folder(tmp_path, monkeypatch):
    assert recipe_path("mp20") == RECIPES / "mp20.toml"
    with pytest.raises(FileNotFoundError, match="mp20"):
        recipe_path("no_such_recipe")
    (tmp_path / "mp_20").mkdir()
    for name in ("train.csv", "val.csv"):
        (tmp_path / "mp_20" / name).write_text("cif\n")
    monkeypatch.setenv("ASE_LLMGEN_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "mp_20")  # somewhere the relative paths do not exist
    config = TrainConfig.from_file("mp20")
    assert config.data == str(tmp_path / "mp_20" / "train.csv")
    assert config.val_data == str(tmp_path / "mp_20" / "val.csv")
    assert config.site_order == "spatial" and config.keep_best == "val_loss"
    wyckoff = TrainConfig.from_file("mp20_wyckoff")  # issue 15's codec, same protocol
    assert wyckoff.codec == "wyckoff" and wyckoff.site_order == "letter" and not wyckoff.translate
    assert wyckoff.data == config.data and wyckoff.val_data == config.val_data


def test_bf16_batches_are_padded_to_a_few_widths(tiny_bundle):
    from ase_llmgen.training.loop import BF16_WIDTH_MULTIPLE, collate

    texts = ["3.0 3.0 3.0\n90 90 90\nNa\n0.00 0.00 0.00", "4.1 4.1 4.1\n90 90 90\nCl\n0.50 0.50 0.50\nNa\n0.0"]
    plain = collate(tiny_bundle.tokenizer, texts, 512)
    padded = collate(tiny_bundle.tokenizer, texts, 512, BF16_WIDTH_MULTIPLE)
    assert padded["input_ids"].shape[1] % BF16_WIDTH_MULTIPLE == 0
    width = plain["input_ids"].shape[1]
    assert (padded["input_ids"][:, :width] == plain["input_ids"]).all()
    assert (padded["labels"][:, width:] == -100).all() and (padded["attention_mask"][:, width:] == 0).all()


def test_data_paths_given_directly_resolve_under_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "mp_20").mkdir()
    (tmp_path / "mp_20" / "train.csv").write_text("cif\n")
    monkeypatch.setenv("ASE_LLMGEN_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "mp_20")
    config = TrainConfig(data="mp_20/train.csv", val_data="mp_20/missing.csv")
    assert config.data == str(tmp_path / "mp_20" / "train.csv")
    assert config.val_data == "mp_20/missing.csv"  # not found anywhere: left as given, for the reader to name
