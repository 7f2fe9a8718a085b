#!/usr/bin/env bash
# One-command GPU training run on the device machine (prepared by bench/gpu/prepare.sh):
#   run(command="bash bench/gpu/train.sh", carry=[".gpu"], timeout_s=600)
#   run(command="TIME_MIN=9 bash bench/gpu/train.sh --epochs 100 --lr 3e-3", carry=[".gpu"], timeout_s=600)
#   run(command="CONFIG=mp20_wyckoff bash bench/gpu/train.sh --lr 1e-3", carry=[".gpu"], timeout_s=600)
# Trains a recipe (CONFIG, default the shipped mp20: MP-20 train.csv, checkpoints chosen on val.csv; mp20_wyckoff
# is the built-in wyckoff model's, see its comment) with GPU-sized batches for at most TIME_MIN minutes, then
# writes the model chosen on val.csv in float16 (the form the package ships) and the training log to $OUT. Extra
# arguments override the recipe (any `ase-llmgen train` option). Afterwards, here: bench/table1.py --model <files_at>/model, and
# bench/ship_model.py to make it the default if it wins.
set -euo pipefail
cd "$(dirname "$0")/../.."
TIME_MIN=${TIME_MIN:-8}
# NO_WHEELS=1: the packages are already installed (a local dry run of this script)
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="$PWD:/tmp/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p /tmp/data/mp_20
for split in train val; do gunzip -c ".gpu/data/mp_20/$split.csv.gz" > "/tmp/data/mp_20/$split.csv"; done
export ASE_LLMGEN_DATA=/tmp/data
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
run=${RUN_DIR:-/tmp/run}
rm -rf "$run"  # each device call starts bare anyway; locally, a dry run starts over
python3 -m ase_llmgen.cli train --config "${CONFIG:-mp20}" --out "$run" --batch-size 128 --lr 2e-3 --epochs 60 \
  --time-limit-min "$TIME_MIN" "$@" 2>&1 | tr '\r' '\n' | grep -v '^train: ' || true
cp "$run/metrics.jsonl" "$OUT/metrics.jsonl"
# The model chosen on val.csv (keep_best) comes back, else the last one (a paused run's is in its checkpoint).
# One model only: the device tool returns at most 8 files.
chosen="$run/best"; [ -d "$chosen" ] || chosen="$run/model"; [ -d "$chosen" ] || chosen="$run/checkpoint/model"
python3 bench/ship_model.py "$chosen" --to "$OUT/model"
ls -la "$OUT" "$OUT/model"
