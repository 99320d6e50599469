"""The engine (fastbp/engine.py): every backend's train_steps and predict_labels against the
reference's, on dense and mostly-zero inputs, every activation and update rule, any thread
count; and the contract the Python and C sides share."""

import numpy as np
import pytest

import fastbp
from fastbp import backends, engine
from fastbp.nets import MultiLayerNet


def mostly_zeros(rng, shape, dtype, zero_fraction=0.8):
    """Inputs like MNIST's: most entries exactly zero, so the native backend takes its compact-rows path."""
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < zero_fraction] = 0
    x[1] = 0  # a row with no nonzero at all
    return x


# first-layer widths: two whole vectors; more than one register block with a partial vector; narrower than a vector
SIZES = {"20-16-12-5": [20, 16, 12, 5], "30-75-7": [30, 75, 7], "9-3-4": [9, 3, 4]}


def train_both(backend, x, sizes, batches, activation="relu", optimizer="sgd", seed=0):
    """An MLP's train_steps and predict_labels on the reference and on `backend`, from the same start."""
    return run_both(backend, x, engine.mlp_program(sizes, activation), engine.parameter_count(sizes), batches,
                    optimizer, seed)


def run_both(backend, x, program, n_params, batches, optimizer="sgd", seed=0, decay=0.0):
    """train_steps and predict_labels of `program` on the reference and on `backend`, from the same start."""
    rng = np.random.default_rng(seed)
    start = (rng.standard_normal(n_params) * 0.3).astype(x.dtype)
    labels = rng.integers(0, program[-1, engine.FIELD_OUT], x.shape[0])
    hyper = engine.hyper_vector(x.dtype, 0.05, 0.9, 0.999, 1e-7, decay)
    results = {}
    for name in ("reference", backend):
        ops = backends.get(name)
        rows = ops.prepare_rows(x, program)
        params, grads = start.copy(), np.zeros_like(start)
        state, losses = np.zeros((2, n_params), x.dtype), np.zeros(len(batches))
        stats = np.zeros(engine.stats_size(program))  # batch normalization's running statistics, when there is one
        done = ops.train_steps(rows, labels, batches, params, grads, program, engine.OPTIMIZERS[optimizer], hyper, state, 0,
                               losses, stats)
        results[name] = (done, params, losses, ops.predict_labels(rows, params, program, stats), stats)
    return results["reference"], results[backend]


def assert_same_training(expected, actual, n_steps, dtype, param_atol=0.0):
    """``param_atol``: an absolute bound of the parameters' difference derived for the case, when
    larger than the general one below (the running statistics too: a running mean carries the
    bias before its batch normalization)."""
    (done_ref, p_ref, l_ref, y_ref, s_ref), (done, p, losses, y, stats) = expected, actual
    assert done == done_ref == n_steps
    # float32: 30 steps of rounding, amplified by Adam's division by sqrt(v)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(p, p_ref, rtol=tol, atol=max(tol * np.abs(p_ref).max(), param_atol))
    np.testing.assert_allclose(losses, l_ref, rtol=tol)
    np.testing.assert_allclose(stats, s_ref, rtol=tol, atol=max(tol * np.abs(s_ref).max(initial=0), param_atol))
    assert np.mean(y != y_ref) <= (0 if dtype == np.float64 else 0.01)  # float32: a near tie may flip


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("inputs", ["dense", "mostly-zero"])
@pytest.mark.parametrize("layout", list(SIZES))
def test_train_steps_matches_reference(backend, dtype, activation, optimizer, inputs, layout, rng):
    sizes = np.array(SIZES[layout])
    shape = (200, sizes[0])
    x = rng.standard_normal(shape).astype(dtype) if inputs == "dense" else mostly_zeros(rng, shape, dtype)
    batches = rng.integers(0, 200, (30, 8))
    batches[0, :2] = 1  # the all-zero row
    expected, actual = train_both(backend, x, sizes, batches, activation, optimizer)
    assert_same_training(expected, actual, 30, dtype)


@pytest.fixture
def native_threads():
    """Sets the native backend's OpenMP threads for one test, then restores them."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    before = _native.openmp()
    if before == 0:
        pytest.skip("the native backend is built without OpenMP")
    yield _native.set_num_threads
    _native.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch, decay", [(8, 0.0), (8, 0.3), (2, 0.0)], ids=["batch8", "batch8-decay", "batch2"])
def test_native_compact_training_on_any_thread_count(native_threads, row_isa, threads, optimizer, batch, decay, rng):
    """The compact step splits the first layer's columns between threads (more threads than
    cores here too, and 5 threads on 9 columns leaves some ranges nearly empty), and the later
    layers' rows: each thread runs its part of the batch, the parts' gradients summed and weight
    decay added once (a batch of 2 leaves 3 or 5 threads with parts of no rows)."""
    native_threads(threads)
    for layout in ("20-16-12-5", "9-3-4"):
        sizes = np.array(SIZES[layout])
        x = mostly_zeros(rng, (200, sizes[0]), np.float64)
        batches = rng.integers(0, 200, (30, batch))
        expected, actual = run_both("native", x, engine.mlp_program(sizes, "relu"), engine.parameter_count(sizes), batches,
                                    optimizer, decay=decay)
        assert_same_training(expected, actual, 30, np.float64)


# A later layer above FASTBP_OWN_PRODUCT weights (40 x 900) goes to BLAS; later layers each small
# enough for the row loops but of 17420 weights in all (130 x 130, 130 x 4: at least
# FASTBP_LATER_ON_BLAS, a deep MLP) go to BLAS's threads too. Either way a compact step then stays on
# one thread, where BLAS's own threads cannot fight it.
@pytest.mark.parametrize("sizes, activation", [([12, 40, 900, 3], "sigmoid"), ([30, 130, 130, 4], "relu")],
                         ids=["large-later-layer", "deep-mlp"])
@pytest.mark.parametrize("inputs", ["dense", "mostly-zero"])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_training_with_later_products_on_blas(native_threads, threads, inputs, sizes, activation, rng):
    native_threads(threads)
    k = sizes[0]
    x = rng.standard_normal((120, k)) if inputs == "dense" else mostly_zeros(rng, (120, k), np.float64)
    batches = rng.integers(0, 120, (8, 16))
    for optimizer in ("sgd", "adam"):
        expected, actual = train_both("native", x, np.array(sizes), batches, activation, optimizer)
        assert_same_training(expected, actual, 8, np.float64)


def test_native_compact_training_on_very_wide_rows(native_threads, row_isa, rng):
    """Column ranges times the batch above FASTBP_BUCKET_ENTRIES (4M): the step counts each
    column's entries and packs them instead of giving every column a bucket of batch places."""
    native_threads(2)
    n_rows, k, batch = 240, 45000, 200  # each of 2 ranges: about 22500 columns x 200 places
    x = np.zeros((n_rows, k), np.float32)
    where = rng.integers(0, k, (n_rows, 40))
    x[np.arange(n_rows)[:, None], where] = rng.standard_normal((n_rows, 40)).astype(np.float32)
    batches = rng.integers(0, n_rows, (3, batch))
    expected, actual = train_both("native", x, np.array([k, 12, 3]), batches)
    assert_same_training(expected, actual, 3, np.float32)


def test_native_keeps_mostly_zero_sets_as_compact_rows(rng):
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp.backends import native

    sparse = mostly_zeros(rng, (50, 30), np.float32)
    program = engine.mlp_program([30, 4, 2], "relu")
    rows = native.prepare_rows(sparse, program)
    assert isinstance(rows, native.CompactRows)
    assert rows.shape == (50, 30) and rows.nnz == np.count_nonzero(sparse)
    assert f"density={np.count_nonzero(sparse) / sparse.size:.3f}" in repr(rows)
    dense = rng.standard_normal((50, 30))
    assert native.prepare_rows(dense, program) is dense  # dense sets stay as they are: BLAS is faster on them
    with pytest.raises(native.TooDense, match="1.000 of the entries are nonzero, more than max_density 0.4"):
        native.CompactRows(dense, max_density=0.4)
    empty = np.zeros((0, 30))
    assert native.prepare_rows(empty, program) is empty
    # the threshold: 100 entries, as many nonzero as allowed, then one more
    edge = np.zeros((10, 10))
    edge.flat[: int(native.COMPACT_MAX_DENSITY * 100)] = 1.0
    assert isinstance(native.prepare_rows(edge, program), native.CompactRows)
    edge.flat[int(native.COMPACT_MAX_DENSITY * 100)] = 1.0
    assert native.prepare_rows(edge, program) is edge


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compact_rows_keep_nan_and_inf(row_isa, dtype, rng):
    """NaN != 0, so a NaN pixel is kept, and the loss it poisons stops training as on dense rows."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp.backends import native

    sizes = np.array([10, 8, 2])
    x = mostly_zeros(rng, (6, 10), dtype)
    x[3, 4] = np.nan
    params = np.full(engine.parameter_count(sizes), 0.1, dtype)
    losses = np.zeros(3)
    rows = native.prepare_rows(x, engine.mlp_program(sizes, "relu"))
    assert isinstance(rows, native.CompactRows)
    done = native.train_steps(rows, np.zeros(6, np.int64), np.array([[0, 2], [3, 5], [0, 1]]), params,
                              np.zeros_like(params), engine.mlp_program(sizes, "relu"), engine.SGD,
                              engine.hyper_vector(dtype, 0.1), np.zeros((2, params.size), dtype), 0, losses)
    assert done == 1 and np.isfinite(params).all()


@pytest.mark.parametrize("x_dtype, net_dtype", [(np.float64, np.float64), (np.float32, np.float32),
                                               (np.float32, np.float64)])
@pytest.mark.parametrize("inputs", ["dense", "mostly-zero"])
@pytest.mark.parametrize("n_rows", [3, 2100], ids=["few-rows", "two-chunks"])
def test_native_predicts_dense_rows_as_the_reference(x_dtype, net_dtype, inputs, n_rows, rng):
    """Dense rows given as they are: mostly-zero ones compacted as read (the first layer from each
    row's nonzeros, on every thread), float32 ones into a float64 net converted in C (a few rows:
    the dense path); the labels the reference gets from the same rows in the net's dtype."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    sizes = np.array(SIZES["30-75-7"])  # 75 outputs: a register block and a partial vector
    program = engine.mlp_program(sizes, "relu")
    params = (rng.standard_normal(engine.parameter_count(sizes)) * 0.3).astype(net_dtype)
    x = rng.standard_normal((n_rows, sizes[0])) if inputs == "dense" else mostly_zeros(rng, (n_rows, sizes[0]), np.float64)
    x = x.astype(x_dtype)
    expected = backends.get("reference").predict_labels(x.astype(net_dtype), params, program)
    labels = backends.get("native").predict_labels(x, params, program)
    # float64: the same labels (sums in another order differ in the last bits, no tie that close
    # here); float32: a near tie may flip
    assert np.mean(labels != expected) <= (0 if net_dtype == np.float64 else 0.01)


def test_native_compacting_dense_rows_keeps_non_finite_weights_spreading(rng):
    """A weight row that is inf where every input is zero: the dense product's 0 * inf is NaN in
    every row, so the compacting path (which skips the zeros) must decline, as the layers do."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    sizes = np.array([30, 75, 7])
    program = engine.mlp_program(sizes, "relu")
    params = rng.standard_normal(engine.parameter_count(sizes))
    params[5 * 75:6 * 75] = np.inf  # W1's row 5
    x = mostly_zeros(rng, (300, 30), np.float64)
    x[:, 5] = 0
    with np.errstate(invalid="ignore"):  # 0 * inf: NaN, as meant
        expected = backends.get("reference").predict_labels(x, params, program)
    np.testing.assert_array_equal(backends.get("native").predict_labels(x.astype(np.float32), params, program), expected)
    np.testing.assert_array_equal(backends.get("native").predict_labels(x, params, program), expected)


@pytest.mark.parametrize("inputs", ["dense", "mostly-zero"])
def test_train_steps_stops_before_applying_a_non_finite_step(backend, inputs):
    """(Mostly zeros: the native engine's compact step, whose later layers run split by rows.)"""
    sizes = np.array([3, 4, 2] if inputs == "dense" else [10, 4, 2])
    params = np.ones(engine.parameter_count(sizes))
    x = np.ones((4, 3)) if inputs == "dense" else np.eye(4, 10)
    x[2, 1] = np.inf  # sample 2 poisons the loss
    batches = np.array([[0, 0], [2, 3], [0, 1]])  # step 0: one sample twice, so its gradient cannot cancel
    losses = np.zeros(3)
    before = params.copy()
    ops, program = backends.get(backend), engine.mlp_program(sizes, "relu")
    done = ops.train_steps(ops.prepare_rows(x, program), np.array([0, 1, 0, 1]), batches, params, np.zeros_like(params),
                           program, engine.SGD, engine.hyper_vector(np.float64, 0.1), np.zeros((2, params.size)), 0,
                           losses)
    assert done == 1  # step 0 ran, step 1 hit the inf, step 2 never ran
    assert np.isfinite(params).all() and not np.array_equal(params, before)


def test_the_native_engine_numbers_ops_as_fastbp_engine_does():
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    constants = _native.constants()
    assert constants["OP_FIELDS"] == engine.OP_FIELDS and constants["ADAM"] == engine.ADAM
    engine.check_native(constants)
    with pytest.raises(ImportError, match=r"'RELU': \(7, 1\).*rebuild it"):
        engine.check_native(constants | {"RELU": 7})


@pytest.mark.parametrize("t", [1, 2, 10, 1000])
def test_adams_step_size_is_the_same_in_python_and_c(t):
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    python = engine.adam_step_size(0.001, 0.9, 0.999, t)
    assert _native.adam_step_size(0.001, 0.9, 0.999, t) == pytest.approx(python, rel=4 * np.finfo(float).eps)
    assert python == pytest.approx(0.001 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t), rel=1e-15)


def test_an_mlp_program_lays_its_parameters_out_as_the_network_does():
    program = engine.mlp_program([6, 5, 4, 3], "sigmoid")
    codes = program[:, engine.FIELD_CODE].tolist()
    assert codes == [engine.AFFINE, engine.SIGMOID, engine.AFFINE, engine.SIGMOID, engine.AFFINE, engine.SOFTMAX_LOSS]
    flat = np.arange(engine.parameter_count([6, 5, 4, 3]), dtype=np.float64)
    views = MultiLayerNet(6, [5, 4], 3, activation="sigmoid", dtype=np.float64).param_views(flat)
    for i, op in enumerate(program[::2], start=1):
        W, b = views[f"W{i}"], views[f"b{i}"]
        assert W.base is flat and W[0, 0] == op[engine.FIELD_PARAM_AT] and W.shape == tuple(op[[2, 3]])
        assert b[0] == op[engine.FIELD_PARAM_AT] + W.size


def test_the_native_engine_refuses_a_malformed_program():
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    sizes = [3, 4, 2]
    params = np.zeros(engine.parameter_count(sizes))
    good = engine.mlp_program(sizes, "relu")

    def predict(program):
        _native.predict_labels(np.zeros((2, 3)), 2, params, program, np.empty(0), 16, np.zeros(2, np.int64))

    predict(good)
    for change, match in (((0, engine.FIELD_PARAM_AT, 20), "parameters outside"), ((1, engine.FIELD_IN, 5), "input is not"),
                          ((3, engine.FIELD_CODE, engine.RELU), "end with the loss"), ((1, engine.FIELD_CODE, 9), "unknown op"),
                          ((2, engine.FIELD_OUT, 0), "size outside")):
        bad = good.copy()
        bad[change[:2]] = change[2]
        with pytest.raises(ValueError, match=match):
            predict(bad)


@pytest.mark.skipif("native" not in fastbp.available_backends(), reason="the native backend is not built here")
@pytest.mark.parametrize("compact", [False, True], ids=["dense", "compact"])
def test_ctrl_c_stops_the_native_engine_between_steps_and_keeps_the_steps_it_applied(compact):
    import os
    import signal
    import sys
    import threading
    import time

    from fastbp.backends import native

    rng = np.random.default_rng(0)
    sizes = np.array([784, 50, 10])
    x = rng.random((300, 784)).astype(np.float32)
    if compact:
        x[x < 0.8] = 0  # MNIST-like: mostly zeros, so prepare_rows compacts it
    labels = rng.integers(0, 10, 300)
    program = engine.mlp_program(sizes, "relu")
    rows = native.prepare_rows(x, program)
    assert isinstance(rows, native.CompactRows) == compact
    start = (rng.standard_normal(engine.parameter_count(sizes)) * 0.01).astype(np.float32)
    batches = rng.integers(0, 300, (100_000, 20))  # seconds of steps: the signal comes long before the end
    hyper = engine.hyper_vector(np.float32, 0.01)

    def train(params, steps):
        losses = np.zeros(steps)
        return native.train_steps(rows, labels, batches[:steps], params, np.zeros_like(params), program, engine.SGD, hyper,
                                  np.zeros((2, params.size), np.float32), 0, losses), losses

    main = threading.main_thread().ident

    def interrupt_once_inside():  # Ctrl-C while the main thread is in the C call, not before
        while sys._current_frames()[main].f_code.co_name != "train_steps":
            time.sleep(0.001)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    params = start.copy()
    threading.Thread(target=interrupt_once_inside, daemon=True).start()
    with pytest.raises(engine.StepsInterrupted) as stop:
        train(params, len(batches))
    done = stop.value.done
    assert 0 < done < len(batches)
    assert isinstance(stop.value, KeyboardInterrupt)  # what callers that know nothing of it catch
    again = start.copy()
    steps, losses = train(again, done)  # the same steps, not interrupted: the same weights and losses
    assert steps == done
    np.testing.assert_array_equal(params, again)
    np.testing.assert_array_equal(stop.value.losses, losses)
    with pytest.raises(KeyboardInterrupt):  # and Python's own handler is back in place
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
