"""The whole plugin contract of ase-llmgen.

Every capability the package offers -- text codecs, model families, structure
generators, GA mutation operators, structure checks and ASE calculators -- is registered through
one of these hooks.  Built-in features use them exactly like third-party plugins,
which are found through the ``ase_llmgen`` entry-point group::

    [project.entry-points.ase_llmgen]
    my_plugin = "my_package.my_module"

Each hook returns a list of registration records (see :mod:`ase_llmgen.registry`);
all hooks are called with keyword arguments only (pluggy's rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the records a hook returns
    from ase_llmgen.registry import CalculatorSpec, Check, Codec, GeneratorSpec, ModelFamily, MutatorSpec

hookspec = pluggy.HookspecMarker("ase_llmgen")
# Plugins (built-in ones included) mark their hooks with this; it lives here, in a leaf module, so that a
# plugin never imports the plugin manager it is registered with.
hookimpl = pluggy.HookimplMarker("ase_llmgen")


@hookspec
def register_codecs() -> list[Codec]:
    """Return crystal <-> text codecs (e.g. the paper's format, a CIF-style one)."""


@hookspec
def register_models() -> list[ModelFamily]:
    """Return model families: how to build, load and save a causal LM for crystals."""


@hookspec
def register_generators() -> list[GeneratorSpec]:
    """Return structure generators: factories of iterables of ``ase.Atoms``."""


@hookspec
def register_mutators() -> list[MutatorSpec]:
    """Return GA mutation operators: factories of ``ase_ga`` ``OffspringCreator`` objects."""


@hookspec
def register_checks() -> list[Check]:
    """Return structure checks whose results are stored as ASE-db key-value pairs."""


@hookspec
def register_calculators() -> list[CalculatorSpec]:
    """Return ASE calculators (ML potentials) for relaxation and stability: factories of ``ase`` calculators."""
