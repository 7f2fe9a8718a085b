"""Evaluate generated crystals: the paper's Table 1 (CDVAE metrics), conditioning success, report, plots.

Samples may come from any ASE database, a folder of CIFs, a CSV with a ``cif``
column, or any file ASE reads, so other generators' outputs are scored the same
way. Rules (after CDVAE's ``compute_metrics.py`` and the paper's ``basic_eval.py``):

* validity fractions are over all readable samples (unreadable ones are dropped
  and counted, as the paper's code does); compositional validity uses SMACT with
  the ``oxidation_states_smact14`` set (:mod:`ase_llmgen.checks.validity`).
* fingerprints are computed for valid samples only; a sample whose CrystalNN
  fingerprint fails or times out counts as invalid for the distribution metrics
  (CDVAE), but not in the struct./comp. validity fractions.
* coverage, wdist, diversity, novelty and uniqueness use the valid samples with
  fingerprints; coverage precision is a fraction of them (the paper's code).
* reference (test) and training crystals: all with fingerprints, as CDVAE does
  (the paper's code kept only the valid ones: ``valid_reference_only=True``);
  wdist compares with the densities / element counts of *all* reference crystals.
* cell sizes (not in the paper): sites per cell of *all* samples against the reference,
  and structural validity re-weighted to the reference's mix of cell sizes
  (:func:`cell_sizes`), since small cells are valid far more often than large ones.
* composition fingerprints are standardised with the shipped MP-20 scaler
  (:mod:`.fingerprints`), or with one fit on the reference (``comp_scaler="reference"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_llmgen.metrics import distribution as dist
from ase_llmgen.metrics.fingerprints import (
    COMPOSITION_FP_SIZE,
    STRUCTURE_FP_SIZE,
    SYMPREC,
    composition_fingerprint,
    fit_comp_scaler,
    mp20_comp_scaler,
    parallel_map,
    scale_composition,
    structure_fingerprint,
)
from ase_llmgen.metrics.sun import is_p1, stored_e_hull, write_flags

OXIDATION_STATES = "smact oxidation_states_smact14"
SHIPPED = "mp20"  # reference/train: the MP-20 sets shipped in the package (metrics/reference.py)
CACHE_VERSION = 1

# Literature constants: Gruver et al., ICLR 2024, Table 1 (MP-20, 10,000 samples), as in REFERENCE.md §5.
# None = not reported. Metastable: M3GNet E_hull < 0.1 eV/atom; stable: DFT E_hull < 0.
PAPER_TABLE1: list[dict] = [
    {
        "method": "CDVAE",
        "struct_valid": 1.00,
        "comp_valid": 0.867,
        "recall": 0.991,
        "precision": 0.995,
        "wdist_density": 0.688,
        "wdist_n_elements": 1.43,
        "metastable": 0.288,
        "stable": 0.054,
    },
    {
        "method": "LM-CH (char LM from scratch)",
        "struct_valid": 0.848,
        "comp_valid": 0.835,
        "recall": 0.9925,
        "precision": 0.9789,
        "wdist_density": 0.864,
        "wdist_n_elements": 0.13,
        "metastable": None,
        "stable": None,
    },
    {
        "method": "LM-AC",
        "struct_valid": 0.958,
        "comp_valid": 0.889,
        "recall": 0.996,
        "precision": 0.9855,
        "wdist_density": 0.696,
        "wdist_n_elements": 0.09,
        "metastable": None,
        "stable": None,
    },
    {
        "method": "LLaMA-2 7B, tau 0.7",
        "struct_valid": 0.964,
        "comp_valid": 0.933,
        "recall": 0.911,
        "precision": 0.949,
        "wdist_density": 3.61,
        "wdist_n_elements": 1.06,
        "metastable": 0.350,
        "stable": 0.062,
    },
    {
        "method": "LLaMA-2 13B, tau 0.7",
        "struct_valid": 0.955,
        "comp_valid": 0.924,
        "recall": 0.889,
        "precision": 0.979,
        "wdist_density": 2.13,
        "wdist_n_elements": 0.10,
        "metastable": 0.380,
        "stable": 0.144,
    },
    {
        "method": "LLaMA-2 70B, tau 0.7",
        "struct_valid": 0.996,
        "comp_valid": 0.954,
        "recall": 0.858,
        "precision": 0.989,
        "wdist_density": 0.81,
        "wdist_n_elements": 0.44,
        "metastable": 0.498,
        "stable": 0.106,
    },
]


# --- reading ------------------------------------------------------------------------------------


def load_samples(path: str | Path, on_error: str = "skip") -> tuple[list[Atoms], list[str]]:
    """Crystals from an ASE db, a folder of CIFs, a CSV with a ``cif`` column, or any ASE-readable file.

    Returns ``(atoms_list, skipped)``; ``skipped`` names each unreadable entry
    (``on_error="raise"`` raises on the first one instead).
    """
    from ase_llmgen.data.readers import read_records

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".cif")
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .cif files")
        atoms: list[Atoms] = []
        skipped: list[str] = []
        for file in files:
            try:
                records, bad = read_records(file, on_error=on_error)
            except Exception as exc:  # one broken CIF must not lose the folder
                if on_error == "raise":
                    raise
                skipped.append(str(exc))
                continue
            if not records and not bad:  # ASE reads some broken CIFs as "no images"
                if on_error == "raise":
                    raise ValueError(f"{file}: no crystal in it")
                bad = [f"{file}: no crystal in it"]
            atoms.extend(r.atoms for r in records)
            skipped.extend(bad)
        return atoms, skipped
    records, skipped = read_records(path, on_error=on_error)
    return [r.atoms for r in records], skipped


def _as_atoms_list(source: str | Path | Sequence[Any]) -> tuple[list[Any], list[str], str]:
    if isinstance(source, (str, Path)):
        atoms, skipped = load_samples(source)
        return atoms, skipped, str(source)
    return list(source), [], f"{len(source)} structures in memory"


# --- per-crystal description (runs in worker processes) -----------------------------------------


def describe(
    obj: Any, fingerprint: str = "valid", time_limit: float | None = 60.0, symprec: float | None = SYMPREC
) -> dict:
    """Validity, density, element count and (per ``fingerprint``: "valid", "all", "none") fingerprints."""
    from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
    from ase_llmgen.convert import to_structure

    out: dict = {
        "struct_valid": False,
        "comp_valid": False,
        "density": math.nan,
        "n_elements": 0,
        "n_sites": 0,
        "struct_fp": None,
        "comp_fp": None,
    }
    try:
        out["n_sites"] = len(obj)
        structure = to_structure(obj)
        out["n_elements"] = len(structure.composition.elements)
        out["density"] = float(structure.density) if structure.volume > 0 else math.nan
        out["struct_valid"] = bool(structurally_valid(structure))
        out["comp_valid"] = bool(
            compositionally_valid({el.symbol: int(round(n)) for el, n in structure.composition.items()})
        )
    except Exception:  # an unbuildable crystal is simply invalid
        return out
    if fingerprint == "all" or (fingerprint == "valid" and out["struct_valid"] and out["comp_valid"]):
        out["struct_fp"] = structure_fingerprint(structure, time_limit, symprec)
        out["comp_fp"] = composition_fingerprint(structure.composition)
    return out


def _stack(descs: list[dict]) -> dict:
    """Per-crystal dicts -> arrays (NaN rows where a fingerprint is missing)."""
    n = len(descs)
    struct = np.full((n, STRUCTURE_FP_SIZE), np.nan)
    comp = np.full((n, COMPOSITION_FP_SIZE), np.nan)
    struct_ok = np.zeros(n, bool)
    comp_ok = np.zeros(n, bool)
    for i, d in enumerate(descs):
        if d["struct_fp"] is not None:
            struct[i], struct_ok[i] = d["struct_fp"], True
        if d["comp_fp"] is not None:
            comp[i], comp_ok[i] = d["comp_fp"], True
    return {
        "struct_fp": struct,
        "comp_fp": comp,
        "struct_ok": struct_ok,
        "comp_ok": comp_ok,
        "struct_valid": np.array([d["struct_valid"] for d in descs], bool),
        "comp_valid": np.array([d["comp_valid"] for d in descs], bool),
        "density": np.array([d["density"] for d in descs], float),
        "n_elements": np.array([d["n_elements"] for d in descs], int),
        "n_sites": np.array([d["n_sites"] for d in descs], int),
    }


def cache_dir() -> Path:
    """Where reference fingerprints are cached: ``$ASE_LLMGEN_CACHE`` or ``~/.cache/ase_llmgen``."""
    return Path(os.environ.get("ASE_LLMGEN_CACHE", Path.home() / ".cache" / "ase_llmgen")) / "fingerprints"


def _cache_key(path: Path, max_n: int | None, seed: int, symprec: float | None) -> str:
    from importlib.metadata import version

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    tag = f"{max_n}-{seed}-{symprec}-v{CACHE_VERSION}-matminer{version('matminer')}-pymatgen{version('pymatgen')}"
    return f"{path.stem}-{digest.hexdigest()[:16]}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"


def reference_features(
    source: str | Path | Sequence[Any],
    max_n: int | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: bool = True,
    cache: bool = True,
    time_limit: float | None = 60.0,
    symprec: float | None = SYMPREC,
) -> dict:
    """Fingerprints, validity, density and element counts of reference (test or training) crystals.

    ``max_n`` keeps a seeded random subset. For a file, the result is cached as
    ``.npz`` (keyed by the file's hash, ``max_n``, ``seed`` and library versions),
    since fingerprinting 9,000 MP-20 crystals takes minutes.
    """
    cache_file = None
    if cache and isinstance(source, (str, Path)) and Path(source).is_file():
        cache_file = cache_dir() / f"{_cache_key(Path(source), max_n, seed, symprec)}.npz"
        if cache_file.exists():
            with np.load(cache_file, allow_pickle=False) as data:
                out = {k: data[k] for k in data.files}
            if "n_sites" not in out:  # caches written before cell sizes were measured: add them, cheaply
                items = _subset(_as_atoms_list(source)[0], max_n, seed)
                out["n_sites"] = np.array([len(item) for item in items], int)
                _save_cache(cache_file, out)
            out["cached"] = True
            return out
    items, skipped, name = _as_atoms_list(source)
    if not items:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise ValueError(f"{name}: no readable crystals ({len(skipped)} rows unreadable{first})")
    items = _subset(items, max_n, seed)
    descs = parallel_map(
        partial(describe, fingerprint="all", time_limit=time_limit, symprec=symprec),
        items,
        n_jobs,
        progress,
        desc="reference fingerprints",
    )
    out = _stack(descs)
    out["n_unreadable"] = np.array(len(skipped))
    if cache_file is not None:
        _save_cache(cache_file, out)
    out["cached"] = False
    return out


def _subset(items: list, max_n: int | None, seed: int) -> list:
    if max_n is not None and max_n < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=max_n, replace=False))
        items = [items[i] for i in keep]
    return items


def _save_cache(cache_file: Path, out: dict) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: v for k, v in out.items() if k != "cached"})
    tmp.replace(cache_file)  # atomic: a half-written cache is never read


SITE_BINS = ((1, 4), (5, 8), (9, 12), (13, 16), (17, 20), (21, 10**6))


def cell_sizes(sample_sites: np.ndarray, sample_valid: np.ndarray, reference_sites: np.ndarray) -> dict:
    """Sites per cell of all samples against the reference, and validity at the reference's mix of sizes.

    Validity depends strongly on cell size (small cells are easy), and a model can look more valid by
    writing smaller cells than the data has. ``valid_at_reference_mix`` weights the samples' structural
    validity within each size bin by the reference's share of that bin; bins where the reference has
    crystals but the samples have none are left out of it and their share is reported.
    """
    bins, mixed, weight, unsampled = [], 0.0, 0.0, 0.0
    for lo, hi in SITE_BINS:
        in_ref = float(np.mean((reference_sites >= lo) & (reference_sites <= hi)))
        sel = (sample_sites >= lo) & (sample_sites <= hi)
        if not in_ref and not sel.any():
            continue
        valid = float(sample_valid[sel].mean()) if sel.any() else None
        bins.append({"sites": [lo, hi], "reference_share": in_ref, "share": float(sel.mean()), "struct_valid": valid})
        if valid is None:
            unsampled += in_ref
        else:
            mixed, weight = mixed + in_ref * valid, weight + in_ref
    return {
        "mean_sites": float(sample_sites.mean()),
        "reference_mean_sites": float(reference_sites.mean()),
        "wdist_n_sites": dist.wdist(sample_sites, reference_sites),
        "valid_at_reference_mix": mixed / weight if weight else None,
        "reference_share_not_sampled": unsampled,
        "bins": bins,
    }


# --- evaluation ---------------------------------------------------------------------------------


def _fp_rows(features: dict, valid_only: bool) -> np.ndarray:
    mask = features["struct_ok"] & features["comp_ok"]
    if valid_only:
        mask &= features["struct_valid"] & features["comp_valid"]
    return mask


def _db_sample_ids(path: Path) -> list[int]:
    """Row ids of the samples ``load_samples`` reads from a database, in its order (crystal rows only)."""
    from ase.db import connect

    ids = []
    for row in connect(path, use_lock_file=False).select():
        atoms = row.toatoms()
        if len(atoms) and atoms.pbc.all():  # the rows iter_ase_db turns into samples
            ids.append(row.id)
    return ids


def _db_extras(
    path: Path,
    flags: dict[int, dict] | None = None,
    n_samples: int = 0,
    has_unique: bool = True,
    has_novel: bool = True,
) -> dict:
    """Conditioning success, stored relaxation results and S.U.N. of an ASE database written by our tools."""
    from ase.db import connect

    from ase_llmgen.metrics.stability import summarize
    from ase_llmgen.metrics.sun import relaxation_provenance, stored_e_hull, sun_summary

    out: dict = {}
    rows = list(connect(path, use_lock_file=False).select())
    if any(k.startswith("req_") for row in rows for k in row.key_value_pairs):
        out["conditioning"] = conditioning_success(rows)
    relaxed = [row.key_value_pairs for row in rows if "relaxed" in row.key_value_pairs]
    if relaxed:
        out["stability"] = summarize([stored_e_hull(kvp) for kvp in relaxed], n_total=len(relaxed))
        out["stability"]["source"] = "e_above_hull keys written by 'ase-llmgen relax' into the samples database"
        out["stability"]["relaxation"] = relaxation_provenance(relaxed)
        if flags is not None:
            out["sun"] = sun_summary(
                [(row.id, row.key_value_pairs) for row in rows], flags, n_samples, has_unique, has_novel
            )
    temperatures = sorted({row.key_value_pairs["temperature"] for row in rows if "temperature" in row.key_value_pairs})
    if temperatures:
        out["temperatures"] = temperatures
    return out


def _default_label(db_path: Path | None, samples: Any) -> str:
    """A run's name from its database's provenance keys (model, temperature), else the file's name."""
    if db_path is not None:
        from ase.db import connect

        seen = set()
        for row in connect(db_path, use_lock_file=False).select():
            kvp = row.key_value_pairs
            if "model" in kvp:
                seen.add((str(kvp["model"]), kvp.get("temperature")))
        if seen:
            return "; ".join(f"{m}, tau {t}" if t is not None else m for m, t in sorted(seen, key=str))
    if isinstance(samples, (str, Path)):
        return Path(samples).name
    return "samples"


def _plausibility(atoms_list: Sequence[Any]) -> dict:
    """Share of samples passing :func:`~ase_llmgen.checks.plausibility.check_plausible`, and each part of it."""
    from ase_llmgen.checks.plausibility import MIN_CONTACT_RATIO, VOLUME_RATIO_RANGE, check_plausible
    from ase_llmgen.convert import to_atoms

    verdicts = []
    for item in atoms_list:
        try:
            verdicts.append(check_plausible(to_atoms(item)))
        except Exception:  # an unbuildable sample is not plausible
            verdicts.append({"plausible": False, "min_contact_ratio": 0.0, "volume_ratio": math.inf})
    n = len(verdicts)
    contacts = [v["min_contact_ratio"] >= MIN_CONTACT_RATIO for v in verdicts]
    volume = [VOLUME_RATIO_RANGE[0] <= v["volume_ratio"] <= VOLUME_RATIO_RANGE[1] for v in verdicts]
    return {
        "plausible": float(np.mean([v["plausible"] for v in verdicts])) if n else None,
        "contacts_ok": float(np.mean(contacts)) if n else None,
        "volume_ok": float(np.mean(volume)) if n else None,
        "n": n,
        "thresholds": {"min_contact_ratio": MIN_CONTACT_RATIO, "volume_ratio": list(VOLUME_RATIO_RANGE)},
    }


def _source_name(source: Any, role: str) -> str:
    if isinstance(source, str) and source == SHIPPED:
        from ase_llmgen.metrics.reference import TEST_NAME, TRAIN_NAME

        return TEST_NAME if role == "test" else TRAIN_NAME
    return str(source) if isinstance(source, (str, Path)) else "in memory"


def _missing_shipped(source: Any, role: str) -> bool:
    """Whether ``source`` is the shipped set of ``role`` and this installation lacks its file (warned)."""
    if not (isinstance(source, str) and source == SHIPPED):
        return False
    import warnings

    from ase_llmgen.metrics.reference import TEST_FEATURES, TRAIN_FEATURES

    path = TEST_FEATURES if role == "test" else TRAIN_FEATURES
    if path.is_file():
        return False
    lost = "coverage" if role == "test" else "novelty"
    message = f"{path} is missing: no {role} fingerprints, so no {lost}; build it with bench/build_reference_data.py"
    warnings.warn(message + " or pass your own set", stacklevel=3)
    return True


def _features(source: Any, role: str, max_n: int | None, seed: int = 0, **kwargs: Any) -> dict:
    """:func:`reference_features` of a file or list, or the shipped MP-20 ``role`` ("test"/"train") set."""
    if isinstance(source, str) and source == SHIPPED:
        from ase_llmgen.metrics.reference import test_features, train_features

        shipped = test_features() if role == "test" else train_features()
        n = len(shipped["density"])
        keep = np.array(_subset(list(range(n)), max_n, seed), int)  # the subset a file would give
        out = {k: (v[keep] if np.ndim(v) and len(v) == n else v) for k, v in shipped.items()}
        out["cached"] = True
        return out
    return reference_features(source, max_n, seed, **kwargs)


def evaluate(
    samples: str | Path | Sequence[Any],
    reference: str | Path | Sequence[Any] | None = SHIPPED,
    train: str | Path | Sequence[Any] | None = SHIPPED,
    n_jobs: int | None = None,
    max_reference: int | None = None,
    max_train: int | None = None,
    dataset: str = "mp20",
    comp_scaler: str = "mp20",
    valid_reference_only: bool = False,
    unique: bool = True,
    progress: bool = True,
    cache: bool = True,
    time_limit: float | None = 60.0,
    symprec: float | None = SYMPREC,
    label: str | None = None,
    write_back: bool = True,
) -> dict:
    """All CDVAE/paper metrics of ``samples`` against ``reference`` (test) and ``train``, as a JSON-able dict.

    ``reference``/``train``: structure files or lists, ``"mp20"`` (the default) for the MP-20
    test set and train + val shipped in the package (:mod:`.reference`, fingerprints precomputed),
    or ``None`` to leave those metrics out. ``dataset`` picks the coverage cutoffs
    (``distribution.COV_CUTOFFS``); novelty uses the MP-20 cutoffs (0.1, 2.0).
    ``max_reference``/``max_train`` keep a seeded random subset. ``symprec``: see
    :func:`~.fingerprints.structure_fingerprint` (``None``: every site, as CDVAE; slower).
    Every sample is also checked for plausibility (:mod:`ase_llmgen.checks.plausibility`).
    A samples database also yields conditioning success, the stored relaxation results
    (``ase-llmgen relax``) and S.U.N. (:mod:`.sun`); with ``write_back`` its valid rows get
    ``unique`` and ``novel`` keys. ``label`` names the run in reports (default: from the
    database's ``model``/``temperature`` keys, else the file name). Rules: see the module docstring.
    """
    timings: dict = {}
    t0 = time.perf_counter()
    atoms_list, skipped, source = _as_atoms_list(samples)
    if not atoms_list:
        raise ValueError(f"{source}: no readable crystals")
    db_path = Path(samples) if isinstance(samples, (str, Path)) and Path(samples).suffix.lower() == ".db" else None
    row_ids = _db_sample_ids(db_path) if db_path is not None else list(range(len(atoms_list)))
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    descs = parallel_map(
        partial(describe, fingerprint="valid", time_limit=time_limit, symprec=symprec),
        atoms_list,
        n_jobs,
        progress,
        desc="samples",
    )
    feats = _stack(descs)
    timings["sample_features"] = time.perf_counter() - t0
    n = len(atoms_list)
    valid = feats["struct_valid"] & feats["comp_valid"]
    usable = valid & feats["struct_ok"] & feats["comp_ok"]
    n_fp = int(valid.sum())
    results: dict = {
        "samples": source,
        "n_samples": n,
        "n_unreadable": len(skipped),
        "validity": {
            "struct_valid": float(feats["struct_valid"].mean()),
            "comp_valid": float(feats["comp_valid"].mean()),
            "valid": float(valid.mean()),
            "oxidation_states": OXIDATION_STATES,
            "n_fingerprint_failed": int(n_fp - usable.sum()),
        },
        "n_valid": int(usable.sum()),
    }
    if n_fp:
        timings["fingerprints_per_second"] = n_fp / max(timings["sample_features"], 1e-9)

    struct_fps = feats["struct_fp"][usable]
    raw_comp = feats["comp_fp"][usable]
    # Per-sample verdicts of the valid samples with fingerprints, by row id (database) or index.
    usable_ids = [row_ids[i] for i in np.flatnonzero(usable)]
    flags: dict[int, dict] = {i: {} for i in usable_ids}
    results["plausibility"] = _plausibility(atoms_list)
    ref = None
    if reference is not None and _missing_shipped(reference, "test"):
        results["reference"] = {"source": _source_name(reference, "test"), "n": 0, "missing": True}
        reference = None
    if reference is not None:
        t0 = time.perf_counter()
        ref = _features(
            reference,
            "test",
            max_reference,
            n_jobs=n_jobs,
            progress=progress,
            cache=cache,
            time_limit=time_limit,
            symprec=symprec,
        )
        timings["reference_features"] = time.perf_counter() - t0
        results["reference"] = {
            "source": _source_name(reference, "test"),
            "n": int(len(ref["density"])),
            "cached": bool(ref["cached"]),
            "max_reference": max_reference,
        }
    scaler = mp20_comp_scaler()
    if comp_scaler == "reference":
        if ref is None:
            raise ValueError("comp_scaler='reference' needs a reference set")
        scaler = fit_comp_scaler(ref["comp_fp"][ref["comp_ok"]])
    elif comp_scaler != "mp20":
        raise ValueError("comp_scaler must be 'mp20' or 'reference'")
    comp_fps = scale_composition(raw_comp, scaler)

    density = feats["density"][usable]
    n_el = feats["n_elements"][usable]
    results["distributions"] = {"density": np.round(density, 4).tolist(), "n_elements": n_el.tolist()}

    t0 = time.perf_counter()
    if len(struct_fps) >= 2:
        results["diversity"] = {"struct": dist.diversity(struct_fps), "comp": dist.diversity(comp_fps)}
    if ref is not None:
        rows = _fp_rows(ref, valid_reference_only)
        ref_density = ref["density"][np.isfinite(ref["density"])]
        results["wdist_density"] = dist.wdist(density, ref_density)
        results["wdist_n_elements"] = dist.wdist(n_el, ref["n_elements"])
        # over all samples, valid or not: which sizes the model writes is the point
        results["cell_sizes"] = cell_sizes(feats["n_sites"], feats["struct_valid"], ref["n_sites"])
        results["distributions"]["reference_density"] = np.round(ref_density, 4).tolist()
        results["distributions"]["reference_n_elements"] = ref["n_elements"].tolist()
        if len(struct_fps) and rows.any():
            s_cut, c_cut = dist.COV_CUTOFFS[dataset]
            results["coverage"] = dist.coverage(
                struct_fps,
                comp_fps,
                ref["struct_fp"][rows],
                scale_composition(ref["comp_fp"][rows], scaler),
                s_cut,
                c_cut,
            )
    timings["distribution_metrics"] = time.perf_counter() - t0

    if train is not None and _missing_shipped(train, "train"):
        results["train"] = {"source": _source_name(train, "train"), "missing": True}
        train = None
    if train is not None:
        t0 = time.perf_counter()
        tr = _features(
            train,
            "train",
            max_train,
            n_jobs=n_jobs,
            progress=progress,
            cache=cache,
            time_limit=time_limit,
            symprec=symprec,
        )
        rows = _fp_rows(tr, valid_reference_only)
        if len(struct_fps) and rows.any():
            s_cut, c_cut = dist.NOVELTY_CUTOFFS["mp20"]
            results["novelty"] = dist.novelty(
                struct_fps,
                comp_fps,
                tr["struct_fp"][rows],
                scale_composition(tr["comp_fp"][rows], scaler),
                s_cut,
                c_cut,
            )
            for i, novel in zip(usable_ids, results["novelty"].pop("novel"), strict=True):
                flags[i]["novel"] = bool(novel)
        results["train"] = {
            "source": _source_name(train, "train"),
            "n": int(len(tr["density"])),
            "cached": bool(tr["cached"]),
        }
        timings["novelty"] = time.perf_counter() - t0

    if unique and usable.any():
        t0 = time.perf_counter()
        kept = [atoms_list[i] for i in np.flatnonzero(usable)]
        u = dist.uniqueness(kept, progress=progress)
        results["uniqueness"] = {k: u[k] for k in ("uniqueness", "n_unique", "n")}
        for i, duplicate_of in zip(usable_ids, u["duplicate_of"], strict=True):
            flags[i]["unique"] = duplicate_of is None
        timings["uniqueness"] = time.perf_counter() - t0
    for i, index in zip(usable_ids, np.flatnonzero(usable), strict=True):
        flags[i]["p1"] = is_p1(atoms_list[index])

    if db_path is not None:
        if write_back:
            write_flags(db_path, {i: {k: f[k] for k in ("unique", "novel") if k in f} for i, f in flags.items() if f})
        results.update(_db_extras(db_path, flags, n, "uniqueness" in results, "novelty" in results))
    results["label"] = label or _default_label(db_path, samples)

    results["settings"] = {
        "dataset": dataset,
        "coverage_cutoffs": list(dist.COV_CUTOFFS[dataset]),
        "novelty_cutoffs": list(dist.NOVELTY_CUTOFFS["mp20"]),
        "comp_scaler": comp_scaler,
        "valid_reference_only": valid_reference_only,
        "fingerprint_time_limit": time_limit,
        "fingerprint_symprec": symprec,
        "n_jobs": n_jobs,
        "plausibility": results["plausibility"]["thresholds"],
    }
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return _jsonable(results)


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    return obj


# --- conditioning -------------------------------------------------------------------------------


def conditioning_success(rows: str | Path | Iterable[Any], symprec: float = 0.2, e_hull_tol: float = 0.1) -> dict:
    """Fractions of samples meeting their requested conditions.

    ``rows``: ASE database rows (or a database path) with ``req_formula``,
    ``req_spacegroup`` and/or ``req_e_above_hull`` key-value pairs.

    * formula: reduced composition equal to the requested one;
    * space group: pymatgen ``SpacegroupAnalyzer(symprec=0.2)`` number equal to
      the requested one (an analyser error counts as not met);
    * E_hull: ``|e_above_hull - req_e_above_hull| < e_hull_tol`` over rows that
      have been relaxed (``ase-llmgen relax``; see :func:`~ase_llmgen.metrics.sun.stored_e_hull`).
    """
    from pymatgen.core import Composition
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from ase_llmgen.convert import to_structure

    if isinstance(rows, (str, Path)):
        from ase.db import connect

        rows = list(connect(rows).select())
    formula_hits: list[bool] = []
    sg_hits: list[bool] = []
    e_diffs: list[float] = []
    n_e_requested = 0
    for row in rows:
        kvp = row.key_value_pairs
        atoms = row.toatoms()
        if "req_formula" in kvp:
            try:
                wanted = Composition(str(kvp["req_formula"])).reduced_composition
                got = Composition(atoms.get_chemical_formula()).reduced_composition
                formula_hits.append(bool(wanted == got))
            except Exception:
                formula_hits.append(False)
        if "req_spacegroup" in kvp:
            try:
                number = SpacegroupAnalyzer(to_structure(atoms), symprec=symprec).get_space_group_number()
                sg_hits.append(int(number) == int(kvp["req_spacegroup"]))
            except Exception:  # undetermined symmetry = condition not met
                sg_hits.append(False)
        if "req_e_above_hull" in kvp:
            n_e_requested += 1
            e_hull = stored_e_hull(kvp)
            if e_hull is not None:
                e_diffs.append(abs(e_hull - float(kvp["req_e_above_hull"])))

    def frac(hits: list[bool]) -> float | None:
        return float(np.mean(hits)) if hits else None

    return {
        "formula": {"n": len(formula_hits), "success": frac(formula_hits)},
        "spacegroup": {"n": len(sg_hits), "success": frac(sg_hits), "symprec": symprec},
        "e_above_hull": {
            "n_requested": n_e_requested,
            "n": len(e_diffs),
            "success": frac([d < e_hull_tol for d in e_diffs]),
            "mae": float(np.mean(e_diffs)) if e_diffs else None,
            "tolerance": e_hull_tol,
        },
    }


# --- report -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if percent:
        return f"{100 * value:.1f}%"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table1_row(method: str, r: dict) -> list[str]:
    return [
        method,
        _fmt(r.get("struct_valid")),
        _fmt(r.get("comp_valid")),
        _fmt(r.get("recall"), 4),
        _fmt(r.get("precision"), 4),
        _fmt(r.get("wdist_density")),
        _fmt(r.get("wdist_n_elements")),
        _fmt(r.get("metastable"), percent=True),
        _fmt(r.get("stable"), percent=True),
    ]


def table1_values(results: dict) -> dict:
    """Our results in the columns of the paper's Table 1."""
    stab = results.get("stability") or {}
    cov = results.get("coverage") or {}
    val = results.get("validity") or {}
    return {
        "struct_valid": val.get("struct_valid"),
        "comp_valid": val.get("comp_valid"),
        "recall": cov.get("recall"),
        "precision": cov.get("precision"),
        "wdist_density": results.get("wdist_density"),
        "wdist_n_elements": results.get("wdist_n_elements"),
        "metastable": stab.get("metastable_rate"),
        "stable": stab.get("stable_rate"),
    }


def report_markdown(
    results: dict | Sequence[tuple[str, dict]], paper_rows: bool = True, label: str | None = None
) -> str:
    """A Markdown report: Table 1 laid out as in the paper (its rows beside ours) plus our other metrics.

    ``results``: one :func:`evaluate` dict (named ``label``, else its own ``label``), or
    ``[(label, results), ...]`` for several runs.
    """
    if isinstance(results, dict):
        runs = [(label or results.get("label") or "samples", results)]
    else:
        runs = list(results)
    head = [
        "method",
        "struct. valid",
        "comp. valid",
        "recall",
        "precision",
        "wdist ρ",
        "wdist N_el",
        "metastable (ML)",
        "stable",
    ]
    lines = ["## Table 1 (MP-20)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if paper_rows:
        for row in PAPER_TABLE1:
            lines.append("| " + " | ".join(_table1_row(f"{row['method']} (paper)", row)) + " |")
    for name, r in runs:
        lines.append("| " + " | ".join(_table1_row(f"**{name}**", table1_values(r))) + " |")
    lines += [
        "",
        "Units: wdist ρ in g/cm³, wdist N_el in elements, E_hull in eV/atom. "
        "Paper rows: published numbers (Gruver et al., ICLR 2024, Table 1; 10,000 samples; metastable = M3GNet "
        "E_hull < 0.1 eV/atom vs the MP hull; stable = DFT E_hull < 0). Our rows: metastable/stable = "
        f"{_potentials(runs)} relaxation, E_hull < 0.1 / < 0 eV/atom vs a hull of MP-20 formation energies (no DFT), "
        "so *stable* is not comparable with the paper's DFT column and both rates are upper bounds relative to the "
        "full MP hull.",
        "",
        "## Other metrics",
        "",
        "| run | samples (unreadable) | valid (with fingerprints) | plausible | struct. diversity | comp. diversity "
        "| novelty | uniqueness | relaxed | median E_hull (eV/atom) | sites per cell (reference) "
        "| struct. valid at the reference's cell sizes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs:
        div = r.get("diversity") or {}
        stab = r.get("stability") or {}
        sizes = r.get("cell_sizes") or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{r.get('n_samples')} ({r.get('n_unreadable', 0)})",
                    str(r.get("n_valid")),
                    _fmt((r.get("plausibility") or {}).get("plausible")),
                    _fmt(div.get("struct")),
                    _fmt(div.get("comp")),
                    _fmt((r.get("novelty") or {}).get("novelty")),
                    _fmt((r.get("uniqueness") or {}).get("uniqueness")),
                    str(stab.get("n_with_e_hull", "n/a")),
                    _fmt(stab.get("median_e_hull")),
                    f"{_fmt(sizes.get('mean_sites'), 2)} ({_fmt(sizes.get('reference_mean_sites'), 2)})",
                    _fmt(sizes.get("valid_at_reference_mix")),
                ]
            )
            + " |"
        )
    cond_runs = [(name, r["conditioning"]) for name, r in runs if r.get("conditioning")]
    if cond_runs:
        lines += [
            "",
            "## Conditioning success",
            "",
            "| run | formula | space group (symprec 0.2 Å) | E_hull within 0.1 eV/atom |",
            "|---|---|---|---|",
        ]
        for name, c in cond_runs:
            cells = [
                f"{_fmt(c[k]['success'])} (n={c[k]['n']})" if c[k]["n"] else "n/a"
                for k in ("formula", "spacegroup", "e_above_hull")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in runs:
        if r.get("sun"):
            from ase_llmgen.metrics.sun import sun_markdown

            lines += ["", *sun_markdown(r["sun"], name if len(runs) > 1 else None)]
    first = runs[0][1]
    settings = first.get("settings", {})
    plaus = settings.get("plausibility") or {}
    lines += [
        "",
        f"Samples: {first.get('samples')}; {first.get('n_unreadable', 0)} unreadable samples are left out of every "
        "fraction. Plausible: shortest contact >= "
        f"{plaus.get('min_contact_ratio')} x the covalent-radius sum, and cell volume within "
        f"{plaus.get('volume_ratio')} x the volume its elements take in MP-20 crystals.",
        "",
        "Settings: compositional validity with "
        + first.get("validity", {}).get("oxidation_states", "?")
        + f"; coverage cutoffs {settings.get('coverage_cutoffs')}, novelty cutoffs "
        f"{settings.get('novelty_cutoffs')}; composition scaler: {settings.get('comp_scaler')}; reference: "
        f"{_set_name(first.get('reference'))}; train: {_set_name(first.get('train'))}.",
        "",
    ]
    return "\n".join(lines)


def _set_name(info: dict | None) -> str:
    if not info:
        return "none"
    if info.get("missing"):
        return f"{info['source']}: missing from this installation"
    return f"{info['source']} ({info.get('n', '?')} crystals used)"


def _potentials(runs: Sequence[tuple[str, dict]]) -> str:
    """The potential(s) behind the runs' stored E_hull values, as a phrase."""
    names = set()
    for _, r in runs:
        potentials = ((r.get("stability") or {}).get("relaxation") or {}).get("potentials", {})
        names.update(key.split(" ")[0] for key in potentials)  # "chgnet {settings}" -> chgnet
    return " / ".join(sorted(names)) if names else "ML-potential"


# --- plots --------------------------------------------------------------------------------------


def _figure(width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def plots(results: dict, out_dir: str | Path) -> list[Path]:
    """PNG plots: density and N_el histograms of samples vs reference, E_hull distribution when present."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    d = results.get("distributions") or {}
    if d.get("density"):
        fig, ax = _figure()
        values = [v for v in d["density"] if v is not None]
        ref = [v for v in d.get("reference_density", []) if v is not None]
        top = np.percentile(values + ref, 99.5) if values + ref else 1.0
        bins = np.linspace(0, top, 50)
        if ref:
            ax.hist(ref, bins=bins, density=True, alpha=0.5, label=f"reference (n={len(ref)})")
        ax.hist(values, bins=bins, density=True, histtype="step", lw=2, label=f"samples (n={len(values)})")
        ax.set(
            xlabel="density (g/cm³)",
            ylabel="probability density",
            title=f"wdist ρ = {_fmt(results.get('wdist_density'))}",
        )
        ax.legend()
        written.append(out / "density.png")
        fig.savefig(written[-1], dpi=120)
    if d.get("n_elements"):
        fig, ax = _figure()
        ref = d.get("reference_n_elements", [])
        top = max(d["n_elements"] + ref)
        ks = np.arange(1, top + 1)
        width = 0.4
        for offset, values, name in ((-width / 2, ref, "reference"), (width / 2, d["n_elements"], "samples")):
            if values:
                counts = np.bincount(values, minlength=top + 1)[1:] / len(values)
                ax.bar(ks + offset, counts, width, label=f"{name} (n={len(values)})")
        ax.set(
            xlabel="number of elements",
            ylabel="fraction",
            xticks=ks,
            title=f"wdist N_el = {_fmt(results.get('wdist_n_elements'))}",
        )
        ax.legend()
        written.append(out / "n_elements.png")
        fig.savefig(written[-1], dpi=120)
    e_hull = (results.get("stability") or {}).get("e_hull") or []
    if e_hull:
        fig, ax = _figure()
        values = np.clip(np.array(e_hull, float), -0.5, 1.5)  # tails into the edge bins
        ax.hist(values, bins=np.linspace(-0.5, 1.5, 41))
        ax.axvline(0.0, color="k", lw=1, label="hull")
        ax.axvline(0.1, color="r", ls="--", lw=1, label="metastable (0.1 eV/atom)")
        ax.set(
            xlabel="CHGNet E_hull (eV/atom), clipped to [-0.5, 1.5]",
            ylabel="samples",
            title=f"metastable {_fmt(results['stability'].get('metastable_rate'), percent=True)} "
            f"of {len(e_hull)} relaxed",
        )
        ax.legend()
        written.append(out / "e_hull.png")
        fig.savefig(written[-1], dpi=120)
    return written


def plot_validity_vs_temperature(results_by_temperature: dict[float, dict], path: str | Path) -> Path:
    """Structural, compositional and overall validity of several runs against sampling temperature."""
    temps = sorted(results_by_temperature)
    fig, ax = _figure()
    for key, name in (("struct_valid", "structural"), ("comp_valid", "compositional"), ("valid", "both")):
        ax.plot(temps, [results_by_temperature[t]["validity"][key] for t in temps], "o-", label=name)
    ax.set(xlabel="temperature", ylabel="fraction valid", ylim=(0, 1.02))
    ax.legend()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_json(results: dict, path: str | Path) -> Path:
    """Write results as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(_jsonable(results), indent=1))
    return path
