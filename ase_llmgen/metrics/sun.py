"""S.U.N.: the share of samples that are stable, unique and novel, with every denominator shown.

* stable: E_hull <= 0 eV/atom, metastable: E_hull <= 0.1 eV/atom, from the ``e_above_hull`` keys
  ``ase-llmgen relax`` writes (:mod:`ase_llmgen.relax.runner`); the potential, its settings and
  the hull are read from the same rows and reported;
* unique: not matched (pymatgen ``StructureMatcher``) to an earlier valid sample;
* novel: not within the CDVAE novelty cutoffs of any training crystal (MP-20 train + val by
  default, the paper's protocol).

Only valid samples with fingerprints can be unique or novel. Relaxation is often done on a
seeded random subset of the valid samples: rates are given over the relaxed crystals and, scaled
by the share of samples that were candidates, as an estimate over all samples (exact when every
candidate was relaxed).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

STABLE = 0.0  # eV/atom
METASTABLE = 0.1  # eV/atom
P1_SYMPREC = 0.1  # A


def stored_e_hull(kvp: dict) -> float | None:
    """E_hull of a relaxed row (``e_above_hull``; ``e_hull_chgnet`` in databases written before 0.2)."""
    if not kvp.get("relaxed"):
        return None
    value = kvp.get("e_above_hull", kvp.get("e_hull_chgnet"))
    return float(value) if value is not None and math.isfinite(float(value)) else None


def relaxation_provenance(kvps: Iterable[dict]) -> dict:
    """Which potential(s), settings, hull and subset the relaxed rows came from."""
    kvps = [k for k in kvps if "relaxed" in k]
    potentials = Counter(f"{k.get('potential', 'chgnet')} {k.get('potential_settings', '{}')}" for k in kvps)
    hulls = Counter(str(k.get("hull", "mp20")) for k in kvps)
    pools = {int(k["relax_pool"]) for k in kvps if "relax_pool" in k}
    selected = {int(k["relax_selected"]) for k in kvps if "relax_selected" in k}
    seeds = {int(k["relax_seed"]) for k in kvps if "relax_seed" in k}
    fmax = {float(k["relax_fmax"]) for k in kvps if "relax_fmax" in k}
    steps = {int(k["relax_max_steps"]) for k in kvps if "relax_max_steps" in k}
    return {
        "n_rows": len(kvps),
        "n_failed": sum(stored_e_hull(k) is None for k in kvps),  # no E_hull: the potential or the energy failed
        "potentials": dict(potentials),
        "hulls": dict(hulls),
        "candidates": max(pools) if pools else None,
        "selected": max(selected) if selected else None,
        "seeds": sorted(seeds),
        "fmax": sorted(fmax),
        "max_steps": sorted(steps),
    }


def is_p1(atoms: Any, symprec: float = P1_SYMPREC) -> bool:
    """Whether spglib (``symprec`` A) finds no symmetry beyond P1 (undetermined counts as P1)."""
    from ase_llmgen.checks.symmetry import detect_spacegroup

    found = detect_spacegroup(atoms, symprec=symprec)
    return found is None or found.number == 1


def sun_summary(
    rows: list[tuple[int, dict]],
    flags: dict[int, dict],
    n_samples: int,
    has_unique: bool = True,
    has_novel: bool = True,
) -> dict:
    """Counts and rates of stable / metastable / unique / novel / S.U.N. / M.S.U.N. samples, and P1 shares.

    ``rows``: ``(id, key-value pairs)`` of the samples database; ``flags``: this evaluation's
    ``{"unique", "novel", "p1"}`` by row id (valid samples with fingerprints only).
    ``has_unique``/``has_novel``: whether those were measured (no training set: no novelty);
    counts that need one that was not are ``None``.
    """
    relaxed = [(i, stored_e_hull(kvp)) for i, kvp in rows]
    relaxed = [(i, e) for i, e in relaxed if e is not None]
    n_relaxed = len(relaxed)
    provenance = relaxation_provenance(kvp for _, kvp in rows)
    pool = provenance["candidates"] or n_relaxed
    scale = pool / n_samples if n_samples else float("nan")

    def count(pred) -> int:
        return sum(1 for i, e in relaxed if pred(i, e))

    def flag(i: int, key: str) -> bool:
        return bool(flags.get(i, {}).get(key, False))

    both = has_unique and has_novel
    counts = {
        "stable": count(lambda i, e: e <= STABLE),
        "metastable": count(lambda i, e: e <= METASTABLE),
        "unique": count(lambda i, e: flag(i, "unique")) if has_unique else None,
        "novel": count(lambda i, e: flag(i, "novel")) if has_novel else None,
        "sun": count(lambda i, e: e <= STABLE and flag(i, "unique") and flag(i, "novel")) if both else None,
        "msun": count(lambda i, e: e <= METASTABLE and flag(i, "unique") and flag(i, "novel")) if both else None,
    }
    out: dict = {
        "n_samples": n_samples,
        "n_relaxed": n_relaxed,
        "n_candidates": pool,
        "counts": counts,
        "rates_relaxed": {k: (v / n_relaxed if n_relaxed and v is not None else None) for k, v in counts.items()},
        # A random subset of the candidates stands for all of them; non-candidates (invalid) are never S.U.N.
        "rates_all_samples": {
            k: (v / n_relaxed * scale if n_relaxed and v is not None else None) for k, v in counts.items()
        },
        "exact": bool(n_relaxed and n_relaxed >= pool),
        "thresholds": {"stable": STABLE, "metastable": METASTABLE, "unit": "eV/atom"},
        "relaxation": provenance,
    }
    sun_ids = [i for i, e in relaxed if both and e <= STABLE and flag(i, "unique") and flag(i, "novel")]
    out["p1"] = {
        "symprec": P1_SYMPREC,
        "n_valid": len(flags),
        "valid": float(np.mean([f.get("p1", False) for f in flags.values()])) if flags else None,
        "n_sun": len(sun_ids) if both else None,
        "sun": float(np.mean([flag(i, "p1") for i in sun_ids])) if sun_ids else None,
    }
    return out


def write_flags(path: str | Path, pairs_by_id: dict[int, dict]) -> int:
    """Write per-sample results (``unique``, ``novel``) onto the rows of an ASE database, in one transaction."""
    from ase.db import connect

    db = connect(path, use_lock_file=False)
    with db:
        for row_id, pairs in pairs_by_id.items():
            db.update(int(row_id), **pairs)
    return len(pairs_by_id)


def sun_markdown(s: dict, run: str | None = None) -> list[str]:
    """The S.U.N. section of the report (``run`` names it when a report has several)."""
    rel = s["relaxation"]
    n, r = s["n_samples"], s["n_relaxed"]
    selected, pool = rel.get("selected") or r, s["n_candidates"]
    if s["exact"]:
        subset = f"all {pool} valid candidates"
    elif selected < pool:
        subset = f"a random subset of {r} of the {pool} valid candidates (seed {_join(rel['seeds'])})"
    else:  # every candidate selected, the run not finished: rows go in database order, i.e. as generated
        subset = f"{r} of the {pool} valid candidates so far (a run over all of them, unfinished, in row order)"
    if r < selected < pool:
        subset += f"; {selected - r} of the subset not yet relaxed"
    potentials = "; ".join(f"{k.replace(' {}', ' (default settings)')}, {v} rows" for k, v in rel["potentials"].items())
    lines = [
        "## S.U.N. (stable, unique, novel)" + (f" of {run}" if run else ""),
        "",
        f"Relaxed: {subset}, of {n} samples; potential: {potentials}; fmax {_join(rel['fmax'])} eV/Å, "
        f"at most {_join(rel['max_steps'])} steps; {rel['n_failed']} relaxations gave no E_hull; hull: "
        f"{', '.join(rel['hulls'])}. Stable: E_hull <= {s['thresholds']['stable']} eV/atom; metastable: "
        f"<= {s['thresholds']['metastable']} eV/atom; unique: StructureMatcher among the valid samples; "
        "novel: CDVAE novelty cutoffs against the training set.",
        "",
        f"| | count | of relaxed ({r}) | of all samples ({n}){'' if s['exact'] else ', estimated'} |",
        "|---|---|---|---|",
    ]
    names = {
        "stable": "stable",
        "metastable": "metastable",
        "unique": "unique",
        "novel": "novel",
        "sun": "**S.U.N.**",
        "msun": "**M.S.U.N.** (metastable)",
    }
    for key, name in names.items():
        a, b = s["rates_relaxed"][key], s["rates_all_samples"][key]
        c = s["counts"][key]
        lines.append(f"| {name} | {'n/a' if c is None else c} | {_pct(a)} | {_pct(b)} |")
    p = s.get("p1")
    if p:
        lines += [
            "",
            f"P1 share (spglib, symprec {p['symprec']} Å): {_pct(p['valid'])} of the {p['n_valid']} valid samples, "
            f"{_pct(p['sun'])} of the {p['n_sun'] if p['n_sun'] is not None else 'n/a'} S.U.N. ones.",
        ]
    return lines


def _join(values: list) -> str:
    return ", ".join(map(str, values)) or "?"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"
