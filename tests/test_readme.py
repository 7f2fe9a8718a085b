"""The Python examples of README.md and docs/guide.md run as written, with the shipped default model."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = (README, ROOT / "docs" / "guide.md")
BLOCKS = [
    (doc.relative_to(ROOT).as_posix(), n, block)
    for doc in DOCS
    for n, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S))
]
EXAMPLES = [b for b in BLOCKS if "hookimpl" not in b[2]]
PLUGINS = [b for b in BLOCKS if "hookimpl" in b[2]]


def _id(block) -> str:
    return f"{block[0]}:{block[1]}"


@pytest.mark.slow
@pytest.mark.parametrize("block", EXAMPLES, ids=_id)
def test_doc_example_runs(block, tmp_path, monkeypatch, capsys):
    doc, index, code = block
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{doc} python block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("block", PLUGINS, ids=_id)
def test_doc_plugin_snippet_works(block, tmp_path, monkeypatch):
    """A plugin snippet, loaded as a module and registered, adds working records of each kind it defines."""
    from ase.build import bulk
    from ase.io import write

    from ase_llmgen import plugins
    from ase_llmgen.checks.database import run_checks
    from ase_llmgen.registry import CalculatorSpec, Check, Codec, GeneratorSpec

    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"doc_plugin_{block[1]}.py"
    path.write_text(block[2])
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = [r for name in dir(module) if name.startswith("register_") for r in getattr(module, name)()]
    assert records
    nacl, cu = bulk("NaCl", "rocksalt", a=5.64), bulk("Cu", "fcc", a=3.61)
    write("seeds.extxyz", [nacl, cu])  # for a generator that reads a file
    pm = plugins.get_plugin_manager()
    pm.register(module)
    try:
        for record in records:
            if isinstance(record, Codec):
                assert plugins.get_codec(record.name).decode(record.encode(nacl)).get_chemical_formula() == "ClNa"
            elif isinstance(record, Check):
                assert record.name in plugins.checks()
                pairs = run_checks(nacl, {})
                assert not any(k.startswith("check_error") for k in pairs)
                assert set(record.keys) <= set(pairs)
            elif isinstance(record, CalculatorSpec):
                cu.calc = plugins.get_calculator(record.name)
                assert abs(cu.get_potential_energy()) < 10
            elif isinstance(record, GeneratorSpec):
                first = next(iter(plugins.generators()[record.name].factory()))
                assert len(first) > 0
            else:
                pytest.fail(f"untested record kind {type(record).__name__}")
    finally:
        pm.unregister(module)


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "pip install torch==2.13.0" in text and "ase-llmgen generate" in text
    assert "python -m pytest -q" in text
