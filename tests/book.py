"""The book's own code (../shared/dlfs, MIT) for the tests that compare with it; skipped without it."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[2] / "shared" / "dlfs"
requires_book = pytest.mark.skipif(not (BOOK / "common" / "layers.py").exists(), reason=f"the book's code is not at {BOOK}")


def book_module(name: str):
    """A module of the book's common/ package (layers, optimizer, util), imported from BOOK."""
    if not (BOOK / "common" / "layers.py").exists():
        pytest.skip(f"the book's code is not at {BOOK}")
    if str(BOOK) not in sys.path:
        sys.path.insert(0, str(BOOK))
    return importlib.import_module(f"common.{name}")


def book_layers():
    return book_module("layers")


def run_book_script(script: str, original: bool = False, timeout: float = 600, args=(), seed: int | None = None
                    ) -> subprocess.CompletedProcess:
    """One of the book's scripts, unchanged, in a fresh process through run_with_fastbp.sh (with
    fastbp's layers and optimizers, or the book's own with ``original``); ``seed`` seeds NumPy's
    global generator before the script starts (tests/book_seed)."""
    runner = BOOK / "run_with_fastbp.sh"
    if not runner.exists():
        pytest.skip(f"the book's code is not at {BOOK}")
    if not (BOOK.parent / "data" / "mnist").is_dir():
        pytest.skip("the book's scripts read MNIST from ../shared/data/mnist")
    assert shutil.which("bash")
    command = ["bash", str(runner), *(["--original"] if original else []), script, *args]
    env = os.environ | {"PYTHON": sys.executable, "MPLBACKEND": "Agg"}
    if seed is not None:
        seeding = str(Path(__file__).resolve().parent / "book_seed")
        env |= {"FASTBP_BOOK_SEED": str(seed), "PYTHONPATH": os.pathsep.join(filter(None, [seeding, env.get("PYTHONPATH")]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


NET_MODULES = ("simple_convnet", "deep_convnet")


def book_network(module: str, fastbp_layers: bool):
    """The book's network module (ch07 simple_convnet, ch08 deep_convnet,
    common.multi_layer_net_extend, ...) imported afresh with fastbp's layers or the book's own in
    its common.layers."""
    import types

    def forget():
        for name in [m for m in sys.modules if m == module or m.startswith("common") or m in NET_MODULES]:
            del sys.modules[name]

    forget()
    sys.path[:0] = [str(BOOK), str(BOOK / "ch07"), str(BOOK / "ch08")]
    try:
        if fastbp_layers:
            import fastbp.layers

            import common  # noqa: F401  (the package, so that common.layers can be replaced)
            sys.modules["common.layers"] = types.ModuleType("common.layers")
            sys.modules["common.layers"].__dict__.update({n: getattr(fastbp.layers, n) for n in fastbp.layers.__all__})
        return importlib.import_module(module)
    finally:
        del sys.path[:3]
        forget()
