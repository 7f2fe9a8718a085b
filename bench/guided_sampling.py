"""Energy-guided vs plain sampling: CHGNet-metastable crystals per CPU-minute.

Usage: nice -n 10 python bench/guided_sampling.py [--n 48] [--k 4] [--out runs/guided_sampling]
       python bench/guided_sampling.py --report [--out runs/guided_sampling]

Two arms draw ``--n`` crystals each from the shipped model (temperature ``--temperature``, top-p 0.9, no
conditions), only SMACT-valid compositions (the paper's rule for stability rates):

* ``plain``: the sampler as it is;
* ``guided``: the registered ``llm_guided`` generator -- each crystal the best of ``--k`` samples by a CHGNet
  single point's E_hull estimate (:class:`ase_llmgen.ga.guided.GuidedStructureSource`).

Every crystal is then relaxed with CHGNet (FIRE, fmax 0.1, at most 500 steps / 60 s) and its E_hull taken
against the MP-20 hull.  Cost is process CPU time (``time.process_time``; torch on one thread): sampling
(and, guided, scoring) per chunk of 8 crystals, shared equally among them, plus each relaxation.  Reported
per arm: metastable (E_hull < 0.1) and stable (< 0) counts and rates with 95% Wilson intervals, CPU seconds
per crystal, and metastable crystals per CPU-minute.

Chunk c of an arm uses seed ``1000 * seed + c`` and is written to ``results.jsonl`` crystal by crystal;
a rerun skips the crystals already there (kill it at any time).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from bench_io import read_jsonl, wilson  # bench/ is on the path when run as a script

CHUNK = 8


def run(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from ase_llmgen.checks.validity import compositionally_valid
    from ase_llmgen.metrics.stability import chgnet_model, default_reference_hull, relax
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.plugins import generators
    from ase_llmgen.relax.builtin import chgnet_calculator
    from ase_llmgen.sampling.sources import LLMStructureSource

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {(r["arm"], r["chunk"], r["j"]) for r in read_jsonl(results)}
    hull = default_reference_hull()
    model = chgnet_model()
    bundle = load_model(args.model)
    sampling = dict(temperature=args.temperature, top_p=0.9, batch_size=32)
    chunks = math.ceil(args.n / CHUNK)

    def comp_valid(atoms) -> bool:
        try:
            return bool(compositionally_valid(atoms.get_chemical_symbols()))
        except Exception:
            return False

    with open(results, "a") as fh, tqdm(total=2 * chunks * CHUNK, initial=len(done), desc="crystals") as bar:
        for chunk in range(chunks):
            for arm in ("plain", "guided"):
                keys = [(arm, chunk, j) for j in range(CHUNK)]
                if all(k in done for k in keys):
                    continue
                seed = 1000 * args.seed + chunk
                started = time.process_time()
                if arm == "plain":
                    source = LLMStructureSource(bundle, seed=seed, **sampling)
                    crystals = []
                    for atoms in source.sampler.iter_structures(source.conditions, source.stats, accept=comp_valid):
                        crystals.append(atoms)
                        if len(crystals) == CHUNK:
                            break
                    drawn = source.stats.drawn
                else:
                    source = generators()["llm_guided"].factory(
                        model=bundle,
                        k=args.k,
                        calculator=lambda: chgnet_calculator(model),
                        hull=hull,
                        seed=seed,
                        score="e_hull",
                        **sampling,
                    )
                    crystals = source.take(CHUNK)
                    drawn = source.stats.drawn
                generate_cpu = (time.process_time() - started) / max(1, len(crystals))
                for j, atoms in enumerate(crystals):
                    if (arm, chunk, j) in done:
                        continue
                    record = {
                        "arm": arm,
                        "chunk": chunk,
                        "j": j,
                        "generate_cpu_s": round(generate_cpu, 3),
                        "drawn_in_chunk": drawn,
                        "formula": atoms.get_chemical_formula(mode="metal"),
                        "natoms": len(atoms),
                        "guided_score": atoms.info.get("guided_score"),
                    }
                    started = time.process_time()
                    try:
                        res = relax(atoms, fmax=0.1, steps=500, time_limit=60.0, model=model, threads=1)
                        formula = res["atoms"].get_chemical_formula()
                        e_form = hull.formation_energy(formula, res["energy_per_atom"])
                        record.update(e_hull=hull.e_above_hull(formula, e_form), relax_steps=res["steps"])
                    except Exception as exc:
                        record["relax_error"] = f"{type(exc).__name__}: {exc}"[:200]
                    record["relax_cpu_s"] = round(time.process_time() - started, 3)
                    fh.write(json.dumps(record) + "\n")
                    fh.flush()
                    bar.update(1)
    report(args)


def report(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    records = read_jsonl(out / "results.jsonl")
    table = {}
    for arm in ("plain", "guided"):
        recs = [r for r in records if r["arm"] == arm]
        n = len(recs)
        e = [r["e_hull"] for r in recs if "e_hull" in r]
        meta = sum(v < 0.1 for v in e)
        stable = sum(v < 0 for v in e)
        cpu = sum(r["generate_cpu_s"] + r["relax_cpu_s"] for r in recs)
        table[arm] = {
            "crystals": n,
            "relaxed": len(e),
            "metastable": meta,
            "metastable_rate": round(meta / n, 4) if n else None,
            "metastable_ci95": wilson(meta, n),
            "stable": stable,
            "stable_rate": round(stable / n, 4) if n else None,
            "stable_ci95": wilson(stable, n),
            "median_e_hull": round(float(np.median(e)), 4) if e else None,
            "cpu_s_per_crystal_generate": round(float(np.mean([r["generate_cpu_s"] for r in recs])), 3) if n else None,
            "cpu_s_per_crystal_relax": round(float(np.mean([r["relax_cpu_s"] for r in recs])), 3) if n else None,
            "cpu_minutes": round(cpu / 60, 2),
            "metastable_per_cpu_minute": round(meta / (cpu / 60), 3) if cpu else None,
        }
    (out / "report.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48, help="crystals per arm (rounded up to chunks of 8)")
    parser.add_argument("--k", type=int, default=4, help="guided: samples scored per crystal")
    parser.add_argument("--model", default="default")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/guided_sampling")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
