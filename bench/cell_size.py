"""Cell size: how many sites a model's cells have, against MP-20's, and what sets it.

Samples unconditionally (the model alone: grammar on, invalid samples kept) at each temperature and
cell temperature asked, and prints per arm: mean sites per cell, cell volume, volume per atom, structural
and compositional (smact14, as Table 1) validity and both at once, and the Wasserstein distance between the arm's
sites-per-cell distribution and MP-20 val.csv's (the split checkpoints and settings are chosen on; test.csv
is not read). Volume per atom tells apart a model that packs atoms wrongly from one that writes small cells, and
validity weighed by the data's mix of cell sizes compares models whose cells differ in size.

    python bench/cell_size.py --model default --temperatures 0.7,1.0 --cell-temperatures none,1.0,1.3 --n 400

``none``: the temperature throughout (the paper). ``--modes plain,formula_first`` adds arms where the model
first writes a formula (and, if it learnt them, its formula units) into its prompt, then the crystal
(sampling/formula_first.py). Writes ``<out>/cell_size.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.data.readers import read_records
from ase_llmgen.metrics.evaluate import cell_sizes
from ase_llmgen.models.bundle import load_model
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.training.config import resolve_data_path


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"  # None: no sample in any size bin the data has


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--temperatures", default="0.7")
    ap.add_argument("--cell-temperatures", dest="cell_temperatures", default="none,1.0")
    ap.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    ap.add_argument("--modes", default="plain", help="comma-separated: plain, formula_first")
    ap.add_argument("--n", type=int, default=400, help="samples per arm")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", default="mp_20/val.csv", help="the reference distribution (default: MP-20 val)")
    ap.add_argument("--out", default="runs/cell_size")
    args = ap.parse_args()

    records, _ = read_records(resolve_data_path(args.data))
    data_sites = np.array([len(r.atoms) for r in records])
    data_volume = np.array([r.atoms.get_volume() for r in records])
    print(
        f"{args.data}: {len(records)} crystals, {data_sites.mean():.2f} sites, volume {data_volume.mean():.1f} A^3, "
        f"{np.mean(data_volume / data_sites):.2f} A^3/atom"
    )
    bundle = load_model(args.model)
    rows = []
    arms = [
        (float(t), cell, mode)
        for mode in args.modes.split(",")
        for t in args.temperatures.split(",")
        for cell in args.cell_temperatures.split(",")
    ]
    for temperature, cell, mode in arms:
        if mode not in ("plain", "formula_first"):
            raise SystemExit(f"--modes: {mode!r} is neither plain nor formula_first")
        cell_temperature = None if cell == "none" else float(cell)
        settings = SampleSettings(
            temperature=temperature,
            top_p=args.top_p,
            # "none" is the temperature throughout, said explicitly: left unset, a model's own default applies.
            cell_temperature=temperature if cell_temperature is None else cell_temperature,
            require_valid=False,
            batch_size=100,
            formula_first=mode == "formula_first",
        )
        started = time.perf_counter()
        structures, stats = Sampler(bundle, settings, seed=args.seed).sample(args.n, progress=True)
        sites = np.array([len(a) for a in structures])
        volume = np.array([a.get_volume() for a in structures])
        struct = np.array([structurally_valid(a) for a in structures])
        comp = np.array([compositionally_valid(a) for a in structures])
        row = {
            "model": args.model,
            "mode": mode,
            "temperature": temperature,
            "cell_temperature": cell_temperature,
            "top_p": args.top_p,
            "n": len(structures),
            "drawn": stats.drawn,
            "mean_sites": float(sites.mean()),
            "mean_volume": float(volume.mean()),
            "volume_per_atom": float(np.mean(volume / sites)),
            "struct_valid": float(np.mean(struct)),
            "comp_valid": float(np.mean(comp)),
            "valid": float(np.mean(struct & comp)),  # on both counts
            # Validity depends on cell size: weighed by the data's mix of sizes, models of different cell sizes compare.
            "struct_valid_at_data_mix": cell_sizes(sites, struct, data_sites)["valid_at_reference_mix"],
            "comp_valid_at_data_mix": cell_sizes(sites, comp, data_sites)["valid_at_reference_mix"],
            "sites_wasserstein": float(wasserstein_distance(sites, data_sites)),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(json.dumps(row))
    reference = f"{args.data}: {data_sites.mean():.2f}"
    head = (
        f"| mode | tau | cell tau | sites ({reference}) | W1 sites | volume | A^3/atom | struct. | comp. | both "
        "| struct. at the data's sizes | comp. at the data's sizes |"
    )
    print("\n" + head)
    print("|---" * 12 + "|")
    for r in rows:
        cell = "=tau" if r["cell_temperature"] is None else r["cell_temperature"]
        print(
            f"| {r['mode']} | {r['temperature']} | {cell} | {r['mean_sites']:.2f} | {r['sites_wasserstein']:.2f} | "
            f"{r['mean_volume']:.0f} | {r['volume_per_atom']:.1f} | {r['struct_valid']:.3f} | {r['comp_valid']:.3f} | "
            f"{r['valid']:.3f} | {_share(r['struct_valid_at_data_mix'])} | {_share(r['comp_valid_at_data_mix'])} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cell_size.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
