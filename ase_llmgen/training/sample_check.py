"""Sample crystals from the model being trained and measure them: validity as a training signal.

The validation loss and the validity of samples can part ways: a small model that learns to copy
earlier sites lowers its loss while writing more duplicated sites (archive/benchmarks_by_session.md section 9).
So a run can draw a few crystals every ``sample_every`` steps, log their structural validity, cell
size and validity at the *training data's* mix of cell sizes (never the test set's), and keep the
best model by any of these (``keep_best``).
"""

from __future__ import annotations

import numpy as np
import torch

from ase_llmgen.checks.validity import compositionally_valid, structurally_valid
from ase_llmgen.metrics.evaluate import cell_sizes
from ase_llmgen.models.bundle import LMBundle
from ase_llmgen.sampling.sampler import Sampler, SampleSettings

# Logged metrics, and whether higher is better (what ``keep_best`` may name).
HIGHER_IS_BETTER = {
    "val_loss": False,
    "val_nats_per_char": False,
    "sample_struct_valid": True,
    "sample_comp_valid": True,
    "sample_valid_at_data_mix": True,
}


def sample_check(bundle: LMBundle, n: int, temperature: float, data_sites: np.ndarray, seed: int) -> dict:
    """Draw ``n`` unconditional crystals (grammar on, guard off, invalid ones kept) and measure them.

    ``data_sites``: sites per cell of the training structures, the mix the validity is weighed by.
    """
    threads = torch.get_num_threads()  # the sampler takes every core; training keeps its own setting
    was_training = bundle.model.training
    bundle.model.eval()
    try:
        settings = SampleSettings(
            batch_size=min(n, 64),
            temperature=temperature,
            require_valid=False,
            max_atoms=max(1, int(data_sites.max())),
        )
        atoms, stats = Sampler(bundle, settings, seed=seed).sample(n, progress=False)
    finally:
        torch.set_num_threads(threads)
        bundle.model.train(was_training)
    if not atoms:
        return {"sample_n": 0, "sample_unparseable": stats.unparseable}
    valid = np.array([structurally_valid(a) for a in atoms])
    sites = np.array([len(a) for a in atoms])
    sizes = cell_sizes(sites, valid, data_sites)
    return {
        "sample_n": len(atoms),
        "sample_unparseable": stats.unparseable,
        "sample_struct_valid": float(valid.mean()),
        "sample_comp_valid": float(np.mean([compositionally_valid(a.get_chemical_symbols()) for a in atoms])),
        "sample_mean_sites": sizes["mean_sites"],
        "sample_valid_at_data_mix": sizes["valid_at_reference_mix"],
    }
