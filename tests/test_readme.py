"""The README's Python blocks run as written, so that the README cannot drift from the code."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 2


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write files (weights.npz)
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        if re.search(r"^[^#\n]*load_mnist\(", block, flags=re.M) and not os.environ.get("FASTBP_DATA"):
            pytest.skip("a block loads real MNIST: set FASTBP_DATA (CI does)")
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block that broke
            raise AssertionError(f"README python block {i + 1} fails: {type(exc).__name__}: {exc}") from exc
