"""Where compositional validity is lost (issue 14, 2026-12-06): SMACT failures of a model's samples by element,
against the same rates in MP-20 train.csv (the data it learnt from; test.csv is not read).

    python archive/bench/comp_failures.py --model wyckoff --n 4000

Samples unconditionally with generate's defaults for the model (tau 0.7, top-p 0.9, grammar on, invalid
samples kept, seed 7) and prints, per element, how often it appears and how often a composition with it fails,
in the samples and in the data, and the overall failure rate with and without each element's excess.
"""

from __future__ import annotations

import argparse
import collections

from ase_llmgen.checks.validity import compositionally_valid
from ase_llmgen.data.readers import read_records
from ase_llmgen.models.bundle import load_model
from ase_llmgen.sampling.sampler import Sampler
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.training.config import resolve_data_path


def tally(compositions: list[dict]) -> tuple[collections.Counter, collections.Counter, int]:
    seen, failed, n_failed = collections.Counter(), collections.Counter(), 0
    for comp in compositions:
        ok = compositionally_valid(comp)
        n_failed += not ok
        for el in comp:
            seen[el] += 1
            failed[el] += not ok
    return seen, failed, n_failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wyckoff")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--data", default="mp_20/train.csv")
    args = ap.parse_args()
    records, _ = read_records(resolve_data_path(args.data))
    data = [collections.Counter(r.atoms.get_chemical_symbols()) for r in records]
    settings = SampleSettings(require_valid=False, batch_size=100)
    samples, _ = Sampler(load_model(args.model), settings, seed=7).sample(args.n, progress=True)
    model = [collections.Counter(a.get_chemical_symbols()) for a in samples]
    d_seen, d_failed, d_n = tally(data)
    m_seen, m_failed, m_n = tally(model)
    print(f"failure rate: samples {m_n / len(model):.3f} ({m_n}/{len(model)}), data {d_n / len(data):.3f}")
    print("| element | in samples | failing with it (samples) | in data | failing with it (data) | excess failures |")
    print("|---|---|---|---|---|---|")
    rows = []
    for el in m_seen:
        share_m, rate_m = m_seen[el] / len(model), m_failed[el] / m_seen[el]
        share_d = d_seen[el] / len(data)
        rate_d = d_failed[el] / d_seen[el] if d_seen[el] else float("nan")
        # failures beyond what the data's own rate for this element would give, per sample
        excess = (m_failed[el] - m_seen[el] * (rate_d if d_seen[el] else 0.0)) / len(model)
        rows.append((excess, el, share_m, rate_m, share_d, rate_d))
    for excess, el, share_m, rate_m, share_d, rate_d in sorted(rows, reverse=True)[:20]:
        print(f"| {el} | {share_m:.3f} | {rate_m:.2f} | {share_d:.3f} | {rate_d:.2f} | {excess:+.4f} |")


if __name__ == "__main__":
    main()
