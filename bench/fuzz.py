"""Fuzz every parser of text that model output or users feed in, with a time limit per input.

    python bench/fuzz.py -n 100000 --seed 0 --time-limit 10 --json fuzz.json

Inputs, deterministic per (seed, index): half are mutations of real crystal texts (the
crystals of tests/data as paper strings, CIFs in P1 and symmetrised, prompts, formulas,
wyckoff texts; ``ase_llmgen.fuzz.mutate``), a quarter random text (printable, unicode, control
characters), a quarter random sequences of crystal-text pieces and nasty numbers (for the
wyckoff parsers: texts in the wyckoff layout with absurd fields, ``ase_llmgen.fuzz.random_wyckoff``).
Each goes to one parser of ``ase_llmgen.fuzz.PARSERS`` in turn.  A defect is any exception other
than the parser's documented error, any accepted crystal with a non-finite or zero-volume cell or
non-finite positions, or an input that runs past the time limit (the worker is then killed and
restarted).  Prints a JSON report; exit status 1 when there is a defect.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _seeds() -> dict:
    from ase_llmgen.data.readers import read_records
    from ase_llmgen.fuzz import seed_texts

    structures = []
    for name in ("mp20_val_sample.csv", "perov_5_val_sample.csv", "carbon_24_val_sample.csv"):
        structures += [r.atoms for r in read_records(DATA / name)[0]]
    return seed_texts(structures)


def make_input(seed: int, index: int, seeds: dict, names: list[str]) -> tuple[str, str, str]:
    """``(parser, kind, text)`` of input ``index``: the same for the same seed, whatever ran before."""
    from ase_llmgen.fuzz import NASTY_PIECES, PARSERS, WYCKOFF_LAYOUTS, mutate, random_wyckoff

    rng = random.Random(f"{seed}:{index}")
    name = names[index % len(names)]
    roll = rng.random()
    if roll < 0.5:
        kind, text = "mutation", mutate(rng.choice(seeds[PARSERS[name].seeds]), rng)
    elif roll < 0.75:
        kind = "random"
        alphabet = rng.choice(
            [
                "".join(chr(c) for c in range(32, 127)) + "\n\t",
                "0123456789. \n-e",
                "".join(chr(rng.randrange(0, 0x3000)) for _ in range(64)),
            ]
        )
        text = "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 5, 40, 200, 2000))))
    elif PARSERS[name].seeds in WYCKOFF_LAYOUTS:
        kind, text = "pieces", random_wyckoff(rng, *WYCKOFF_LAYOUTS[PARSERS[name].seeds])
    else:
        kind = "pieces"
        pieces = list("0123456789. \n-") + ["Si", "O", "Na", "X", "90", "0.50", "loop_", "data_x"] + list(NASTY_PIECES)
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    return name, kind, text


def _worker(seed: int, start: int, stop: int, names: list[str], out) -> None:
    import warnings

    from ase_llmgen.fuzz import defect

    warnings.simplefilter("ignore")  # pymatgen and ASE warn about junk: the return value is what counts
    seeds = _seeds()
    out.send(("ready", None))
    for index in range(start, stop):
        name, kind, text = make_input(seed, index, seeds, names)
        out.send(("start", index))
        began = time.perf_counter()
        problem = defect(name, text)
        out.send(("done", (index, name, kind, problem, time.perf_counter() - began, len(text))))
    out.send(("end", None))


def _lost(defects: list, counts: Counter, seed: int, index: int, names: list[str], **why) -> None:
    """Record input ``index`` as a defect whose worker never answered (``hang=...`` or ``crash=...``)."""
    name, kind, text = make_input(seed, index, _SEEDS, names)
    counts[name] += 1
    defects.append({"index": index, "parser": name, "kind": kind, **why, "input": text[:500], "length": len(text)})


def run(n: int, seed: int, time_limit: float, names: list[str]) -> dict:
    counts: Counter = Counter()
    defects: list[dict] = []
    slowest: list[tuple[float, str, str, int]] = []
    began = time.time()
    index = 0
    while index < n:
        receive, send = mp.Pipe(duplex=False)
        worker = mp.Process(target=_worker, args=(seed, index, n, names, send), daemon=True)
        worker.start()
        send.close()
        if not receive.poll(300):
            raise RuntimeError("the fuzz worker did not start")
        receive.recv()
        current = None
        while True:
            if not receive.poll(time_limit):
                if current is None:
                    raise RuntimeError("the fuzz worker stalled between inputs")
                _lost(defects, counts, seed, current, names, hang=f"> {time_limit} s")
                worker.kill()
                worker.join()
                index = current + 1
                break
            try:
                tag, value = receive.recv()
            except EOFError:  # the worker died (a crash of the interpreter is a defect too)
                _lost(defects, counts, seed, current, names, crash=worker.exitcode)
                worker.join()
                index = current + 1
                break
            if tag == "start":
                current = value
            elif tag == "done":
                i, name, kind, problem, seconds, length = value
                counts[name] += 1
                current = None
                slowest.append((seconds, name, kind, length))
                if len(slowest) > 200:
                    slowest = sorted(slowest, reverse=True)[:10]
                if problem:
                    text = make_input(seed, i, _SEEDS, names)[2]
                    defects.append(
                        {
                            "index": i,
                            "parser": name,
                            "kind": kind,
                            "defect": problem,
                            "input": text[:500],
                            "length": length,
                        }
                    )
                if (i + 1) % 10000 == 0:
                    print(
                        f"{i + 1} inputs, {len(defects)} defects, {time.time() - began:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            elif tag == "end":
                worker.join()
                index = n
                break
    slowest = sorted(slowest, reverse=True)[:10]
    return {
        "inputs": sum(counts.values()),
        "per_parser": dict(counts),
        "defects": len(defects),
        "defect_list": defects[:50],
        "seed": seed,
        "time_limit_s": time_limit,
        "wall_s": round(time.time() - began, 1),
        "slowest": [{"seconds": round(s, 3), "parser": p, "kind": k, "length": length} for s, p, k, length in slowest],
    }


_SEEDS: dict = {}


def main() -> int:
    from ase_llmgen.fuzz import PARSERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="inputs in all (default: 100000)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per input (default: 10)")
    parser.add_argument("--parsers", default=",".join(PARSERS), help="comma-separated (default: all)")
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args()
    names = args.parsers.split(",")
    unknown = set(names) - set(PARSERS)
    if unknown:
        parser.error(f"unknown parsers {sorted(unknown)}; known: {', '.join(PARSERS)}")
    _SEEDS.update(_seeds())
    report = run(args.n, args.seed, args.time_limit, names)
    report["command"] = " ".join(["python", "bench/fuzz.py", *sys.argv[1:]])
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if report["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
