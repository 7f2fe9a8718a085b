"""The README's Python examples run as written, with the shipped default model."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    block = BLOCKS[index]
    if "hookimpl" in block:
        pytest.skip("plugin snippet: exercised by tests/test_plugins.py")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md python block {index}", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "pip install torch==2.13.0" in text and "ase-llmgen generate" in text
    assert "python -m pytest -q" in text
