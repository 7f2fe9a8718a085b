"""Built-in ASE calculators, registered through the ``register_calculators`` hook."""

from __future__ import annotations

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
    return CHGNetCalculator(model or chgnet_model(), **settings)


@hookimpl
def register_calculators() -> list[CalculatorSpec]:
    return [
        CalculatorSpec(
            "chgnet",
            chgnet_calculator,
            "CHGNet 0.3.0 universal potential (MP2020-corrected energy scale; weights in the chgnet wheel)",
        )
    ]
