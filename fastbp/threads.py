"""Threads for the compiled backends' elementwise loops, one setting for numba and native.

Elementwise and row-wise loops (ReLU, Sigmoid, softmax rows, optimizer updates) run on several
threads only for arrays of at least ``PARALLEL_MIN_ELEMENTS`` elements. The threshold is high on
purpose: between BLAS calls, these threads and BLAS's own spin against each other. Measured on
the 2-core development machine: a 784-50-10 forward pass over MNIST took 236 ms with threaded
ReLU and 56 ms without; alone, a ReLU is 1.7x faster threaded only from about a million elements.
Matrix products use BLAS's threads (set with OPENBLAS_NUM_THREADS before starting Python).
"""

from __future__ import annotations

import os

PARALLEL_MIN_ELEMENTS = 1 << 22

# How long an idle OpenMP thread spins before it sleeps (GNU OpenMP reads GOMP_SPINCOUNT when it
# loads; its default, 300000 spins, keeps each thread busy for milliseconds after every parallel
# loop). Between a layer's threaded loop and the next BLAS call those spinning threads take the
# cores BLAS's threads need: the book's ch07 loop with fastbp's layers ran 66 ms an iteration by
# default and 52 ms with 30000 spins (passive waiting: 43 ms, but the fused engine's barriers,
# microseconds apart, then wake by the kernel and its MNIST run slows from 1.2 s to 2.0 s).
# 30000 spins measured no slower for the engine. A user's own setting is left alone.
SPIN_COUNT = "30000"


def configure_openmp() -> None:
    """Set GOMP_SPINCOUNT before fastbp's OpenMP runtime loads, unless the user chose a wait policy."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


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
