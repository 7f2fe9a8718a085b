"""The training loop: multi-task curriculum, cosine schedule, periodic validation,
atomic checkpoints and exact resume.  Runs on CPU, one GPU, or many under
``accelerate launch`` / ``torchrun`` (Hugging Face Accelerate does the
distribution; each rank takes its slice of every global batch).

Resume is exact: step ``s`` always sees the same texts, because each text's
randomness comes from ``(seed, epoch, position)`` (see ``data.curriculum``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ase_llmgen.data.curriculum import CurriculumConfig, Written, training_text, training_texts
from ase_llmgen.data.readers import read_records
from ase_llmgen.models.bundle import LMBundle, save_bundle, token_ids
from ase_llmgen.registry import DEFAULT_CODEC
from ase_llmgen.training.config import TrainConfig
from ase_llmgen.training.sample_check import HIGHER_IS_BETTER, sample_check

# Batches are sorted by token count within chunks of this many, to cut padding: measured on MP-20 train
# texts, 16.6% of token slots were padding when sorted by characters in chunks of 16 (a prompt phrase is
# many characters but one token), 1.3% by tokens in chunks of 64 (docs/benchmarks.md, training speed).
CHUNK_BATCHES = 64
PRECISIONS = ("fp32", "bf16")
# bf16 on CPU: oneDNN keeps kernels and buffers per tensor shape, and with every batch width from ~60 to 512
# the process grew by ~15 MB a step (7 GB after 320 steps of the default model); padding widths to a multiple
# of 16 bounds the shapes (a 4M model stayed flat) for ~4% more padding.
BF16_WIDTH_MULTIPLE = 16


def native_bf16(device_type: str) -> bool:
    """Whether bf16 autocast runs natively on ``device_type``.

    oneDNN's answer: true on a CPU with AVX512. Without it (an AVX2-only AMD EPYC, 2026-12-07) bf16 is emulated:
    bf16 autocast trained a 9.9M-parameter model at 1/25 of fp32's tokens/s (docs/benchmarks.md, training speed).
    """
    if device_type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: trust the configuration
        return True


def precision_used(precision: str, device_type: str) -> str:
    """The precision a run trains in: bf16 falls back to fp32, with a warning, where it is not native."""
    if precision == "bf16" and not native_bf16(device_type):
        warnings.warn(
            "precision 'bf16': oneDNN has no bfloat16 support on this CPU (it needs AVX512), where bf16 autocast "
            "is many times slower than fp32; training in fp32",
            RuntimeWarning,
            stacklevel=3,
        )
        return "fp32"
    return precision


def _learnt(config: TrainConfig) -> dict | None:
    """The metadata of the ``init_from`` model (``None`` when there is none, or for a fresh pretrained base)."""
    if not config.init_from:
        return None
    from ase_llmgen.models.bundle import read_meta, resolve

    where = resolve(config.init_from)
    return None if where == "smollm2" else read_meta(where)


def _continued(config: TrainConfig, name: str, learnt_of: Callable, learnt_what: str, noun: str) -> str | None:
    """What the ``init_from`` model learnt for setting ``name`` (None: nothing to continue); a configured
    value that differs is an error, since continuing in another one would unteach the model."""
    meta = _learnt(config)
    learnt = learnt_of(meta) if meta is not None else None
    configured = getattr(config, name)
    if configured and learnt and configured != learnt and not config.new_format:
        raise ValueError(
            f"init_from {config.init_from!r} {learnt_what.format(learnt=learnt)}, but {name} is {configured!r}: "
            f"leave {name} out to continue in the model's {noun} (or set new_format to teach it this one)"
        )
    return learnt


def resolve_codec(config: TrainConfig) -> str:
    """The codec to train with: as configured, else the ``init_from`` model's, else the paper's.

    Continuing a model in another format than it learnt would unteach it: that is an error.
    """
    from ase_llmgen.models.bundle import learnt_codec

    learnt = _continued(config, "codec", learnt_codec, "learnt the {learnt!r} codec", "format")
    codec = config.codec or learnt or DEFAULT_CODEC
    from ase_llmgen.plugins import get_codec

    get_codec(codec)  # an unknown codec fails before any data is read
    return codec


def resolve_site_order(config: TrainConfig) -> str:
    """The site order to train in: as configured, else as the ``init_from`` model learnt, else the codec's first.

    Continuing a model in another order than it learnt would unteach it: that is an error.
    """
    from ase_llmgen.models.bundle import learnt_site_order
    from ase_llmgen.plugins import get_codec

    learnt = _continued(config, "site_order", learnt_site_order, "learnt sites in {learnt!r} order", "order")
    orders = get_codec(config.codec or DEFAULT_CODEC).site_orders
    if config.new_format and learnt not in orders:  # taught a format whose orders it never learnt: the format's
        learnt = None
    return config.site_order or learnt or orders[0]


def _check_tokens(bundle: LMBundle, codec: str) -> None:
    """A model taught a new format (``new_format``) keeps its tokenizer: each of its tokens must have the same
    id in the tokenizer that codec builds (which may have more: phrases added to the vocabulary since)."""
    from ase_llmgen.models.bundle import learnt_codec
    from ase_llmgen.models.tokenizer import build_tokenizer
    from ase_llmgen.plugins import get_codec

    coordinate_tokens = bool(bundle.meta.get("coordinate_tokens"))
    wanted = build_tokenizer(coordinate_tokens, codec).get_vocab()
    changed = sorted(t for t, i in bundle.tokenizer.get_vocab().items() if wanted.get(t) != i)
    if changed:
        raise ValueError(f"new_format: tokens {changed[:5]} of the init_from model are not the {codec!r} codec's")
    # With codec pieces as tokens, where they are matched is the codec's own pattern, which the kept tokenizer has.
    old, new = get_codec(learnt_codec(bundle.meta)), get_codec(codec)
    if coordinate_tokens and (old.tokens, old.token_pattern) != (new.tokens, new.token_pattern):
        raise ValueError(f"new_format: the {codec!r} codec's tokens are matched unlike the init_from model's")


def build_bundle(config: TrainConfig) -> LMBundle:
    """A fresh model of the configured family, or the ``init_from`` model made trainable."""
    if config.init_from:
        from ase_llmgen.models.bundle import load_model

        bundle = load_model(config.init_from)
        if bundle.family != config.family:
            raise ValueError(
                f"init_from {config.init_from!r} is a {bundle.family!r} model but family is {config.family!r}"
            )
        if config.new_format and bundle.family == "scratch":
            _check_tokens(bundle, config.codec)
        if bundle.family == "lora":
            for name, p in bundle.model.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            bundle.model.float()  # the shipped weights are stored in float16
            bundle.model.requires_grad_(True)
        bundle.model.train()
        history = [
            *bundle.meta.get("history", []),
            {k: bundle.meta.get(k) for k in ("steps", "val_loss", "train_seconds", "codec")},
        ]
        # Sampling defaults were measured on the base model's samples: the continued model earns its own. A release
        # tag names shipped files, not a model trained from them.
        kept = {k: v for k, v in bundle.meta.items() if k not in ("sampling_defaults", "release")}
        bundle.meta = {**kept, "history": history, "init_from": str(config.init_from)}
        return bundle
    if config.family == "scratch":
        from ase_llmgen.models import scratch

        return scratch.build(
            config.d_model,
            config.n_layers,
            config.n_heads,
            config.max_len,
            config.seed,
            config.coordinate_tokens,
            config.codec or DEFAULT_CODEC,
        )
    if config.family == "lora":
        from ase_llmgen.models import lora

        return lora.build(
            config.base, config.lora_r, config.lora_alpha, config.lora_dropout, tuple(config.lora_targets)
        )
    raise ValueError(f"family must be 'scratch' or 'lora', got {config.family!r}")


def collate(tokenizer, texts: list[str], max_len: int, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and labels (loss on the whole sequence, as the paper).

    ``multiple_of``: pad the width up to a multiple of this (see ``BF16_WIDTH_MULTIPLE``).
    """
    rows = [token_ids(tokenizer, t, eos=True)[:max_len] for t in texts]
    width = -(-max(len(r) for r in rows) // multiple_of) * multiple_of
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's summed next-token loss (nats) and how many tokens it is over (a tensor: no device sync)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Shift the labels, not the logits: a slice of the logits would copy them (49k columns for SmolLM2).
    labels = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
    summed = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return summed, (labels != -100).sum()


def tokens_per_batch(tokenizer, texts: list[str], batch_size: int, max_len: int) -> float:
    """The loss's fixed divisor: ``batch_size`` times the mean number of predicted tokens per text in ``texts``.

    Batches are sorted by length (``batches``), so a per-batch mean would weight each text by about one over its
    length: a model trained so learnt MP-20's space groups weighted that way (36% cubic against the data's 23%,
    and cells of 8.5 sites against 10.2; docs/benchmarks.md). Dividing every batch's summed loss by one
    constant weights every token alike, which is the likelihood the validation loss measures."""
    if not texts:
        raise ValueError("no training texts to size the loss by")
    lengths = [min(len(token_ids(tokenizer, t, eos=True)), max_len) - 1 for t in texts]
    return batch_size * max(float(np.mean(lengths)), 1.0)


def batches(
    records,
    config: TrainConfig,
    cur: CurriculumConfig,
    start_step: int,
    steps_per_epoch: int,
    length: Callable[[str], int] = len,
):
    """Yield ``(step, texts)`` from ``start_step`` on, deterministically; ``length``: a text's size in tokens."""
    bs = config.batch_size
    step = start_step
    encoded: dict[int, Written] = {}  # crystals analysed once (no translation or permutation): curriculum.training_text
    while True:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        chunk = in_epoch // CHUNK_BATCHES
        first = chunk * CHUNK_BATCHES * bs
        texts = list(islice(training_texts(records, config.seed, epoch, cur, first, encoded), CHUNK_BATCHES * bs))
        texts.sort(key=length)
        chunk_batches = [texts[i : i + bs] for i in range(0, len(texts), bs)]
        order = np.random.default_rng([config.seed, epoch, chunk, 7]).permutation(len(chunk_batches))
        for j in order[in_epoch - chunk * CHUNK_BATCHES :]:
            yield step, chunk_batches[j]
            step += 1


@torch.no_grad()
def evaluate(model, tokenizer, texts: list[str], config: TrainConfig, device) -> tuple[float, float]:
    """Validation loss over ``texts``: nats per token, and nats per character.

    Per character is comparable across tokenizers (the small model's vs SmolLM2's).
    """
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(texts), config.batch_size):
        batch = {
            k: v.to(device) for k, v in collate(tokenizer, texts[i : i + config.batch_size], config.max_len).items()
        }
        out = model(**batch)
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * tokens
        count += tokens
    model.train()
    chars = sum(len(t) + 1 for t in texts)  # + 1 for the end of text
    return total / max(count, 1), total / chars


def _save_checkpoint(out: Path, model, optimizer, scheduler, state: dict, bundle: LMBundle) -> None:
    # Write beside, then swap: an interruption never leaves a half-written checkpoint.
    final, tmp, old = out / "checkpoint", out / "checkpoint.tmp", out / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, tmp / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    save_bundle(bundle, tmp / "model")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out: Path, model, optimizer, scheduler) -> dict | None:
    for path in (out / "checkpoint", out / "checkpoint.old"):
        if (path / "state.json").exists():
            model.load_state_dict(load_file(path / "trainable.safetensors"), strict=False)
            opt = torch.load(path / "optimizer.pt", weights_only=True)  # our own file, tensors only
            optimizer.load_state_dict(opt["optimizer"])
            scheduler.load_state_dict(opt["scheduler"])
            return json.loads((path / "state.json").read_text())
    return None


def _shuffled(records: list, config: TrainConfig) -> list:
    # Seeded by split_seed alone, so a continued run validates on the same examples.
    split_seed = config.seed if config.split_seed is None else config.split_seed
    perm = np.random.default_rng([split_seed, 12345]).permutation(len(records))
    return [records[i] for i in perm]


def split_records(records: list, config: TrainConfig) -> tuple[list, list]:
    """``(train, validation)``: the fixed, seeded validation split a run with ``config`` holds out of ``data``.

    With ``config.val_data`` set, validation comes from that file instead and this split is not used.
    """
    shuffled = _shuffled(records, config)
    n_val = max(1, int(round(config.val_fraction * len(records))))
    return shuffled[n_val:], shuffled[:n_val]


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) the model described by ``config``; returns the final state.

    The finished model is written to ``<out>/model``; ``<out>/metrics.jsonl``
    logs train/validation loss; ``<out>/checkpoint`` allows resuming.
    """
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    if config.keep_best and config.keep_best not in HIGHER_IS_BETTER:
        raise ValueError(f"keep_best must be one of {sorted(HIGHER_IS_BETTER)} or empty, got {config.keep_best!r}")
    if config.keep_best.startswith("sample_") and not config.sample_every:
        raise ValueError(f"keep_best = {config.keep_best!r} needs sample_every > 0")
    if config.threads:
        torch.set_num_threads(config.threads)
    # On CPU, Accelerate needs cpu=True to pick the gloo backend under torchrun.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    precision = precision_used(config.precision, accelerator.device.type)
    records, skipped = read_records(config.data, config.on_error)
    if config.val_data:
        val_records, val_skipped = read_records(config.val_data, config.on_error)
        skipped += val_skipped
        train_records, val_records = records, _shuffled(val_records, config)
        minimum = 1
    else:
        train_records, val_records = split_records(records, config)
        minimum = 2
    if len(records) < minimum or not val_records:
        raise ValueError(
            f"{config.data}: need at least {minimum} structure(s) to train"
            + (f" and 1 in {config.val_data} to validate" if config.val_data else "")
            + f", found {len(records)}"
        )
    # Extra sources join training only, so the validation loss stays comparable with runs without them.
    for extra in config.extra_data:
        more, more_skipped = read_records(extra, config.on_error)
        train_records += more
        skipped += more_skipped
    config = dataclasses.replace(config, codec=resolve_codec(config))
    config = dataclasses.replace(config, site_order=resolve_site_order(config))
    cur = CurriculumConfig.of(config.to_dict())
    val_texts = [
        training_text(r, np.random.default_rng([config.seed, 999_999, i]), cur)
        for i, r in enumerate(val_records[: config.val_examples])
    ]

    bundle = build_bundle(config)
    bundle.meta.update(
        {
            "train_config": config.to_dict(),
            "codec": config.codec,  # what sampling, infill and likelihood write the model's texts with
            "n_train": len(train_records),
            "n_val": len(val_records),
        }
    )
    model = bundle.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    steps_per_epoch = math.ceil(len(train_records) / config.batch_size)
    total_steps = max(1, int(config.epochs * steps_per_epoch))
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps // 10), total_steps)
    state = _load_checkpoint(out, model, optimizer, scheduler) or {"step": 0, "elapsed_s": 0.0, "tokens": 0}
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    sized_now = "tokens_per_batch" not in state  # kept in the state, so a resumed run divides by the same number
    if sized_now:
        picked = np.random.default_rng([config.seed, 888_888]).permutation(len(train_records))[:512]
        rngs = (np.random.default_rng([config.seed, 888_888, i]) for i in picked)
        sample = [training_text(train_records[i], rng, cur) for i, rng in zip(picked, rngs)]
        state["tokens_per_batch"] = tokens_per_batch(bundle.tokenizer, sample, config.batch_size, config.max_len)

    rank, world = accelerator.process_index, accelerator.num_processes
    log = open(out / "metrics.jsonl", "a") if accelerator.is_main_process else None

    def write_log(entry: dict) -> None:
        if log:
            log.write(json.dumps(entry) + "\n")
            log.flush()

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _save_checkpoint(out, accelerator.unwrap_model(model), optimizer, scheduler, state, bundle)

    data_sites = np.array([len(r.atoms) for r in train_records])

    def keep_if_best(entry: dict) -> None:
        """Save the model to <out>/best when ``entry`` improves the ``keep_best`` metric (main process)."""
        value = entry.get(config.keep_best)
        if value is None:
            return
        best = state.get("best")
        higher = HIGHER_IS_BETTER[config.keep_best]
        if best is None or (value > best["value"] if higher else value < best["value"]):
            state["best"] = {"metric": config.keep_best, "value": value, "step": entry["step"]}
            bundle.meta.update({"steps": entry["step"], "val_loss": state.get("val_loss"), "best": state["best"]})
            tmp = out / "best.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_bundle(bundle, tmp)
            shutil.rmtree(out / "best", ignore_errors=True)
            tmp.rename(out / "best")

    if sized_now and state["step"] > 0:  # a checkpoint from before the loss was sized: the weighting changes here
        write_log({"event": "loss_sized_on_resume", **{k: state[k] for k in ("step", "tokens_per_batch")}})
    if state["step"] == 0:
        write_log(
            {
                "event": "start",
                "n_train": len(train_records),
                "n_val": len(val_records),
                "skipped_rows": len(skipped),
                "total_steps": total_steps,
                "world": world,
                "precision": precision,
            }
        )
    if precision != config.precision:  # at every (re)start: a run may resume on another machine
        write_log(
            {"event": "precision_fallback", "step": state["step"], "configured": config.precision, "used": precision}
        )
    started, window_tokens, window_start = time.time(), 0, time.time()
    base_elapsed = state["elapsed_s"]
    bar = tqdm(
        total=total_steps, initial=state["step"], disable=not (progress and accelerator.is_main_process), desc="train"
    )
    status = "finished"
    try:
        width_multiple = BF16_WIDTH_MULTIPLE if precision == "bf16" else 1
        n_tokens_of = lambda text: len(token_ids(bundle.tokenizer, text, eos=True))  # noqa: E731
        for step, texts in batches(train_records, config, cur, state["step"], steps_per_epoch, n_tokens_of):
            if step >= total_steps:
                break
            if config.patience and state.get("evals_since_best", 0) >= config.patience:
                state["early_stopped"] = True  # the run is complete: its model is written as at the end
                break
            batch = {
                k: v.to(accelerator.device)
                for k, v in collate(bundle.tokenizer, texts[rank::world], config.max_len, width_multiple).items()
            }
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                summed, counted = summed_loss(model, batch)
            # Each rank holds 1/world of the batch, and its gradients are averaged over the ranks.
            accelerator.backward(summed / (state["tokens_per_batch"] / world))
            loss = summed.detach() / counted.clamp(min=1)  # nats per token, for the log
            accelerator.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_tokens = int(batch["attention_mask"].sum()) * world
            window_tokens += n_tokens
            state.update(
                step=step + 1, tokens=state["tokens"] + n_tokens, elapsed_s=base_elapsed + time.time() - started
            )
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            done = state["step"]
            end_of_epoch = done % steps_per_epoch == 0
            if done % config.eval_every == 0 or end_of_epoch or done == total_steps:
                val, val_per_char = evaluate(model, bundle.tokenizer, val_texts, config, accelerator.device)
                rate = window_tokens / max(time.time() - window_start, 1e-9)
                write_log(
                    {
                        "step": done,
                        "epoch": done / steps_per_epoch,
                        "train_loss": loss.item(),
                        "val_loss": val,
                        "val_nats_per_char": val_per_char,
                        "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": rate,
                        "elapsed_s": state["elapsed_s"],
                    }
                )
                window_tokens, window_start = 0, time.time()
                state["val_loss"] = val
                # Early stopping counts evaluations since the best validation loss (kept in the state,
                # so a resumed run counts on).
                if val < state.get("best_val_loss", math.inf):
                    state.update(best_val_loss=val, evals_since_best=0)
                else:
                    state["evals_since_best"] = state.get("evals_since_best", 0) + 1
                if accelerator.is_main_process:
                    keep_if_best({"step": done, "val_loss": val, "val_nats_per_char": val_per_char})
            if config.sample_every and done % config.sample_every == 0 and accelerator.is_main_process:
                check_start = time.time()
                entry = {
                    "step": done,
                    # bundle.model is the unwrapped module being trained (prepare() wraps, never copies)
                    **sample_check(bundle, config.sample_n, config.sample_temperature, data_sites, seed=done),
                }
                write_log(entry)
                keep_if_best(entry)
                window_start += time.time() - check_start  # sampling is not training throughput
            if done % config.save_every == 0 or end_of_epoch:
                checkpoint()
            if config.time_limit_min and time.time() - started > 60 * config.time_limit_min:
                status = "paused"
                break
    except KeyboardInterrupt:
        status = "interrupted"
    bar.close()
    checkpoint()
    if status == "finished" and accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        bundle.model = final
        bundle.meta.update(
            {"steps": state["step"], "val_loss": state.get("val_loss"), "train_seconds": state["elapsed_s"]}
        )
        save_bundle(bundle, out / "model")
    state["status"] = status
    write_log({"event": status, **state})
    if log:
        log.close()
    if status == "interrupted":
        raise KeyboardInterrupt
    return state
