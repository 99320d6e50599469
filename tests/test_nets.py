"""Networks (the seed's API), the whole-network backend ops, and the optimizers."""

import numpy as np
import pytest

import fastbp
from fastbp import backends
from fastbp.backends import _network
from fastbp.nets import MultiLayerNet, TwoLayerNet, init_std
from fastbp.optim import Adam, Momentum, SGD


def test_two_layer_net_has_the_seeds_api():
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert [net.params[k].shape for k in net.params] == [(784, 50), (50,), (50, 10), (10,)]
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert isinstance(net.last_layer, fastbp.SoftmaxWithLoss)
    assert net.params["W1"].dtype == np.float64
    assert net.layers["Affine1"].W is net.params["W1"]
    assert np.all(net.params["b1"] == 0)
    assert np.std(net.params["W1"]) == pytest.approx(0.01, rel=0.05)


def test_in_place_updates_reach_the_layers_and_the_flat_buffer(rng):
    net = TwoLayerNet(4, 3, 2, seed=0)
    x = rng.standard_normal((5, 4))
    net.params["W1"] -= 0.5
    np.testing.assert_array_equal(net.layers["Affine1"].W, net.params["W1"])
    assert np.shares_memory(net.flat_params, net.params["W1"])
    before = net.predict(x)
    net.params["b2"] += 1.0
    np.testing.assert_allclose(net.predict(x), before + 1.0)
    net.params["W1"] = np.zeros((4, 3))  # rebinding cuts the link: the trainer refuses it
    with pytest.raises(RuntimeError, match=r"params\['W1'\] was replaced"):
        net.check_params_in_place()


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_backprop_matches_numerical_gradient(backend, activation, rng):
    net = MultiLayerNet(6, [5, 4], 3, activation=activation, weight_init_std=0.5, dtype=np.float64,
                        backend=backend, seed=1)
    x, t = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])
    report = fastbp.compare_gradients(net.gradient(x, t), net.numerical_gradient(x, t))
    assert report.passed(rtol=1e-6), str(report)


def test_gradient_skips_the_input_gradient_of_the_first_layer(backend, rng, monkeypatch):
    """The seed's gradient() threw the first layer's dx away; fastbp's never computes it."""
    ops = backends.get(backend)
    asked = []
    real_affine_backward = ops.affine_backward

    def recording_affine_backward(dout, x, W, need_dx=True):
        asked.append((W.shape, need_dx))
        return real_affine_backward(dout, x, W, need_dx)

    monkeypatch.setattr(ops, "affine_backward", recording_affine_backward)
    net = MultiLayerNet(6, [5, 4], 3, dtype=np.float64, backend=backend, seed=1)
    net.gradient(rng.standard_normal((4, 6)), np.array([0, 2, 1, 2]))
    assert asked == [((4, 3), True), ((5, 4), True), ((6, 5), False)]


def test_predict_labels_converts_other_dtypes_a_chunk_at_a_time(backend, rng):
    net = TwoLayerNet(12, 9, 4, weight_init_std=0.5, backend=backend, seed=3)  # float64, as the seed
    net.PREDICT_CHUNK = 7  # 20 rows: two whole chunks and a partial one
    x = rng.standard_normal((20, 12)).astype(np.float32)
    expected = np.argmax(net.predict(x.astype(np.float64)), axis=1)
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    np.testing.assert_array_equal(net.predict_labels(np.asfortranarray(x)), expected)  # not C-contiguous either


def test_weight_init_schemes():
    assert init_std("he", 50, "relu") == pytest.approx(np.sqrt(2 / 50))
    assert init_std("xavier", 50, "sigmoid") == pytest.approx(np.sqrt(1 / 50))
    assert init_std("auto", 50, "sigmoid") == init_std("xavier", 50, "sigmoid")
    assert init_std(0.01, 50, "relu") == 0.01
    with pytest.raises(ValueError, match="'he', 'xavier'"):
        init_std("lecun", 50, "relu")
    with pytest.raises(ValueError, match="positive"):
        init_std(-1.0, 50, "relu")
    net = MultiLayerNet(1000, [500], 10, weight_init_std="he", seed=0)
    assert np.std(net.params["W1"]) == pytest.approx(np.sqrt(2 / 1000), rel=0.02)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="positive integers"):
        MultiLayerNet(784, [0], 10)
    with pytest.raises(ValueError, match="activation must be one of"):
        MultiLayerNet(784, [50], 10, activation="tanh")
    with pytest.raises(TypeError, match="float32 or float64"):
        MultiLayerNet(784, [50], 10, dtype=np.int32)
    net = MultiLayerNet(4, [3], 2)
    with pytest.raises(ValueError, match=r"x of shape \(2, 5\) does not fit a network with 4 inputs"):
        net.accuracy(np.zeros((2, 5), np.float32), np.array([0, 1]))


def test_accuracy_and_predict_labels_agree_with_predict(backend, dtype, rng):
    net = MultiLayerNet(8, [6, 5], 4, dtype=dtype, backend=backend, seed=3, weight_init_std=1.0)
    x = rng.standard_normal((3000, 8)).astype(dtype)  # more rows than one predict chunk
    expected = np.argmax(net.predict(x), axis=1)
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    t = rng.integers(0, 4, 3000)
    assert net.accuracy(x, t) == pytest.approx(np.mean(expected == t))
    assert net.accuracy(x, np.eye(4)[t]) == net.accuracy(x, t)


def test_save_and_load(tmp_path, rng):
    net = MultiLayerNet(5, [4, 3], 2, activation="sigmoid", dtype=np.float64, seed=0)
    net.save(tmp_path / "w.npz")
    copy = MultiLayerNet.load(tmp_path / "w.npz")
    assert copy.activation == "sigmoid" and copy.dtype == np.float64
    x = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(copy.predict(x), net.predict(x))
    other = MultiLayerNet(5, [4], 2)
    with pytest.raises(ValueError, match="saved layer sizes"):
        other.load_params(tmp_path / "w.npz")


# ---- whole-network backend ops: the fused kernels against the reference ---------------------

def mostly_zeros(rng, shape, dtype, zero_fraction=0.8):
    """Inputs like MNIST's: most entries exactly zero, so the native backend takes its compact-rows path."""
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < zero_fraction] = 0
    x[1] = 0  # a row with no nonzero at all
    return x


# first-layer widths: two whole vectors; more than one register block with a partial vector; narrower than a vector
SIZES = {"20-16-12-5": [20, 16, 12, 5], "30-75-7": [30, 75, 7], "9-3-4": [9, 3, 4]}


def train_both(backend, x, sizes, batches, activation="relu", optimizer="sgd", seed=0):
    """train_steps and predict_labels on the reference and on `backend`, from the same start."""
    rng = np.random.default_rng(seed)
    n_params = _network.parameter_count(sizes)
    start = (rng.standard_normal(n_params) * 0.3).astype(x.dtype)
    labels = rng.integers(0, sizes[-1], x.shape[0])
    hyper = np.array([0.05, 0.9, 0.999, 1e-7], x.dtype)
    results = {}
    for name in ("reference", backend):
        ops = backends.get(name)
        rows = ops.prepare_rows(x)
        params, grads = start.copy(), np.zeros_like(start)
        state, losses = np.zeros((2, n_params), x.dtype), np.zeros(len(batches))
        done = ops.train_steps(rows, labels, batches, params, grads, sizes, _network.ACTIVATIONS[activation],
                               _network.OPTIMIZERS[optimizer], hyper, state, 0, losses)
        results[name] = (done, params, losses, ops.predict_labels(rows, params, sizes, _network.ACTIVATIONS[activation]))
    return results["reference"], results[backend]


def assert_same_training(expected, actual, n_steps, dtype):
    (done_ref, p_ref, l_ref, y_ref), (done, p, losses, y) = expected, actual
    assert done == done_ref == n_steps
    # float32: 30 steps of rounding, amplified by Adam's division by sqrt(v)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(p, p_ref, rtol=tol, atol=tol * np.abs(p_ref).max())
    np.testing.assert_allclose(losses, l_ref, rtol=tol)
    assert np.mean(y != y_ref) <= (0 if dtype == np.float64 else 0.01)  # float32: a near tie may flip


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
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
def test_native_compact_training_on_any_thread_count(native_threads, threads, optimizer, rng):
    """The compact step splits the first layer's columns between threads (more threads than
    cores here too, and 5 threads on 9 columns leaves some ranges nearly empty)."""
    native_threads(threads)
    for layout in ("20-16-12-5", "9-3-4"):
        sizes = np.array(SIZES[layout])
        x = mostly_zeros(rng, (200, sizes[0]), np.float64)
        batches = rng.integers(0, 200, (30, 8))
        expected, actual = train_both("native", x, sizes, batches, "relu", optimizer)
        assert_same_training(expected, actual, 30, np.float64)


@pytest.mark.parametrize("inputs", ["dense", "mostly-zero"])
def test_native_training_with_a_large_later_layer(native_threads, inputs, rng):
    """A later layer above FASTBP_OWN_PRODUCT weights (40 x 900) goes to BLAS, and the compact
    step then stays on one thread, where BLAS's own threads cannot fight it."""
    native_threads(2)
    sizes = np.array([12, 40, 900, 3])
    x = rng.standard_normal((100, 12)) if inputs == "dense" else mostly_zeros(rng, (100, 12), np.float64)
    batches = rng.integers(0, 100, (10, 16))
    for optimizer in ("sgd", "adam"):
        expected, actual = train_both("native", x, sizes, batches, "sigmoid", optimizer)
        assert_same_training(expected, actual, 10, np.float64)


def test_native_compact_training_on_very_wide_rows(native_threads, rng):
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
    rows = native.prepare_rows(sparse)
    assert isinstance(rows, native.CompactRows)
    assert rows.shape == (50, 30) and rows.nnz == np.count_nonzero(sparse)
    assert f"density={np.count_nonzero(sparse) / sparse.size:.3f}" in repr(rows)
    dense = rng.standard_normal((50, 30))
    assert native.prepare_rows(dense) is dense  # dense sets stay as they are: BLAS is faster on them
    with pytest.raises(native.TooDense, match="1.000 of the entries are nonzero, more than max_density 0.4"):
        native.CompactRows(dense, max_density=0.4)
    empty = np.zeros((0, 30))
    assert native.prepare_rows(empty) is empty
    # the threshold: 100 entries, as many nonzero as allowed, then one more
    edge = np.zeros((10, 10))
    edge.flat[: int(native.COMPACT_MAX_DENSITY * 100)] = 1.0
    assert isinstance(native.prepare_rows(edge), native.CompactRows)
    edge.flat[int(native.COMPACT_MAX_DENSITY * 100)] = 1.0
    assert native.prepare_rows(edge) is edge


def test_compact_rows_keep_nan_and_inf(rng):
    """NaN != 0, so a NaN pixel is kept, and the loss it poisons stops training as on dense rows."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp.backends import native

    sizes = np.array([10, 8, 2])
    x = mostly_zeros(rng, (6, 10), np.float64)
    x[3, 4] = np.nan
    params = np.full(_network.parameter_count(sizes), 0.1)
    losses = np.zeros(3)
    rows = native.prepare_rows(x)
    assert isinstance(rows, native.CompactRows)
    done = native.train_steps(rows, np.zeros(6, np.int64), np.array([[0, 2], [3, 5], [0, 1]]), params,
                              np.zeros_like(params), sizes, 0, 0, np.array([0.1, 0, 0, 0]),
                              np.zeros((2, params.size)), 0, losses)
    assert done == 1 and np.isfinite(params).all()


def test_train_steps_stops_before_applying_a_non_finite_step(backend):
    sizes = np.array([3, 4, 2])
    params = np.ones(_network.parameter_count(sizes))
    x = np.ones((4, 3))
    x[2, 1] = np.inf  # sample 2 poisons the loss
    batches = np.array([[0, 0], [2, 3], [0, 1]])  # step 0: one sample twice, so its gradient cannot cancel
    losses = np.zeros(3)
    before = params.copy()
    done = backends.get(backend).train_steps(x, np.array([0, 1, 0, 1]), batches, params, np.zeros_like(params), sizes,
                                             0, 0, np.array([0.1, 0, 0, 0]), np.zeros((2, params.size)), 0, losses)
    assert done == 1  # step 0 ran, step 1 hit the inf, step 2 never ran
    assert np.isfinite(params).all() and not np.array_equal(params, before)


# ---- optimizers --------------------------------------------------------------------------

def textbook_momentum(p, g, v, lr, momentum):
    v = momentum * v - lr * g
    return p + v, v


def textbook_adam(p, g, m, v, lr, b1, b2, eps, t):
    lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g**2 - v)
    return p - lr_t * m / (np.sqrt(v) + eps), m, v


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_momentum_and_adam_follow_the_textbook(backend, dtype, kind, rng):
    shape = (300, 300)  # large enough for the threaded path of big arrays to be irrelevant; see benchmarks
    p0, grads = rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(3)]
    opt = Momentum(lr=0.1, momentum=0.9, backend=backend) if kind == "momentum" else Adam(lr=0.01, backend=backend)
    params = {"W": p0.astype(dtype)}
    expected, state1, state2 = p0.copy(), np.zeros(shape), np.zeros(shape)
    for t, g in enumerate(grads, start=1):
        opt.update(params, {"W": g.astype(dtype)})
        if kind == "momentum":
            expected, state1 = textbook_momentum(expected, g.astype(dtype).astype(np.float64), state1, 0.1, 0.9)
        else:
            expected, state1, state2 = textbook_adam(expected, g.astype(dtype).astype(np.float64), state1, state2,
                                                     0.01, 0.9, 0.999, 1e-7, t)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(params["W"], expected, rtol=tol, atol=tol)


def test_optimizer_arguments_are_checked():
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        Momentum(momentum=1.5)
    with pytest.raises(ValueError, match="lr must be positive"):
        Adam(lr=0)
    with pytest.raises(TypeError, match="lr must be a real number"):
        SGD(lr="fast")


# ---- using a trained network: loading, predicting, refusing bad files and inputs ---------------

def test_two_layer_net_loads_what_it_saved(tmp_path, rng):
    net = TwoLayerNet(6, 4, 3, seed=1)
    net.save(tmp_path / "w.npz")
    again = TwoLayerNet.load(tmp_path / "w.npz")
    assert isinstance(again, TwoLayerNet) and again.dtype == np.float64
    x = rng.standard_normal((2, 6))
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    MultiLayerNet(6, [4, 4], 3).save(tmp_path / "deep.npz")
    with pytest.raises(ValueError, match="is not a TwoLayerNet.*MultiLayerNet.load"):
        TwoLayerNet.load(tmp_path / "deep.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prediction_refuses_non_finite_input(backend, bad):
    net = MultiLayerNet(4, [3], 2, backend=backend, seed=0)
    x = np.full((3, 4), bad, np.float32)  # all-NaN input gave accuracy 1.0
    for call in (lambda: net.accuracy(x, np.array([0, 0, 0])), lambda: net.predict_labels(x), lambda: net.predict_proba(x)):
        with pytest.raises(ValueError, match=r"x has 12 non-finite value"):
            call()


def test_one_sample_is_predicted(backend, rng):
    net = MultiLayerNet(784, [5], 10, backend=backend, seed=0)
    images = rng.random((3, 784), dtype=np.float32)
    labels, probs = net.predict_labels(images), net.predict_proba(images)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probs, axis=1), labels)
    for i in range(3):
        assert net.predict_labels(images[i]) == labels[i]
        assert net.predict_labels(images[i].reshape(1, 28, 28)) == labels[i:i + 1]
        np.testing.assert_allclose(net.predict_proba(images[i]), probs[i], rtol=1e-6)
        assert net.accuracy(images[i], labels[i]) == 1.0
        assert net.accuracy(images[i], np.eye(10)[labels[i]]) == 1.0


def test_a_network_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(MemoryError, match=r"a 784-1000000000-10 network \(795,000,000,010 float32 parameters\) needs"):
        MultiLayerNet(784, [10**9], 10)


def crafted(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_checks_every_array_of_the_file_before_building(tmp_path):
    good = dict(sizes=np.array([3, 2, 2]), activation=np.array("relu"), W1=np.ones((3, 2)), b1=np.zeros(2),
                W2=np.ones((2, 2)), b2=np.zeros(2))
    cases = [
        (dict(good, W1=np.float64(1.0)), r"'W1' has shape \(\), expected \(3, 2\)"),  # was broadcast into the net
        (dict(good, W2=np.full((2, 2), np.nan)), r"'W2' has 4 non-finite values"),
        (dict(good, sizes=np.array([20000, 20000, 10])), r"'W1' has shape \(3, 2\), expected \(20000, 20000\)"),
        ({k: v for k, v in good.items() if k != "b2"}, r"'b2' is missing"),
        ({k: v for k, v in good.items() if k != "sizes"}, r"'sizes' is missing"),
        (dict(good, activation=np.array("tanh")), r"'activation' must be one of"),
        (dict(good, W2=np.ones((2, 2), np.float32)), r"'W2' has dtype float32, expected float64"),
        (dict(good, W1=np.ones((3, 2), np.int64)), r"'W1' has dtype int64, expected float32 or float64"),
        (dict(good, sizes=np.array([3, -2, 2])), r"'sizes' must be positive"),
        (dict(good, extra=np.ones(3)), r"'extra' is not a key of a weights file"),
    ]
    for i, (arrays, match) in enumerate(cases):
        path = crafted(tmp_path / f"w{i}.npz", **arrays)
        with pytest.raises(ValueError, match=rf"{path}: {match}"):
            MultiLayerNet.load(path)
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match=rf"{not_npz}: not a weights file written by fastbp"):
        MultiLayerNet.load(not_npz)
    MultiLayerNet.load(crafted(tmp_path / "good.npz", **good))


def test_a_huge_declared_array_is_refused_from_its_header(tmp_path):
    """A 1.5 KB file whose W1 header declares 20000 x 20000: refused before any array is read."""
    path = tmp_path / "w.npz"
    MultiLayerNet(3, [2], 2).save(path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.ones((3, 2), np.float32))
    header["shape"] = (20000, 20000)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["W1.npy"] = buf.getvalue() + b"\0" * 24
    members["sizes.npy"] = members["sizes.npy"]
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    assert path.stat().st_size < 4096
    with pytest.raises(ValueError, match=r"'W1' has shape \(20000, 20000\), expected \(3, 2\)"):
        MultiLayerNet.load(path)
