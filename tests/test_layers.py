"""Import direction: every import in the package runs down the layers, and no private name crosses a folder.

text (and the plugin contract) is the leaf; models, data and checks build on it; sampling, training,
metrics and relax on those; the GA on all of them; the command line on top.  A lower layer that needs
a higher one is a registration away (``ase_llmgen.hookspecs``), never an import.
"""

import ast
from pathlib import Path

import ase_llmgen

ROOT = Path(ase_llmgen.__file__).parent
LAYERS = {
    "__init__": 0,
    "hookspecs": 0,
    "registry": 0,
    "plugins": 0,
    "convert": 0,
    "text": 0,
    "models": 1,
    "data": 1,
    "checks": 1,
    "sampling": 2,
    "training": 2,
    "metrics": 2,
    "relax": 2,
    "fuzz": 2,
    "ga": 3,
    "cli": 4,
}


def _part(module: str) -> str:
    """The folder (or top-level module) of ``ase_llmgen.<module>``."""
    return module.split(".")[0]


def _imports(path: Path):
    """``(imported module under ase_llmgen, names, line)`` for every import in ``path``, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ase_llmgen"):
            rest = node.module[len("ase_llmgen") :].lstrip(".")
            if not rest:  # from ase_llmgen import text
                for alias in node.names:
                    yield alias.name, [], node.lineno
            else:
                yield rest, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ase_llmgen."):
                    yield alias.name[len("ase_llmgen.") :], [], node.lineno


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, _part(str(path.relative_to(ROOT).with_suffix("")).replace("/", "."))


def test_every_folder_has_a_layer():
    assert {part for _, part in _modules()} <= set(LAYERS)


def test_no_import_runs_up_the_layers():
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports ase_llmgen.{module}"
        for path, part in _modules()
        for module, _, line in _imports(path)
        if LAYERS[_part(module)] > LAYERS[part]
    ]
    assert not upward


def test_no_private_name_crosses_a_folder():
    private = [
        f"{path.relative_to(ROOT)}:{line} imports {name} from ase_llmgen.{module}"
        for path, part in _modules()
        for module, names, line in _imports(path)
        for name in names
        if name.startswith("_") and _part(module) != part
    ]
    assert not private
