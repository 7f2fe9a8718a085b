"""Evaluation of generated crystals: CDVAE metrics (the paper's Table 1), CHGNet stability, conditioning success.

Validity checks themselves live in :mod:`ase_llmgen.checks.validity`. Heavy
libraries (matminer, CHGNet, torch) load only when a function needs them.
``evaluate`` here is the function; the module is ``ase_llmgen.metrics.evaluate``.
"""

from ase_llmgen.metrics.distribution import coverage, diversity, novelty, uniqueness, wdist
from ase_llmgen.metrics.evaluate import (
    conditioning_success,
    evaluate,
    load_samples,
    plot_validity_vs_temperature,
    plots,
    report_markdown,
    write_json,
)
from ase_llmgen.metrics.fingerprints import composition_fingerprint, structure_fingerprint
from ase_llmgen.metrics.stability import (
    ReferenceHull,
    check_known_structures,
    default_reference_hull,
    reference_hull,
    relax,
    stability,
)

__all__ = [
    "ReferenceHull",
    "check_known_structures",
    "composition_fingerprint",
    "conditioning_success",
    "coverage",
    "default_reference_hull",
    "diversity",
    "evaluate",
    "load_samples",
    "novelty",
    "plot_validity_vs_temperature",
    "plots",
    "reference_hull",
    "relax",
    "report_markdown",
    "stability",
    "structure_fingerprint",
    "uniqueness",
    "wdist",
    "write_json",
]
