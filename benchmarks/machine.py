"""What a benchmark table must name: the machine, the library versions, the threads, and the
matrix-multiply peak measured on this machine (the roofline every result is judged against)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from fastbp._system import cpu_model


def versions() -> dict:
    import numba
    import scipy

    import fastbp

    found = {"python": platform.python_version(), "fastbp": fastbp.__version__, "numpy": np.__version__,
             "numba": numba.__version__, "scipy": scipy.__version__}
    for name in ("torch", "jax"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def describe() -> str:
    v = versions()
    return (f"{cpu_model()}, {os.cpu_count()} cores; "
            + ", ".join(f"{k} {val}" for k, val in v.items()))


def matmul_peak(dtype=np.float32, n: int = 1024, repeats: int = 7, threads: int | None = None) -> float:
    """Best GFLOP/s of an n x n x n matrix product through NumPy's BLAS (median of the best runs)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    limiter = None
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=threads, user_api="blas")
        except ImportError:
            return float("nan")
    try:
        np.dot(a, b, out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.dot(a, b, out)
            times.append(time.perf_counter() - start)
    finally:
        if limiter is not None:
            limiter.unregister()
    return 2 * n**3 / float(np.median(sorted(times)[: max(1, repeats // 2)])) / 1e9
