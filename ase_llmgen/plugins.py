"""Build the plugin manager: built-in plugins first, then third-party entry points."""

from __future__ import annotations

import importlib
from functools import lru_cache

import pluggy

from ase_llmgen import hookspecs
from ase_llmgen.hookspecs import hookimpl  # noqa: F401  (re-exported for plugins written against 0.1)
from ase_llmgen.registry import (
    DEFAULT_CODEC,
    CalculatorSpec,
    Check,
    Codec,
    GeneratorSpec,
    ModelFamily,
    MutatorSpec,
)

ENTRY_POINT_GROUP = "ase_llmgen"

# Built-in features register through the same hooks as third-party plugins.
# These modules import torch lazily, so listing plugins stays cheap.
BUILTIN_PLUGINS = (
    "ase_llmgen.text.paper",
    "ase_llmgen.text.cif",
    "ase_llmgen.text.wyckoff",
    "ase_llmgen.models.builtin",
    "ase_llmgen.sampling.builtin",
    "ase_llmgen.ga.builtin",
    "ase_llmgen.checks.builtin",
    "ase_llmgen.relax.builtin",
)


@lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager (built once, on first use)."""
    pm = pluggy.PluginManager("ase_llmgen")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def _collect(hook_name: str) -> dict:
    records: dict = {}
    for batch in getattr(get_plugin_manager().hook, hook_name)():
        for record in batch or ():
            # Later registrations (third-party) may not silently shadow earlier ones.
            if record.name in records:
                raise ValueError(f"two plugins register a {hook_name[9:-1]} named {record.name!r}")
            records[record.name] = record
    return records


def codecs() -> dict[str, Codec]:
    """All registered codecs by name."""
    return _collect("register_codecs")


def model_families() -> dict[str, ModelFamily]:
    """All registered model families by name."""
    return _collect("register_models")


def generators() -> dict[str, GeneratorSpec]:
    """All registered structure generators by name."""
    return _collect("register_generators")


def mutators() -> dict[str, MutatorSpec]:
    """All registered GA mutation operators by name."""
    return _collect("register_mutators")


def checks() -> dict[str, Check]:
    """All registered structure checks by name."""
    return _collect("register_checks")


def calculators() -> dict[str, CalculatorSpec]:
    """All registered ASE calculators by name."""
    return _collect("register_calculators")


def get_calculator(name: str = "chgnet", **settings):
    """A new ASE calculator from the one registered as ``name`` (``KeyError`` lists the known ones)."""
    known = calculators()
    if name not in known:
        raise KeyError(f"unknown calculator {name!r}; registered: {', '.join(sorted(known))}")
    return known[name].factory(**settings)


def get_codec(name: str = DEFAULT_CODEC) -> Codec:
    """Return the codec called ``name`` or raise ``KeyError`` listing the known ones."""
    known = codecs()
    if name not in known:
        raise KeyError(f"unknown codec {name!r}; registered: {', '.join(sorted(known))}")
    return known[name]


def plugin_names() -> list[str]:
    """Names of every registered plugin module (built-in and third-party)."""
    pm = get_plugin_manager()
    return sorted(pm.get_name(p) or repr(p) for p in pm.get_plugins())
