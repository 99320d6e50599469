"""fastbp.threads: one thread setting for numba's driver and the native kernels, checked."""

import os

import numba
import numpy as np
import pytest

import fastbp
from fastbp import reference
from fastbp.testing import check_layer
from fastbp.threads import ThreadChoice, get_num_threads, running_elsewhere, set_num_threads


def test_threads_setting_is_shared_and_checked():
    set_num_threads(1)
    assert get_num_threads() == 1 == numba.get_num_threads()
    if "native" in fastbp.available_backends():
        from fastbp import _native

        assert _native.openmp() in (0, 1)
    set_num_threads(numba.config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError, match="at most"):
        set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError, match="positive integer"):
        set_num_threads(0)


def test_numbas_driver_splits_rows_and_every_slice_is_computed(monkeypatch, rng):
    """Rows split across threads must cover every row once: a large array on 2 threads matches
    the reference (and the driver really split it)."""
    import fastbp.backends.numba as numba_backend

    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_ELEMENTS", 1)
    set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    calls = []
    real = numba_backend._relu_forward
    monkeypatch.setattr(numba_backend, "_relu_forward", lambda *a: calls.append(a[0].shape) or real(*a))
    x = rng.standard_normal((37, 11))
    check_layer(fastbp.Relu(backend="numba"), reference.Relu(), x, gradcheck=False)
    assert sum(shape[0] for shape in calls) == x.size and len(calls) == numba.get_num_threads()
    t = rng.integers(0, 11, 37)
    check_layer(fastbp.SoftmaxWithLoss(backend="numba"), reference.SoftmaxWithLoss(), x, t, gradcheck=False)
    set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.all(np.isfinite(x))


def test_openmp_threads_spin_briefly_unless_the_user_chose(monkeypatch):
    import fastbp.threads as threads

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_openmp()
    import os

    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == "7"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert "GOMP_SPINCOUNT" not in os.environ


class FakeThreads:
    """ThreadChoice's setter, recording what it was asked for."""

    def __init__(self):
        self.calls, self.restored = [], 0

    def __call__(self, threads):
        self.calls.append(threads)

        def restore():
            self.restored += 1
        return restore


def run_blocks(choice, seconds_per_step, blocks, steps=1000):
    """Blocks of `steps` steps whose time per step is seconds_per_step(threads, block index)."""
    used = []
    for b in range(blocks):
        threads, probe = choice.next_block()
        n = max(1, steps // choice.PROBE_SHARE) if probe else steps
        choice.record(threads, seconds_per_step(threads, b) * n, n)
        used.append((threads, probe))
    return used


def test_a_quiet_run_keeps_all_threads_and_never_tries_fewer():

    choice = ThreadChoice(2, FakeThreads())
    used = run_blocks(choice, lambda threads, b: 1e-4 if threads == 2 else 1.6e-4, 50)
    assert used == [(2, False)] * 50  # the same threads every block: the same numbers every run


def test_contention_moves_the_run_to_one_thread_and_back_when_it_ends():

    # quiet for 5 blocks, another process on a core for blocks 5-29: two threads 4x slower, one 1.1x
    def per_step(threads, b):
        busy = 5 <= b < 30
        return (4e-4 if busy else 1e-4) if threads == 2 else (1.76e-4 if busy else 1.6e-4)
    choice = ThreadChoice(2, FakeThreads())
    used = run_blocks(choice, per_step, 60)
    assert used[5] == (2, False) and used[6] == (1, True)  # the slow block is seen, one thread is tried
    assert all(threads == 1 for threads, probe in used[7:30] if not probe)  # and kept while it is faster
    probes = [b for b, (threads, probe) in enumerate(used) if probe and threads == 2]
    assert probes and all(later - earlier >= 4 for earlier, later in zip(probes, probes[1:]))  # tried again, not each block
    assert used[-1] == (2, False)  # back on both once the other process has gone


def test_a_run_that_starts_beside_a_busy_process_starts_on_one_thread():

    setter = FakeThreads()
    choice = ThreadChoice(2, setter, busy=os.cpu_count())
    assert choice.next_block() == (1, False)
    choice.restore()
    assert setter.restored == 1  # the settings from before the run come back once
    choice.restore()
    assert setter.restored == 1


def test_running_elsewhere_counts_other_processes_not_this_ones_threads():

    busy = running_elsewhere()
    if busy is None:
        pytest.skip("no /proc/loadavg here")
    assert busy >= 0


def test_numbas_threaded_softmax_covers_every_row_and_takes_concurrent_callers(rng):
    """numba's softmax splits its rows with prange from 2^16 entries (engine.SOFTMAX_WORK): every
    row once, rows not a multiple of the threads; two Python threads calling it at once (launches
    go one at a time: numba's workqueue layer would abort) both get the one-thread results."""
    from concurrent.futures import ThreadPoolExecutor

    import fastbp.backends.numba as numba_backend

    set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        x = rng.standard_normal((1001, 100))  # 100100 entries: threaded
        t = rng.integers(0, 100, 1001)
        y_one, loss_one = np.empty_like(x), np.empty(1001)
        numba_backend._softmax_xent_forward(x, t, y_one, loss_one)  # the serial worker: every row in order
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: numba_backend.softmax_cross_entropy_forward(x, t), range(4)))
        for loss, y in results:
            assert np.array_equal(y, y_one)
            assert loss == pytest.approx(loss_one.sum() / 1001, rel=1e-12)  # the same row losses, summed by NumPy
    finally:
        set_num_threads(numba.config.NUMBA_NUM_THREADS)
