"""Threads for the compiled backends' elementwise loops, one setting for numba and native.

Elementwise and row-wise loops (ReLU, Sigmoid, softmax rows, optimizer updates) run on several
threads only for arrays of at least ``PARALLEL_MIN_ELEMENTS`` elements. The threshold is high on
purpose: between BLAS calls, these threads and BLAS's own spin against each other. Measured on
the 2-core development machine: a 784-50-10 forward pass over MNIST took 236 ms with threaded
ReLU and 56 ms without; alone, a ReLU is 1.7x faster threaded only from about a million elements.
Matrix products use BLAS's threads (set with OPENBLAS_NUM_THREADS before starting Python).
"""

from __future__ import annotations

PARALLEL_MIN_ELEMENTS = 1 << 22


def set_num_threads(n: int) -> None:
    """Threads for numba's and native's parallel loops (at most the machine's, or NUMBA_NUM_THREADS)."""
    import numba

    from . import backends

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(f"at most {limit} threads here (NUMBA_NUM_THREADS); got {n}")
    numba.set_num_threads(n)
    if "native" in backends.available():
        from . import _native

        _native.set_num_threads(n)


def get_num_threads() -> int:
    import numba

    return numba.get_num_threads()
