"""Property tests (hypothesis): the compiled backends agree with the reference on arbitrary shapes and values."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp import reference
from fastbp.testing import check_layer

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=64)
COMPILED = [b for b in fastbp.available_backends() if b != "reference"]


@st.composite
def logits_and_labels(draw):
    n = draw(st.integers(1, 40))
    c = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = draw(hnp.arrays(np.float64, (n, c), elements=finite)).astype(dtype)
    t = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return x, t


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=60, deadline=None)
@given(case=logits_and_labels())
# a confident right answer: dx = (0.9975 - 1) / N cancels; failed once against a tolerance scaled by |dx|
@example(case=(np.array([[6.0, 0.0]], dtype=np.float32), np.array([0])))
def test_softmax_with_loss_matches_reference(backend, case):
    x, t = case
    # the harness's own rule (fastbp.testing): eps-scaled, by the terms the gradient cancels
    report = check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t, gradcheck=False)
    assert report.passed


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=20), elements=finite))
def test_relu_and_sigmoid_match_reference(backend, x):
    for name in ("Relu", "Sigmoid"):
        check_layer(getattr(fastbp, name)(backend=backend), getattr(reference, name)(), x, gradcheck=False)


@st.composite
def convolutions(draw):
    """A convolution's input, filters and bias of any shape whose windows end at the edge: stride 1
    or 2, padding 0-3, filters 1-5 high and wide (not square), output widths drawn so that every
    form of the native kernels occurs: rows of whole register tiles (12, 24, 36 places: computed
    row by row), other widths on the padded input's grid or through copied windows, and the
    backward's weight gradient read in place or from copied windows."""
    stride = draw(st.sampled_from([1, 1, 2]))
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad = draw(st.integers(0, 3))
    oh = draw(st.integers(1, 9))
    ow = draw(st.sampled_from([1, 2, 7, 12, 13, 24, 36]))
    if (oh - 1) * stride + fh - 2 * pad < 1 or (ow - 1) * stride + fw - 2 * pad < 1:
        pad = 0  # more padding than input
    h, w = (oh - 1) * stride + fh - 2 * pad, (ow - 1) * stride + fw - 2 * pad
    n, c, f = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 7))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = (rng.standard_normal((f, c, fh, fw)) * 0.3).astype(dtype)
    return x, W, rng.standard_normal(f).astype(dtype), stride, pad


@pytest.mark.parametrize("backend", COMPILED)
@settings(max_examples=40, deadline=None)
@given(case=convolutions())
def test_convolution_matches_reference(backend, case):
    x, W, b, stride, pad = case
    check_layer(fastbp.Convolution(W.copy(), b.copy(), stride, pad, backend=backend),
                reference.Convolution(W.copy(), b.copy(), stride, pad), x, gradcheck=False)
