"""Differential tests: every layer on every backend matches the reference layer, in float32 and
float64, at the seed's shapes, odd shapes, batch 1 and non-contiguous inputs; in float64 every
layer's backward also matches finite differences (fastbp.testing.check_layer does both)."""

import numpy as np
import pytest

import fastbp
import fastbp.threads
from fastbp import reference
from fastbp.testing import check_layer

# (batch, in_features, out_features): batch 1, odd sizes, the seed's 784->50 and 50->10; odd sizes
# just past FASTBP_OWN_PRODUCT (native: split between the OpenMP threads, affine_forward_layer);
# at most FASTBP_FEW_ROWS rows (native's own row loops for x W and x^T dout), widths a whole
# number of vectors and not: the book's layers at batch 1 and 3, and 6 x 37 x 11
AFFINE_SHAPES = [(1, 3, 2), (7, 13, 5), (100, 784, 50), (100, 50, 10), (9, 331, 101), (1, 50, 10), (3, 784, 50),
                 (6, 37, 11)]
# finite differences cost two forwards per parameter: run them where that stays cheap
GRADCHECK_MAX_PARAMS = 2000


def layouts(x):
    """The same values as a C array, a Fortran array and a strided view."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    wide[..., ::2] = x
    return {"C": x, "F": np.asfortranarray(x), "strided": wide[..., ::2]}


def away_from_zero(rng, shape, dtype, margin=0.1):
    """Values whose magnitude exceeds ``margin``: ReLU has no kink within a finite-difference step."""
    x = rng.standard_normal(shape)
    return (np.sign(x) * (np.abs(x) + margin)).astype(dtype)


@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_affine_matches_reference(backend, dtype, shape, layout, rng):
    n, d_in, d_out = shape
    x = layouts(rng.standard_normal((n, d_in)).astype(dtype))[layout]
    W = (rng.standard_normal((d_in, d_out)) * 0.1).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    small = W.size <= GRADCHECK_MAX_PARAMS
    check_layer(
        fastbp.Affine(W.copy(), b.copy(), backend=backend),
        reference.Affine(W.copy(), b.copy()),
        x,
        gradcheck="auto" if small else False,
    )


def test_affine_flattens_nd_input_and_restores_its_shape(backend, dtype, rng):
    x = rng.standard_normal((5, 1, 4, 4)).astype(dtype)  # (N, C, H, W) images, as MNIST with flatten=False
    W = rng.standard_normal((16, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    layer = fastbp.Affine(W, b, backend=backend)
    report = check_layer(layer, reference.Affine(W.copy(), b.copy()), x)
    assert layer.original_x_shape == (5, 1, 4, 4)
    assert layer.x.shape == (5, 16)
    assert dtype == np.float32 or "d(input 0) vs finite diff" in [c.quantity for c in report.comparisons]


def test_affine_backward_params_sets_the_gradients_of_backward(backend, dtype, rng):
    x = rng.standard_normal((6, 2, 4)).astype(dtype)
    W = rng.standard_normal((8, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    dout = rng.standard_normal((6, 3)).astype(dtype)
    full, params_only = fastbp.Affine(W, b, backend=backend), fastbp.Affine(W, b, backend=backend)
    full.forward(x)
    params_only.forward(x)
    assert full.backward(dout).shape == x.shape
    assert params_only.backward_params(dout) is None
    rtol = 1e-5 if dtype == np.float32 else 1e-12  # the same sums, maybe by another kernel (BLAS or a loop)
    np.testing.assert_allclose(params_only.dW, full.dW, rtol=rtol)
    np.testing.assert_allclose(params_only.db, full.db, rtol=rtol)
    with pytest.raises(RuntimeError, match="before forward"):
        fastbp.Affine(W, b, backend=backend).backward_params(dout)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (100, 50), (3, 2, 5)], ids=str)
@pytest.mark.parametrize("layer_name", ["Relu", "Sigmoid"])
def test_activations_match_reference(backend, dtype, shape, layer_name, rng):
    x = away_from_zero(rng, shape, dtype) * 3
    for view in layouts(x).values():
        check_layer(getattr(fastbp, layer_name)(backend=backend), getattr(reference, layer_name)(), view)


@pytest.fixture
def threaded_loops(monkeypatch):
    """Thread every elementwise loop, whatever its size, so that the threaded kernels are tested."""
    import fastbp.backends.numba as numba_backend

    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_ELEMENTS", 1)
    if "native" in fastbp.available_backends():
        from fastbp import _native
        from fastbp.threads import PARALLEL_MIN_ELEMENTS

        _native.set_parallel_min(1)
        fastbp.threads.set_num_threads(2)
        yield
        _native.set_parallel_min(PARALLEL_MIN_ELEMENTS)
    else:
        yield


def test_threaded_elementwise_kernels_match_reference(backend, dtype, rng, threaded_loops):
    x = away_from_zero(rng, (256, 1024), dtype)
    for layer_name in ("Relu", "Sigmoid"):
        check_layer(getattr(fastbp, layer_name)(backend=backend), getattr(reference, layer_name)(), x, gradcheck=False)
    t = rng.integers(0, 1024, 256)
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t, gradcheck=False)
    check_layer(fastbp.IdentityWithLoss(backend=backend), reference.IdentityWithLoss(), x, x[::-1].copy(), gradcheck=False)


@pytest.mark.parametrize("shape", [(1, 2), (7, 13), (100, 10), (1024, 100)], ids=str)
@pytest.mark.parametrize("labels", ["integer", "one-hot"])
def test_softmax_with_loss_matches_reference(backend, dtype, shape, labels, rng):
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, c, n)
    if labels == "one-hot":
        t = np.eye(c)[t]
    check_layer(
        fastbp.SoftmaxWithLoss(backend=backend),
        reference.SoftmaxWithLoss(),
        x,
        t,
        gradcheck="auto" if x.size <= GRADCHECK_MAX_PARAMS else False,
    )


@pytest.mark.parametrize("dout", [1.0, 0.5, -3.0, 0.0])
def test_softmax_with_loss_honours_dout(backend, dtype, dout, rng):
    x = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.integers(0, 4, 6)
    layer = fastbp.SoftmaxWithLoss(backend=backend)
    layer.forward(x, t)
    unit = layer.backward(1.0)
    np.testing.assert_allclose(layer.backward(dout), dout * unit, rtol=1e-6, atol=0)
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t, dout=dout)


@pytest.mark.parametrize("magnitude", [1e4, 1e30])
def test_softmax_with_loss_is_stable_for_huge_logits(backend, dtype, magnitude, rng):
    n, c = 8, 5
    x = (rng.choice([-1.0, 1.0], (n, c)) * magnitude + rng.standard_normal((n, c))).astype(dtype)
    t = rng.integers(0, c, n)
    layer = fastbp.SoftmaxWithLoss(backend=backend)
    loss = layer.forward(x, t)
    dx = layer.backward()
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(layer.y)) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(layer.y.sum(axis=1), 1, rtol=1e-6)
    # exact value in float64: -log softmax(x)[t] = logsumexp(x) - x[t]
    x64 = x.astype(np.float64)
    top = x64.max(axis=1)
    expected = np.mean(top + np.log(np.exp(x64 - top[:, None]).sum(axis=1)) - x64[np.arange(n), t])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t, gradcheck=False)


@pytest.mark.parametrize("c", [5, 8, 13, 37])
def test_softmax_with_loss_finds_a_lone_peak_at_every_column(backend, dtype, c, rng):
    # row i's one huge logit at column i: the shift by the row maximum must find it wherever it is
    # (in the compiled kernels' vector part or its tail), or exp(1e4 - the rest) overflows
    x = rng.standard_normal((c, c)).astype(dtype)
    x[np.arange(c), np.arange(c)] = 1e4
    t = (np.arange(c) + 1) % c  # the labels away from the peaks: losses of about 1e4
    layer = fastbp.SoftmaxWithLoss(backend=backend)
    loss = layer.forward(x, t)
    dx = layer.backward()
    assert np.all(np.isfinite(layer.y)) and np.all(np.isfinite(dx))
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t, gradcheck=False)
    assert np.isfinite(loss)


def test_softmax_with_loss_single_sample(backend, rng):
    x = rng.standard_normal(5)
    layer = fastbp.SoftmaxWithLoss(backend=backend)
    loss = layer.forward(x, 3)
    batch = fastbp.SoftmaxWithLoss(backend=backend)
    assert loss == pytest.approx(batch.forward(x[None], np.array([3])), rel=1e-14)
    assert layer.backward().shape == (5,)
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, np.eye(5)[3])


def test_one_hot_and_integer_labels_agree(backend, rng):
    x = rng.standard_normal((9, 4))
    t = rng.integers(0, 4, 9)
    a, b = fastbp.SoftmaxWithLoss(backend=backend), fastbp.SoftmaxWithLoss(backend=backend)
    assert a.forward(x, t) == b.forward(x, np.eye(4, dtype=np.float32)[t])
    np.testing.assert_array_equal(a.backward(), b.backward())


def test_affine_multiplies_a_large_float32_input_in_blocks_as_one_float64_product(backend, rng):
    """float32 images into float64 weights: more rows than engine.CONVERT_ROWS are converted and
    multiplied a block at a time; the result is the float64 product of the converted input, and
    backward (which converts again) gives the same gradients."""
    from fastbp import engine
    from fastbp.testing import assert_close, default_rtol

    n = 2 * engine.CONVERT_ROWS + 3
    x = rng.random((n, 20)).astype(np.float32)
    W, b = rng.standard_normal((20, 7)), rng.standard_normal(7)
    dout = rng.standard_normal((n, 7))
    layer, whole = fastbp.Affine(W, b, backend=backend), fastbp.Affine(W, b, backend=backend)
    out = layer.forward(x)
    assert out.dtype == np.float64
    expected = whole.forward(x.astype(np.float64))
    assert_close(out, expected, default_rtol(np.float64, 20))  # the same sums, float64 rounding
    assert_close(layer.backward(dout), whole.backward(dout), default_rtol(np.float64, 7))
    assert_close(layer.dW, whole.dW, default_rtol(np.float64, n))
    assert_close(layer.db, whole.db, default_rtol(np.float64, n))


def test_labels_checked_once_are_checked_again_when_t_changes(rng):
    """SoftmaxWithLoss remembers a small t's labels between calls (the numerical gradient's loop):
    t changed in place, or a new t, is checked and converted anew."""
    x = rng.standard_normal((3, 10))
    t = np.eye(10)[[1, 2, 3]]
    layer, fresh = fastbp.SoftmaxWithLoss(), fastbp.SoftmaxWithLoss()
    assert layer.forward(x, t) == fresh.forward(x, t)
    t[0] = np.eye(10)[7]  # the same array, other labels
    assert layer.forward(x, t) == fastbp.SoftmaxWithLoss().forward(x, np.eye(10)[[7, 2, 3]])
    t[1, 5] = 0.5  # now not one-hot: refused, as on a first call
    with pytest.raises(ValueError, match="not one-hot"):
        layer.forward(x, t)
    t8 = np.eye(10, dtype=np.int8)[[1, 2, 3]]  # integer one-hot rows: remembered too
    assert layer.forward(x, t8) == fresh.forward(x, t8)
    t8[2] = np.eye(10, dtype=np.int8)[9]
    assert layer.forward(x, t8) == fastbp.SoftmaxWithLoss().forward(x, np.eye(10)[[1, 2, 9]])
    labels = np.array([1, 2, 3])
    layer.forward(x, labels)
    labels[2] = 10  # integer labels changed in place to one out of range
    with pytest.raises(ValueError, match="labels must lie in"):
        layer.forward(x, labels)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (100, 10), (4,)], ids=str)
def test_identity_with_loss_matches_reference(backend, dtype, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    check_layer(fastbp.IdentityWithLoss(backend=backend), reference.IdentityWithLoss(), x, t)
    check_layer(fastbp.IdentityWithLoss(backend=backend), reference.IdentityWithLoss(), x, t, dout=2.5)


def test_identity_with_loss_is_half_mean_squared_error(backend):
    layer = fastbp.IdentityWithLoss(backend=backend)
    y = np.array([[1.0, 2.0], [3.0, 5.0]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert layer.forward(y, t) == pytest.approx(0.5 * (4 + 9 + 16) / 2)
    np.testing.assert_allclose(layer.backward(), (y - t) / 2)


def test_relu_backward_leaves_dout_alone(backend, rng):
    x = rng.standard_normal((4, 6))
    dout = rng.standard_normal((4, 6))
    before = dout.copy()
    layer = fastbp.Relu(backend=backend)
    layer.forward(x)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, before)
    np.testing.assert_array_equal(dx, np.where(x <= 0, 0, dout))


def test_relu_mask_is_the_seeds(backend):
    x = np.array([[1.0, -0.5], [-2.0, 3.0]])
    layer = fastbp.Relu(backend=backend)
    out = layer.forward(x)
    np.testing.assert_array_equal(layer.mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 3.0]])


def test_results_keep_the_input_dtype(backend, dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    W, b = rng.standard_normal((4, 2)).astype(dtype), np.zeros(2, dtype)
    affine = fastbp.Affine(W, b, backend=backend)
    assert affine.forward(x).dtype == dtype
    assert affine.backward(np.ones((3, 2), dtype)).dtype == dtype
    assert affine.dW.dtype == dtype and affine.db.dtype == dtype
    loss_layer = fastbp.SoftmaxWithLoss(backend=backend)
    assert loss_layer.forward(x, np.array([0, 1, 2])).dtype == dtype
    assert loss_layer.backward().dtype == dtype


def mostly_zero(rng, shape, dtype, zero_fraction=0.81):
    """Inputs like MNIST's images (81% of the pixels exactly zero): the native layers skip the zeros."""
    x = rng.standard_normal(shape)
    x[rng.random(shape) < zero_fraction] = 0
    return x.astype(dtype)


# (batch, in, out): just past FASTBP_FEW_ROWS; past FASTBP_COMPACT_TEAM_ROWS (rows and columns split
# between the OpenMP threads); MNIST's first layer; outputs narrower than a vector, and wider than
# one register block with a partial vector
COMPACT_SHAPES = [(7, 13, 5), (33, 200, 17), (100, 784, 50), (40, 97, 3), (64, 300, 130)]
# (input dtype, weights' dtype): the book feeds float32 images into float64 weights
DTYPE_PAIRS = {"float64": (np.float64, np.float64), "float32": (np.float32, np.float32),
               "float32-into-float64": (np.float32, np.float64)}


@pytest.mark.parametrize("shape", COMPACT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtypes", DTYPE_PAIRS.values(), ids=DTYPE_PAIRS.keys())
def test_affine_on_mostly_zero_inputs_matches_reference(backend, shape, dtypes, rng):
    """The products that skip the zeros (native) give the reference's sums: forward, dx, dW, db,
    and finite differences in float64 (check_layer's tolerances: default_rtol of the sums' length)."""
    n, d_in, d_out = shape
    x_dtype, w_dtype = dtypes
    x = mostly_zero(rng, (n, d_in), x_dtype)
    x[0, : d_in // 10] = 1.0  # the first row (the native layer's probe) as sparse as the rest
    W = (rng.standard_normal((d_in, d_out)) * 0.1).astype(w_dtype)
    b = rng.standard_normal(d_out).astype(w_dtype)
    layer = fastbp.Affine(W.copy(), b.copy(), backend=backend)
    check_layer(layer, reference.Affine(W.copy(), b.copy()), x,
                gradcheck="auto" if W.size <= GRADCHECK_MAX_PARAMS else False)
    if backend == "native" and x_dtype != w_dtype:
        assert layer.x.dtype == np.float32  # converted in C as read: no float64 copy of the batch


@pytest.mark.parametrize("dtypes", DTYPE_PAIRS.values(), ids=DTYPE_PAIRS.keys())
def test_native_affine_skipping_zeros_gives_the_dense_sums_on_every_instruction_set(row_isa, dtypes, rng):
    """The compact products (compaction per instruction set, then the row loops) against NumPy's
    dense float64 products of the same values: the same terms but the zero ones, in another order
    (default_rtol of the sums' length: 784 for x W, the batch for x^T dout)."""
    from fastbp.backends import native
    from fastbp.testing import assert_close, default_rtol

    x_dtype, w_dtype = dtypes
    n, k, m = 100, 784, 50
    x = mostly_zero(rng, (n, k), x_dtype)
    x[5] = 0  # a row with no nonzero at all
    W, b = rng.standard_normal((k, m)).astype(w_dtype), rng.standard_normal(m).astype(w_dtype)
    dout = rng.standard_normal((n, m)).astype(w_dtype)
    x64, W64, dout64 = x.astype(np.float64), W.astype(np.float64), dout.astype(np.float64)
    exact = {"x W + b": x64 @ W64 + b, "dx": dout64 @ W64.T, "dW": x64.T @ dout64, "db": dout64.sum(axis=0)}
    got = dict(zip(exact, (native.affine_forward(x, W, b),) + native.affine_backward(dout, x, W)))
    for name, length in (("x W + b", k), ("dx", m), ("dW", n), ("db", n)):
        assert_close(got[name], exact[name].astype(w_dtype), default_rtol(w_dtype, length), name)


@pytest.mark.parametrize("x_dtype", [np.float64, np.float32])
def test_native_affine_spreads_nan_from_weights_and_gradients_as_the_dense_product(x_dtype, rng):
    """0 * inf is NaN: an inf weight of a pixel that is zero in every row still makes the outputs
    NaN, as NumPy's product does (the compact products would skip it: such operands go dense);
    likewise an inf in dout for x^T dout, and a NaN pixel (kept: NaN is not zero)."""
    from fastbp.backends import native

    n, k, m = 40, 100, 12
    x = mostly_zero(rng, (n, k), x_dtype)
    x[:, 7] = 0
    W, b = rng.standard_normal((k, m)), np.zeros(m)
    W[7, 3] = np.inf
    with np.errstate(invalid="ignore"):  # (NumPy's 0 * inf, the point)
        expected = x.astype(np.float64) @ W + b
    out = native.affine_forward(x, W, b)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[:, 3]).all()
    W[7, 3] = 1.0
    dout = rng.standard_normal((n, m))
    dout[4, 2] = np.inf
    _, dW, _ = native.affine_backward(dout, x, W)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(dW), np.isnan(x.astype(np.float64).T @ dout))
    x[9, 50] = np.nan
    assert np.isnan(native.affine_forward(x, W, b)[9]).all()


def test_native_affine_gradient_of_a_very_large_mostly_zero_batch_is_the_dense_sum(rng):
    """x^T dout skipping zeros needs 24 bytes of scratch an entry of x: past 2^22 entries
    (FASTBP_COMPACT_DW_ENTRIES) it declines and the dense product runs, with the same sums."""
    from fastbp.backends import native
    from fastbp.testing import assert_close, default_rtol

    n, k, m = 5400, 784, 3  # 4.2 million entries
    x = mostly_zero(rng, (n, k), np.float32)
    W, dout = rng.standard_normal((k, m)), rng.standard_normal((n, m))
    _, dW, _ = native.affine_backward(dout, x, W, need_dx=False)
    assert_close(dW, x.astype(np.float64).T @ dout, default_rtol(np.float64, n))


def test_native_affine_probe_of_the_first_row_only_chooses_the_path(rng):
    """A sparse first row with dense rows after it (the compact path, slower but right), and a
    dense first row with sparse rows after it (the dense path) give the dense sums."""
    from fastbp.backends import native
    from fastbp.testing import assert_close, default_rtol

    W, b = rng.standard_normal((300, 20)), rng.standard_normal(20)
    sparse_first = rng.standard_normal((50, 300))
    sparse_first[0, 10:] = 0
    dense_first = mostly_zero(rng, (50, 300), np.float64)
    dense_first[0] = 1.0
    for x in (sparse_first, dense_first):
        assert_close(native.affine_forward(x, W, b), x @ W + b, default_rtol(np.float64, 300))
        assert_close(native.affine_backward(np.ones((50, 20)), x, W)[1], x.T @ np.ones((50, 20)),
                     default_rtol(np.float64, 50))


def test_mixed_dtypes_promote_as_numpy_does(backend, rng):
    # the seed feeds float32 images into float64 weights
    x = rng.random((5, 8), dtype=np.float32)
    W, b = rng.standard_normal((8, 3)), np.zeros(3)
    layer = fastbp.Affine(W, b, backend=backend)
    out = layer.forward(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.dot(x, W) + b, rtol=1e-12)
    layer.backward(np.ones((5, 3), np.float32))
    assert layer.dW.dtype == np.float64


def test_affine_holds_parameters_by_reference(backend, rng):
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    params = {"W1": W, "b1": b}
    layer = fastbp.Affine(params["W1"], params["b1"], backend=backend)
    x = rng.standard_normal((2, 4))
    params["W1"] -= 0.5 * np.ones_like(W)  # the seed's update
    params["b1"] -= 1.0
    np.testing.assert_allclose(layer.forward(x), x @ W + b, rtol=1e-13)
    assert layer.W is W


def test_affine_remembers_its_weight_checks_only_while_they_hold(backend, rng):
    """Affine skips its weight checks while the same W and b, unconverted, meet the same kind of
    input (fastbp/layers.py): updates in place are still read, a rebound or reshaped W is checked
    again, and weights converted for the product (float32 W, float64 x) are never remembered."""
    x = rng.standard_normal((3, 4))
    W, b = rng.standard_normal((4, 2)), np.zeros(2)
    layer = fastbp.Affine(W, b, backend=backend)
    layer.forward(x)
    W[...] = 0.5  # the book's update, in place
    np.testing.assert_allclose(layer.forward(x), x @ W, rtol=1e-13)
    layer.backward(np.ones((3, 2)))
    np.testing.assert_allclose(layer.dW, x.T @ np.ones((3, 2)), rtol=1e-13)
    layer.W = np.ones((4, 2))  # rebound
    np.testing.assert_allclose(layer.forward(x), x @ np.ones((4, 2)), rtol=1e-13)
    layer.W = np.ones((5, 2))
    with pytest.raises(ValueError, match=r"W of shape \(5, 2\) expects 5"):
        layer.forward(x)
    layer.W.shape = (2, 5)  # reshaped in place: W.shape[0] no longer fits x
    with pytest.raises(ValueError, match=r"expects 2"):
        layer.forward(x)

    W32 = np.ones((4, 2), np.float32)
    layer = fastbp.Affine(W32, np.zeros(2, np.float32), backend=backend)
    layer.forward(x)  # float64: the product runs on a float64 copy of W32
    W32[...] = 2
    np.testing.assert_allclose(layer.forward(x), x @ np.full((4, 2), 2.0), rtol=1e-13)
    layer.backward(np.ones((3, 2)))  # a backward whose W was rebound since forward is checked again
    layer.W = np.ones((4, 3))  # b is still (2,): the check that runs again says so
    with pytest.raises(ValueError, match=r"b has shape \(2,\), expected \(3,\)"):
        layer.backward(np.ones((3, 2)))
