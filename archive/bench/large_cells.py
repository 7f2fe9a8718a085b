"""Continue the default model with MP-20 val's large cells seen twice as often (issue 3, session 4).

Usage: python archive/bench/large_cells.py [--min-sites 13] [--out runs/large_cells]

Archived experiment (archive/README.md): kept runnable from the repository root against today's package,
but "default" is now the shipped spatial-order model, not the model the record measured.

The default model's invalid samples were its large cells (archive/benchmarks_by_session.md section 8). This writes
the crystals of the *training* split of MP-20 val (the split `archive/bench/configs/default_large_cells.toml` holds
out, so no validation crystal is trained on) with at least --min-sites sites to an ASE database, which the config
adds as `extra_data`, then continues training. Evaluate with `bench/table1.py --model <out>/train/model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.db import connect

from ase_llmgen.checks.database import db_safe_pairs
from ase_llmgen.data.readers import read_records
from ase_llmgen.training import TrainConfig, train
from ase_llmgen.training.loop import split_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="archive/bench/configs/default_large_cells.toml")
    parser.add_argument("--min-sites", dest="min_sites", type=int, default=13)
    parser.add_argument("--out", default="runs/large_cells")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = out / f"train_split_min{args.min_sites}.db"
    config = TrainConfig.from_file(args.config, extra_data=[str(extra)], out=str(out / "train"))
    if not extra.exists():
        train_records, _ = split_records(read_records(config.data)[0], config)
        tmp = extra.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        with connect(tmp) as db:
            for record in train_records:
                if len(record.atoms) >= args.min_sites:
                    props = dict(record.properties)
                    pairs = {
                        k: props[k]
                        for k in ("spacegroup", "formation_energy", "band_gap", "e_above_hull")
                        if k in props
                    }
                    pairs["reduced_formula"] = props["formula"]  # the key the reader turns back into a condition
                    db.write(record.atoms, key_value_pairs=db_safe_pairs(pairs))
        tmp.replace(extra)  # a half-written set is never trained on
    print(json.dumps({"extra": str(extra), "n": connect(extra).count()}))
    print(json.dumps({k: v for k, v in train(config).items() if k != "history"}))


if __name__ == "__main__":
    main()
