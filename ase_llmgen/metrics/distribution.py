"""Distribution metrics of CDVAE (Xie et al. 2021) as used in the paper's Table 1.

All functions take fingerprints already computed (:mod:`.fingerprints`), with
composition fingerprints already standardised; rows that failed are left out by
the caller. Distances are Euclidean. Large inputs are processed in blocks so
that 10,000 x 10,000 distance matrices never sit in memory at once.

Rules, where CDVAE's code decides:

* coverage (``compute_cov``): for every reference crystal, the smallest
  structure distance to any sample and, separately, the smallest composition
  distance to any sample (possibly a different sample); recall = fraction of
  reference crystals with both minima within the cutoffs. Precision is the same
  with the roles swapped, as a fraction of the samples passed in (the paper
  passes the valid samples with fingerprints, i.e. divides by their number).
* novelty (the paper's ``compute_novelty``): a sample is *not* novel when its
  smallest structure distance to the training set is <= 0.1 and its smallest
  composition distance is <= 2.0 (again two independent minima); novelty = fraction
  of samples that are novel.
* uniqueness (not a CDVAE metric): a sample is a duplicate when pymatgen's
  ``StructureMatcher`` (default tolerances) matches it to an earlier unique sample
  of the same reduced composition; uniqueness = unique / all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# CDVAE's coverage cutoffs (structure, composition) per dataset, and the paper's novelty cutoffs.
COV_CUTOFFS = {"mp20": (0.4, 10.0), "carbon": (0.2, 4.0), "perovskite": (0.2, 4.0)}
NOVELTY_CUTOFFS = {"mp20": (0.1, 2.0)}
_BLOCK = 1024


def _as_matrix(fps: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    x = np.asarray(fps, dtype=float)
    return x.reshape(len(x), -1) if x.ndim != 2 else x


def nearest_distances(a: np.ndarray, b: np.ndarray, block: int = _BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """``(min over b for each row of a, min over a for each row of b)`` of Euclidean distances."""
    from scipy.spatial.distance import cdist

    a, b = _as_matrix(a), _as_matrix(b)
    a_min = np.full(len(a), np.inf)
    b_min = np.full(len(b), np.inf)
    for start in range(0, len(a), block):
        d = cdist(a[start : start + block], b)
        if d.size:
            a_min[start : start + block] = d.min(axis=1)
            b_min = np.minimum(b_min, d.min(axis=0))
    return a_min, b_min


def coverage(
    struct_fps: np.ndarray,
    comp_fps: np.ndarray,
    ref_struct_fps: np.ndarray,
    ref_comp_fps: np.ndarray,
    struct_cutoff: float = 0.4,
    comp_cutoff: float = 10.0,
) -> dict:
    """CDVAE coverage recall/precision (and the mean nearest distances AMSD/AMCD).

    ``comp_fps`` and ``ref_comp_fps`` must already be standardised the same way.
    Defaults are the MP-20 cutoffs.
    """
    s_prec, s_rec = nearest_distances(struct_fps, ref_struct_fps)
    c_prec, c_rec = nearest_distances(comp_fps, ref_comp_fps)
    if len(s_prec) == 0 or len(s_rec) == 0:
        raise ValueError("coverage needs at least one sample and one reference fingerprint")
    return {
        "recall": float(np.mean((s_rec <= struct_cutoff) & (c_rec <= comp_cutoff))),
        "precision": float(np.mean((s_prec <= struct_cutoff) & (c_prec <= comp_cutoff))),
        "amsd_recall": float(np.mean(s_rec)),
        "amsd_precision": float(np.mean(s_prec)),
        "amcd_recall": float(np.mean(c_rec)),
        "amcd_precision": float(np.mean(c_prec)),
        "struct_cutoff": struct_cutoff,
        "comp_cutoff": comp_cutoff,
        "n_samples": len(s_prec),
        "n_reference": len(s_rec),
    }


def novelty(
    struct_fps: np.ndarray,
    comp_fps: np.ndarray,
    train_struct_fps: np.ndarray,
    train_comp_fps: np.ndarray,
    struct_cutoff: float = 0.1,
    comp_cutoff: float = 2.0,
) -> dict:
    """Fraction of samples not within both cutoffs of the training set (rule in the module docstring).

    ``novel`` holds the verdict per sample, in order.
    """
    s_min, _ = nearest_distances(struct_fps, train_struct_fps)
    c_min, _ = nearest_distances(comp_fps, train_comp_fps)
    if len(s_min) == 0:
        raise ValueError("novelty needs at least one sample")
    novel = (s_min > struct_cutoff) | (c_min > comp_cutoff)
    return {
        "novelty": float(np.mean(novel)),
        "novel": novel.tolist(),
        "struct_novelty": float(np.mean(s_min > struct_cutoff)),
        "comp_novelty": float(np.mean(c_min > comp_cutoff)),
        "struct_cutoff": struct_cutoff,
        "comp_cutoff": comp_cutoff,
        "n_samples": len(s_min),
        "n_train": len(train_struct_fps),
    }


def diversity(fps: np.ndarray, block: int = _BLOCK) -> float:
    """Mean pairwise Euclidean distance (CDVAE ``get_fp_pdist``), computed blockwise; NaN for < 2 rows."""
    from scipy.spatial.distance import cdist

    x = _as_matrix(fps)
    n = len(x)
    if n < 2:
        return float("nan")
    total = 0.0
    for start in range(0, n, block):
        d = cdist(x[start : start + block], x[start:])
        # Keep each unordered pair once: columns to the right of the diagonal.
        total += np.triu(d, k=1).sum()
    return float(total / (n * (n - 1) / 2))


def wdist(values: Sequence[float], reference: Sequence[float]) -> float:
    """1-D Wasserstein distance (``scipy.stats.wasserstein_distance``)."""
    from scipy.stats import wasserstein_distance

    if len(values) == 0 or len(reference) == 0:
        return float("nan")
    return float(wasserstein_distance(values, reference))


def density(obj: Any) -> float:
    """Mass density in g/cm^3 (pymatgen ``Structure.density``)."""
    from ase_llmgen.convert import to_structure

    return float(to_structure(obj).density)


def n_elements(obj: Any) -> int:
    """Number of distinct elements."""
    from ase_llmgen.convert import to_atoms, to_structure

    try:
        return len(set(to_atoms(obj).get_chemical_symbols()))
    except TypeError:
        return len(to_structure(obj).composition.elements)


def uniqueness(structures: Sequence[Any], matcher: Any = None, progress: bool = False) -> dict:
    """Fraction of structures not matching an earlier one (pymatgen ``StructureMatcher``).

    Only structures with the same reduced composition are compared (others
    cannot match with the default species comparison), and each new structure
    is compared with the unique ones found so far in its group.
    Returns ``{"uniqueness", "n_unique", "n", "duplicate_of"}``; ``duplicate_of[i]``
    is the index of the first structure that ``i`` matched, or ``None``.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from tqdm.auto import tqdm

    from ase_llmgen.convert import to_structure

    matcher = matcher or StructureMatcher()
    groups: dict[str, list[int]] = {}
    duplicate_of: list[int | None] = []
    structs = [to_structure(s) for s in structures]
    for i, s in enumerate(tqdm(structs, desc="uniqueness", disable=not progress, leave=False)):
        key = s.composition.reduced_formula
        match = None
        for j in groups.get(key, []):
            try:
                if matcher.fit(structs[j], s):
                    match = j
                    break
            except Exception:  # a failing comparison is "no match", not a crash
                continue
        duplicate_of.append(match)
        if match is None:
            groups.setdefault(key, []).append(i)
    n = len(structs)
    n_unique = sum(d is None for d in duplicate_of)
    return {
        "uniqueness": n_unique / n if n else float("nan"),
        "n_unique": n_unique,
        "n": n,
        "duplicate_of": duplicate_of,
    }
