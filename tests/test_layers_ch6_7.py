"""The layers of chapters 6 and 7 (Dropout, BatchNormalization, Convolution, Pooling) on every
backend and dtype against the reference, the reference against the book's own layers, and
finite differences in float64 (fastbp.testing.check_layer)."""

import numpy as np
import pytest

import fastbp
from fastbp import reference
from fastbp.layers import BatchNormalization, Convolution, Dropout, Pooling
from fastbp.testing import assert_close, check_layer, default_rtol
from book import book_layers

# (N, C, H, W), (FN, FH, FW), stride, pad: batch 1, odd sizes, C > 1, stride 2, pad 1 and 2,
# non-square filters, outputs narrower than a vector (2 x 2, 1 x 1), and the book's SimpleConvNet
# and DeepConvNet shapes
CONV_CASES = {
    "batch1": ((1, 1, 5, 5), (2, 3, 3), 1, 0),
    "odd": ((3, 2, 7, 9), (4, 3, 2), 1, 0),
    "stride2-pad1": ((2, 3, 7, 7), (4, 3, 3), 2, 1),
    "pad2": ((2, 2, 6, 6), (3, 3, 3), 1, 2),
    "non-square": ((2, 3, 8, 6), (5, 1, 3), 1, 1),
    "2x2-output": ((2, 3, 4, 4), (5, 3, 3), 1, 0),
    "1x1-output": ((3, 2, 3, 3), (7, 3, 3), 1, 0),
    "simple-convnet": ((4, 1, 28, 28), (30, 5, 5), 1, 0),
    "deep-convnet-3": ((2, 16, 14, 14), (32, 3, 3), 1, 1),
    # the compiled backward takes 8 samples of 8 x 8 outputs together: 10 is a group and a part
    "grouped-8x8": ((10, 4, 8, 8), (5, 3, 3), 1, 1),
    # dx as a convolution with flipped filters needs pad < filter size: here the other way
    "pad-beyond-filter": ((2, 2, 5, 5), (3, 2, 2), 1, 2),
    # stride 1 reads the windows in place: 1 x 1 filters need no grid (the output is one); a
    # 24 x 24 output is a backward group of one, whose flipped dx (pad 2 = FH - 1: none) reads
    # dout where it is
    "1x1-filter": ((2, 3, 5, 4), (4, 1, 1), 1, 0),
    "pad2-one-group": ((1, 2, 22, 22), (3, 3, 3), 1, 2),
    # rows 24 wide are whole register tiles (3 vectors of float, 6 of double): computed row by
    # row, padded input, forward and flipped dx, alone and in backward groups of 5
    "rows-of-tiles": ((2, 2, 24, 24), (3, 3, 3), 1, 1),
    "rows-of-tiles-grouped": ((6, 2, 4, 24), (3, 3, 3), 1, 1),
}
POOL_CASES = {"2x2-stride2": ((2, 3, 8, 8), 2, 2, 2, 0), "3x2-stride1-pad1": ((1, 2, 5, 6), 3, 2, 1, 1),
              "simple-convnet": ((3, 30, 24, 24), 2, 2, 2, 0), "batch1-odd": ((1, 1, 7, 5), 3, 1, 2, 0)}
# finite differences cost two forwards per input and parameter entry: where that stays cheap
GRADCHECK_MAX = 800


def separated(rng, shape, dtype, gap=0.05):
    """Values at least `gap` apart: a max or ReLU kink never falls within a finite-difference step."""
    values = (np.arange(int(np.prod(shape))) * gap + gap) * rng.choice([-1, 1], int(np.prod(shape)))
    return rng.permutation(values).reshape(shape).astype(dtype)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_convolution_matches_reference(backend, dtype, case, rng):
    x_shape, (fn, fh, fw), stride, pad = CONV_CASES[case]
    x = rng.standard_normal(x_shape).astype(dtype)
    W = (rng.standard_normal((fn, x_shape[1], fh, fw)) * 0.3).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    small = x.size + W.size <= GRADCHECK_MAX
    check_layer(Convolution(W.copy(), b.copy(), stride, pad, backend=backend),
                reference.Convolution(W.copy(), b.copy(), stride, pad), x, gradcheck="auto" if small else False)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_matches_reference(backend, dtype, case, rng):
    x_shape, ph, pw, stride, pad = POOL_CASES[case]
    x = separated(rng, x_shape, dtype)
    layer, ref = Pooling(ph, pw, stride, pad, backend=backend), reference.Pooling(ph, pw, stride, pad)
    check_layer(layer, ref, x, gradcheck="auto" if x.size <= GRADCHECK_MAX else False)
    np.testing.assert_array_equal(layer.arg_max, ref.arg_max)


def test_pooling_sends_a_tied_windows_gradient_to_its_first_maximum(backend, dtype):
    """After ReLU, windows of zeros tie: the book's np.argmax picks the first in row order."""
    x = np.zeros((1, 1, 4, 4), dtype)
    x[0, 0, 1, 1] = x[0, 0, 0, 3] = x[0, 0, 1, 2] = 2.0  # window (0, 1) ties at 2: first is (0, 3)
    layer = Pooling(2, 2, 2, backend=backend)
    out = layer.forward(x)
    np.testing.assert_array_equal(out[0, 0], [[2, 2], [0, 0]])
    dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype))
    expected = np.zeros((4, 4))  # the all-zero windows send theirs to their first place, (2, 0) and (2, 2)
    expected[1, 1], expected[0, 3], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_pooling_takes_nan_as_the_maximum_as_numpy_does(backend):
    x = np.array([[[[1.0, np.nan], [np.nan, 5.0]]]])
    layer = Pooling(2, 2, 2, backend=backend)
    assert np.isnan(layer.forward(x)[0, 0, 0, 0]) and layer.arg_max.tolist() == [1]


@pytest.mark.parametrize("shape", [(1, 3), (7, 5), (100, 50), (4, 2, 3, 3)], ids=str)
def test_batch_normalization_matches_reference(backend, dtype, shape, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    features = int(np.prod(shape[1:]))
    gamma, beta = rng.standard_normal(features).astype(dtype), rng.standard_normal(features).astype(dtype)
    layer = BatchNormalization(gamma.copy(), beta.copy(), backend=backend)
    ref = reference.BatchNormalization(gamma.copy(), beta.copy())
    # batch 1 normalises everything to 0: the loss is flat, finite differences see only rounding
    gradcheck = "auto" if x.size + 2 * features <= GRADCHECK_MAX and shape[0] > 1 else False
    check_layer(layer, ref, x, gradcheck=gradcheck)
    # the running statistics of one training forward each (finite differences ran many more above)
    layer = BatchNormalization(gamma.copy(), beta.copy(), backend=backend)
    ref = reference.BatchNormalization(gamma.copy(), beta.copy())
    layer.forward(x), ref.forward(x)
    tol = default_rtol(dtype, shape[0])  # sums over the batch: eps sqrt(N) of the terms' size (fastbp.testing)
    assert_close(layer.running_mean, ref.running_mean.astype(layer.running_mean.dtype), tol, "running_mean")
    assert_close(layer.running_var, ref.running_var.astype(layer.running_var.dtype), tol, "running_var")
    x2 = rng.standard_normal(shape).astype(dtype)  # inference, with the running statistics
    assert_close(layer.forward(x2, train_flg=False), ref.forward(x2, train_flg=False), tol, "inference")


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5])
def test_dropout_matches_reference_and_the_books_draw(backend, dtype, ratio, rng):
    x = rng.standard_normal((6, 7)).astype(dtype)
    dout = rng.standard_normal((6, 7)).astype(dtype)
    layer, ref = Dropout(ratio, backend=backend), reference.Dropout(ratio)
    np.random.seed(5)
    out = layer.forward(x)
    np.random.seed(5)
    expected = x * (np.random.rand(6, 7) > ratio)  # the book's formula, the same draw
    np.random.seed(5)
    np.testing.assert_array_equal(out, ref.forward(x))
    np.testing.assert_array_equal(out, expected.astype(dtype))
    np.testing.assert_array_equal(layer.backward(dout), ref.backward(dout))
    np.testing.assert_array_equal(layer.backward(dout), dout * layer.mask)
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * (1 - ratio), rtol=1e-6)
    assert out.dtype == dtype and layer.forward(x, False).dtype == dtype


@pytest.mark.parametrize("shape", [(1,), (311, 1), (312,), (313,), (5, 7, 9, 11)])
def test_dropout_draws_the_books_masks_and_leaves_numpys_generator_where_the_book_does(backend, shape, rng, monkeypatch):
    """The native backend draws in C from NumPy's generator state (kernels/mt19937.c): the same
    masks as np.random.rand's for sizes across its 624-word blocks (312 draws), starting inside a
    block, three calls in turn; after them NumPy's next numbers (and its cached Gaussian) are the
    book's. With np.random.rand replaced, the layer draws through the replacement."""
    x = rng.standard_normal(shape)
    layer = Dropout(0.4, backend=backend)
    if backend == "native":  # it reads NumPy's generator memory, as laid out here (else: np.random.rand)
        from fastbp.backends import native
        assert native._numpy_generator_state()[1] is not None

    def start():
        np.random.seed(11)
        np.random.rand(3)  # a position inside a block
        np.random.randn()  # a second Gaussian cached by NumPy's legacy generator

    start()
    masks = [(layer.forward(x), layer.mask.copy())[1] for _ in range(3)]
    after = np.random.rand(5), np.random.randn(2)
    start()
    expected = [np.random.rand(*shape) > 0.4 for _ in range(3)]
    for got, want in zip(masks, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(after[0], np.random.rand(5))
    np.testing.assert_array_equal(after[1], np.random.randn(2))

    calls = []

    def replaced(*size):
        calls.append(size)
        return np.full(size, 0.5)

    monkeypatch.setattr(np.random, "rand", replaced)
    assert layer.forward(x).tolist() == (x * (0.5 > 0.4)).tolist() and calls == [shape]


def test_dropout_keeps_a_unit_exactly_when_the_books_draw_exceeds_the_ratio(backend):
    """At the boundary: ratios equal to a draw, one 2^-53 below it and one above (the native
    backend compares the draw's 53-bit numerator in two 32-bit parts, kernels/mt19937.c)."""
    np.random.seed(7)
    draws = np.random.rand(8)
    x = np.ones(8)
    for i, draw in enumerate(draws):
        for ratio in (draw, draw - 2.0**-53, draw + 2.0**-53):
            np.random.seed(7)
            mask = Dropout(ratio, backend=backend).forward(x) != 0
            np.testing.assert_array_equal(mask, draws > ratio, err_msg=f"draw {i}, ratio {ratio!r}")
            assert mask[i] == (draw > ratio)


@pytest.mark.parametrize("backend_name", fastbp.available_backends())
def test_float16_runs_through_the_reference_with_numpys_semantics(backend_name, rng):
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float16)
    W, b = rng.standard_normal((3, 1, 3, 3)).astype(np.float16), np.zeros(3, np.float16)
    conv = Convolution(W, b, backend=backend_name)
    out = conv.forward(x)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, reference.Convolution(W, b).forward(x))
    mixed = Convolution(W.astype(np.float64), b.astype(np.float64), backend=backend_name).forward(x)
    assert mixed.dtype == np.float64  # float16 into float64 weights: float64, as NumPy promotes
    pooled = Pooling(2, 2, 2, backend=backend_name).forward(out)
    assert pooled.dtype == np.float16
    relu = fastbp.Relu(backend=backend_name)
    assert relu.forward(x).dtype == np.float16 and relu.backward(np.ones_like(x)).dtype == np.float16
    W16, b16 = rng.standard_normal((36, 4)).astype(np.float16), np.zeros(4, np.float16)
    affine = fastbp.Affine(W16, b16, backend=backend_name)
    out = affine.forward(x.reshape(2, 36))
    assert out.dtype == np.float16 and affine.backward(np.ones_like(out)).dtype == np.float16
    np.testing.assert_array_equal(out, reference.Affine(W16, b16).forward(x.reshape(2, 36)))


# ---- the reference against the book's own layers (../shared/dlfs/common/layers.py) -----------

@pytest.mark.parametrize("case", ["odd", "stride2-pad1", "pad2", "non-square"])
def test_reference_convolution_is_the_books(case, rng):
    book = book_layers()
    x_shape, (fn, fh, fw), stride, pad = CONV_CASES[case]
    x = rng.standard_normal(x_shape)
    W, b = rng.standard_normal((fn, x_shape[1], fh, fw)), rng.standard_normal(fn)
    ours, theirs = reference.Convolution(W, b, stride, pad), book.Convolution(W, b, stride, pad)
    np.testing.assert_allclose(ours.forward(x), theirs.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(ours.forward(x).shape)
    np.testing.assert_allclose(ours.backward(dout), theirs.backward(dout), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.dW, theirs.dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.db, theirs.db, rtol=1e-12, atol=1e-12)


def test_reference_pooling_batchnorm_and_dropout_are_the_books(rng):
    book = book_layers()
    x = np.maximum(rng.standard_normal((2, 3, 6, 6)), 0)  # ReLU output: ties in many windows
    ours, theirs = reference.Pooling(2, 2, 2), book.Pooling(2, 2, 2)
    np.testing.assert_array_equal(ours.forward(x), theirs.forward(x))
    np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    dout = rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))

    for shape in ((5, 4), (3, 2, 2, 2)):
        x = rng.standard_normal(shape) * 2 + 1
        d = int(np.prod(shape[1:]))
        gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
        ours, theirs = reference.BatchNormalization(gamma, beta), book.BatchNormalization(gamma, beta)
        for train in (True, True, False):
            np.testing.assert_allclose(ours.forward(x, train), theirs.forward(x, train), rtol=1e-12, atol=1e-12)
        ours.forward(x), theirs.forward(x)
        dout = rng.standard_normal(shape)
        np.testing.assert_allclose(ours.backward(dout), theirs.backward(dout), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.dgamma, theirs.dgamma, rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, theirs.running_var, rtol=1e-12)

    x = rng.standard_normal((4, 5))
    ours, theirs = reference.Dropout(0.4), book.Dropout(0.4)
    np.random.seed(2)
    a = ours.forward(x)
    np.random.seed(2)
    np.testing.assert_array_equal(a, theirs.forward(x))
    np.testing.assert_array_equal(ours.mask, theirs.mask)


def test_im2col_and_col2im_are_the_books(rng):
    import importlib.util

    from book import BOOK
    from fastbp.util import col2im, conv_output_size, im2col

    spec = importlib.util.spec_from_file_location("book_util", BOOK / "common" / "util.py")
    book_util = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_util)
    x = rng.standard_normal((2, 3, 7, 6))
    for fh, fw, stride, pad in ((3, 3, 1, 0), (2, 3, 2, 1), (5, 5, 1, 2)):
        col = im2col(x, fh, fw, stride, pad)
        np.testing.assert_array_equal(col, book_util.im2col(x, fh, fw, stride, pad))
        np.testing.assert_array_equal(col2im(col, x.shape, fh, fw, stride, pad),
                                      book_util.col2im(col, x.shape, fh, fw, stride, pad))
    assert conv_output_size(28, 5) == book_util.conv_output_size(28, 5) == 24
    assert conv_output_size(7, 2, 2, 0) == book_util.conv_output_size(7, 2, 2, 0) == 3.5


# ---- bad input ---------------------------------------------------------------------------------

def test_convolution_and_pooling_name_what_does_not_fit(backend):
    x = np.ones((2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"filter height 7 is larger than the padded input \(5 \+ 2 x pad 0 = 5\)"):
        Convolution(np.ones((2, 3, 7, 7)), np.zeros(2), backend=backend).forward(x)
    with pytest.raises(ValueError, match=r"x of shape \(2, 3, 5, 5\) has 3 channels but W of shape \(2, 4, 3, 3\) expects 4"):
        Convolution(np.ones((2, 4, 3, 3)), np.zeros(2), backend=backend).forward(x)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        Convolution(np.ones((2, 3, 3, 3)), np.zeros(2), stride=0, backend=backend)
    with pytest.raises(ValueError, match=r"output filter height \(5 - 2\) / stride 2 \+ 1 = 2.5 is not whole"):
        Convolution(np.ones((2, 3, 2, 1)), np.zeros(2), stride=2, backend=backend).forward(x)
    with pytest.raises(ValueError, match="pool_h must be a positive integer, got 0"):
        Pooling(0, 2, backend=backend)
    with pytest.raises(ValueError, match=r"output pool width \(5 - 2\) / stride 2 \+ 1 = 2.5 is not whole"):
        Pooling(1, 2, 2, backend=backend).forward(x)
    with pytest.raises(ValueError, match=r"must be a batch of images \(N, C, H, W\), got shape \(5, 5\)"):
        Pooling(2, 2, backend=backend).forward(np.ones((5, 5)))
    with pytest.raises(ValueError, match=r"b has shape \(3,\), expected \(2,\)"):
        Convolution(np.ones((2, 3, 3, 3)), np.zeros(3), backend=backend).forward(x)
    layer = Convolution(np.ones((2, 3, 3, 3)), np.zeros(2), backend=backend)
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 2, 4, 4\), expected \(2, 2, 3, 3\)"):
        layer.backward(np.ones((2, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"dropout_ratio must lie in \[0, 1\)"):
        Dropout(1.5)
    with pytest.raises(ValueError, match=r"BatchNormalization takes \(N, D\) or \(N, C, H, W\)"):
        BatchNormalization(np.ones(3), np.zeros(3), backend=backend).forward(np.ones((2, 3, 1)))


def test_a_scalar_bias_is_one_for_every_filter_as_the_books_broadcast(backend, rng):
    x, W = rng.standard_normal((1, 1, 5, 5)), rng.standard_normal((3, 1, 3, 3))
    np.testing.assert_allclose(Convolution(W, 0, backend=backend).forward(x),
                               reference.Convolution(W, np.zeros(3)).forward(x), rtol=1e-12, atol=1e-12)


def test_the_first_layer_can_skip_its_input_gradient(backend, rng):
    x, W, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dout = rng.standard_normal((2, 4, 4, 4))
    full, params_only = Convolution(W, b, backend=backend), Convolution(W, b, backend=backend)
    full.forward(x), params_only.forward(x)
    full.backward(dout)
    assert params_only.backward_params(dout) is None
    np.testing.assert_allclose(params_only.dW, full.dW, rtol=1e-12)
    np.testing.assert_allclose(params_only.db, full.db, rtol=1e-12)
