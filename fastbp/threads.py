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


def running_elsewhere() -> int | None:
    """Tasks running or ready to run on this machine outside this process, now (Linux's
    /proc/loadavg count less this process's own running threads), or None where unknown."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as f:
                own += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - own)


class ThreadChoice:
    """Threads for a run of like blocks of work (the fused trainer's native blocks), chosen by
    measurement, so that a shared machine slows a run gracefully.

    When another process takes a core, work split across all cores waits at every barrier and
    every BLAS hand-off for a thread that is not running: the fused MNIST experiment with one busy
    process beside it took 4-6x its quiet training time on two threads, and 1.1x on one (2-core
    machine). So a run starts on all threads, or on one when other work already holds the cores
    the rest would need; it tries the other choice in a short block (1/PROBE_SHARE of the steps)
    when its blocks run SLOWER per step than its own best, and, while on one thread, every few
    blocks (less often each time all threads lose), and keeps whichever measured faster. A quiet
    run never changes its threads, so its numbers are the same from run to run.
    """

    SLOWER = 1.5
    FIRST_PROBE = 4  # blocks on one thread before all threads are tried again
    MOST_BLOCKS_BETWEEN = 64
    PROBE_SHARE = 8
    MIN_SECONDS = 0.02  # shorter blocks (the first, growing ones) are not measurements

    def __init__(self, most: int, apply, busy: int | None = 0):
        self.most = most
        self.current = 1 if most > 1 and busy and most + busy > (os.cpu_count() or most) else most
        self._apply = apply  # apply(threads) sets the threads and returns how to restore them
        self._restore = None
        self.per_step: dict[int, float] = {}  # latest seconds per step of each choice
        self.best: dict[int, float] = {}
        self.gap = self.wait = self.FIRST_PROBE
        self.probing = False

    @classmethod
    def for_native(cls) -> "ThreadChoice":
        from . import _native

        def apply(threads):
            omp, blas = _native.openmp(), _native.blas_threads_local(threads)  # 0, -1: no such setting here
            if omp:
                _native.set_num_threads(threads)

            def restore():
                if omp:
                    _native.set_num_threads(omp)
                if blas > 0:
                    _native.blas_threads_local(blas)
            return restore
        samples = [running_elsewhere() for _ in range(3)]  # the least of three: a passing process is not load
        busy = None if None in samples else min(samples)
        return cls(max(1, _native.openmp()), apply, busy)

    def next_block(self) -> tuple[int, bool]:
        """(threads, probe) for the next block, with those threads set; a probe block should be short."""
        threads, self.probing = self.current, False
        if self.most > 1:
            slowed = self.current in self.best and self.per_step[self.current] > self.SLOWER * self.best[self.current]
            if slowed or (self.current != self.most and self.wait <= 0):
                threads, self.probing = (1 if self.current == self.most else self.most), True
        restore = self._apply(threads)
        if self._restore is None:
            self._restore = restore  # the settings before the first block
        return threads, self.probing

    def record(self, threads: int, seconds: float, steps: int) -> None:
        if seconds < self.MIN_SECONDS and not self.probing:
            return
        per_step = seconds / max(steps, 1)
        self.per_step[threads] = per_step
        self.best[threads] = min(self.best.get(threads, per_step), per_step)
        if not self.probing:
            self.wait -= 1
            return
        if per_step < self.per_step.get(self.current, float("inf")):
            self.current, self.gap = threads, self.FIRST_PROBE
        else:  # the current choice's slower blocks are its new normal
            self.gap = min(2 * self.gap, self.MOST_BLOCKS_BETWEEN)
            self.best[self.current] = self.per_step[self.current]
        self.wait = self.gap

    def restore(self) -> None:
        """The thread settings as they were before the first block."""
        if self._restore is not None:
            self._restore()
            self._restore = None
