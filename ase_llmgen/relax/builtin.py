"""Built-in ASE calculators, registered through the ``register_calculators`` hook."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import CalculatorSpec


def chgnet_calculator(model: Any = None, **settings: Any):
    """CHGNet 0.3.0 (weights ship in the ``chgnet`` wheel) as an ASE calculator.

    ``model``: an already loaded ``CHGNet`` (default: the process-wide one); other
    ``settings`` go to ``CHGNetCalculator`` (e.g. ``use_device="cpu"``).
    """
    from chgnet.model.dynamics import CHGNetCalculator

    from ase_llmgen.metrics.stability import chgnet_model

    # on_isolated_atoms="ignore": generated cells may hold an atom with no neighbour within 6 A.
    settings.setdefault("on_isolated_atoms", "ignore")
    # CHGNet prints "CHGNet will run on cpu" to stdout, where a command's JSON summary goes.
    with contextlib.redirect_stdout(sys.stderr):
        return CHGNetCalculator(model or chgnet_model(), **settings)


def sevennet_calculator(model: str = "7net-0", **settings: Any):
    """SevenNet-0 (weights ship in the ``sevenn`` wheel) as an ASE calculator: ``pip install ase-llmgen[sevenn]``.

    ``model``: a SevenNet model name shipped in the wheel (default ``7net-0``, trained on MPtrj's
    *uncorrected* energies, unlike CHGNet: measured, its formation energies of MP-20 oxides and halides
    sit 0.2-0.8 eV/atom above MP's until the MP2020 corrections are applied, which the relax runner does);
    other ``settings`` go to ``SevenNetCalculator`` (e.g. ``device="cpu"``). The checkpoint is a torch
    pickle from the sevenn wheel (SevenNet loads it with ``weights_only=False``): an opt-in extra.
    """
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the sevenn calculator needs the optional SevenNet package: pip install 'ase-llmgen[sevenn]'"
        ) from exc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e3nn/torch deprecation chatter while the model loads
        return SevenNetCalculator(model, **settings)


@hookimpl
def register_calculators() -> list[CalculatorSpec]:
    return [
        CalculatorSpec(
            "chgnet",
            chgnet_calculator,
            "CHGNet 0.3.0 universal potential (MP2020-corrected energy scale; weights in the chgnet wheel)",
        ),
        CalculatorSpec(
            "sevenn",
            sevennet_calculator,
            "SevenNet-0 universal potential (MPtrj, uncorrected energies: MP2020 corrections applied; "
            "weights in the sevenn wheel; optional extra [sevenn])",
            energy_scale="raw",
        ),
    ]
