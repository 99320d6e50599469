"""MNIST for the tests: the real one from FASTBP_DATA (which CI sets; skipped without it), and
tiny stand-ins in MNIST's file layout."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

requires_mnist = pytest.mark.skipif(not os.environ.get("FASTBP_DATA"), reason="real MNIST: set FASTBP_DATA (CI does)")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_mnist(directory: Path, n_train=6, n_test=4, gz=True) -> dict:
    """Four small IDX files in MNIST's layout; returns their raw bytes by name."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) + 3) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    raw = {}
    for name, arr in arrays.items():
        raw[name] = idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw[name]))
        else:
            (directory / name).write_bytes(raw[name])
    return raw
