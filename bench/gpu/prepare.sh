#!/usr/bin/env bash
# Prepare a GPU training run for the device machine (run HERE, from the repository root, with the project's
# venv active): the MP-20 train/val CSVs (compressed) and wheels of the packages that machine lacks, in .gpu/
# (ignored by git, carried by the device tool: run(command="bash bench/gpu/train.sh", carry=[".gpu"])).
# The device image has torch, numpy, scipy, pandas, accelerate, peft, safetensors, pluggy, tqdm; it lacks
# ase, ase_ga, pymatgen, spglib, smact; its transformers is older than ours, so ours travels too.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
data=${ASE_LLMGEN_DATA:-../shared/data}
mkdir -p .gpu/data/mp_20 .gpu/whl
for split in train val; do gzip -c "$data/mp_20/$split.csv" > ".gpu/data/mp_20/$split.csv.gz"; done
# Same versions as in this venv, each wheel without its dependencies (the machine has the rest).
names="ase ase-ga smact dill pymatgen pymatgen-core monty orjson ruamel.yaml
uncertainties spglib pyxtal transformers huggingface-hub tokenizers"
pins=$(for n in $names; do pip show "$n" 2>/dev/null | awk -v n="$n" '/^Version:/{print n"=="$2}'; done)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .gpu/whl $pins
du -sh .gpu  # must stay under the device tool's 64 MiB with the working tree
