"""The wyckoff codec against the paper's: characters per crystal, round trips, and random legal texts per group.

Usage: python bench/codec_wyckoff.py [--val ../shared/data/mp_20/val.csv] [--n 500] [--texts 50] [--seed 0]

* characters per crystal (the texts as the codecs write them, no prompt) for the structures shipped in
  tests/data and a seeded sample of ``--n`` structures of ``--val`` (when it exists);
* round trip: decode(encode(s)) matches s (pymatgen ``StructureMatcher``, default tolerances) and keeps
  spglib's space group at symprec 0.1;
* for the 20 most common space groups of the sample (or of MP-20 when there is none): ``--texts`` random
  legal texts drawn through the grammar (a uniformly random allowed character at each step, coordinates
  as whole tokens), decoded, and how many have spglib's space group = the requested one at symprec 0.1
  (and, of the structurally valid ones, how many have a supergroup -- higher symmetry, e.g. from coordinates
  on special values -- or neither); once character by character, once with a plausible lattice line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ase_llmgen.data.readers import read_records
from ase_llmgen.text import paper, wyckoff

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MP20_TOP20 = (225, 12, 139, 194, 62, 166, 63, 221, 123, 2, 14, 129, 216, 15, 1, 189, 164, 71, 191, 8)  # MP-20 test.csv


def round_trip(records) -> dict:
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = _matcher()
    chars_w, chars_p, ok_match, ok_group, failures = [], [], 0, 0, Counter()
    for record in records:
        atoms = record.atoms
        try:
            text = wyckoff.encode(atoms)
            back = wyckoff.decode(text)
        except Exception as exc:  # counted, not hidden
            failures[type(exc).__name__] += 1
            continue
        chars_w.append(len(text))
        chars_p.append(len(paper.encode(atoms)))
        a, b = AseAtomsAdaptor.get_structure(atoms), AseAtomsAdaptor.get_structure(back)
        ok_match += bool(matcher.fit(a, b))
        ok_group += wyckoff.spacegroup_number(atoms) == wyckoff.spacegroup_number(back)
    n = len(records)
    return {
        "structures": n,
        "encode_or_decode_failed": dict(failures),
        "chars_per_crystal_wyckoff": float(np.mean(chars_w)),
        "chars_per_crystal_paper": float(np.mean(chars_p)),
        "ratio": float(np.mean(chars_w) / np.mean(chars_p)),
        "roundtrip_structure_matcher": ok_match / n,
        "roundtrip_spacegroup_kept": ok_group / n,
    }


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher()


def grammar_success(groups, n_texts: int, seed: int, plausible: bool, max_atoms: int = 20) -> dict:
    """Per group: of ``n_texts`` random legal texts, the share whose decoded crystal has spglib's group = the
    requested one; of the structurally valid ones (what the sampler keeps), the shares with that group,
    with a supergroup (every operation of the requested group found, and more) and with neither."""
    from ase_llmgen.checks.validity import structurally_valid

    elements = ("O", "Na", "Mg", "Si", "Ti", "Fe", "Cu", "Sr")
    out = {}
    for number in groups:
        grammar = wyckoff.WyckoffGrammar(elements, max_atoms=max_atoms, spacegroup=number)
        rng = np.random.default_rng([seed, number])
        same = valid = valid_same = valid_super = 0
        for _ in range(n_texts):
            atoms = wyckoff.decode(wyckoff.random_text(grammar, rng, elements, plausible))
            found = wyckoff.spacegroup_number(atoms)
            same += found == number
            if structurally_valid(atoms):
                valid += 1
                valid_same += found == number
                valid_super += found != number and wyckoff.has_symmetry_of(atoms, number)
        out[number] = {
            "same": same / n_texts,
            "valid": valid / n_texts,
            "valid_same": valid_same / max(valid, 1),
            "valid_supergroup": valid_super / max(valid, 1),
            "valid_other": (valid - valid_same - valid_super) / max(valid, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--val", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mp_20" / "val.csv")
    )
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--texts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    result: dict = {"tests/data": {}}
    for path in sorted(DATA.glob("*.csv")):
        records, _ = read_records(path, on_error="skip")
        result["tests/data"][path.name] = round_trip(records)
    groups = MP20_TOP20
    if Path(args.val).exists():
        import csv
        import types

        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor

        with open(args.val, newline="") as f:
            rows = list(csv.DictReader(f))
        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(len(rows), size=min(args.n, len(rows)), replace=False)
        sample = [
            types.SimpleNamespace(atoms=AseAtomsAdaptor.get_atoms(Structure.from_str(rows[i]["cif"], fmt="cif")))
            for i in chosen
        ]
        result[f"{args.val} ({len(sample)} seeded, seed {args.seed})"] = round_trip(sample)
        counts = Counter(int(row["spacegroup.number"]) for row in rows)
        result["top20_val_spacegroups"] = [g for g, _ in counts.most_common(20)]
    result["grammar_random_texts_uniform"] = grammar_success(groups, args.texts, args.seed, plausible=False)
    result["grammar_random_texts_plausible_lattice"] = grammar_success(groups, args.texts, args.seed, plausible=True)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
