"""fastbp.testing.check_layer must catch broken layers: the seed's own defects and planted bugs."""

import numpy as np
import pytest

from fastbp import reference
from fastbp.testing import assert_close, check_layer, default_rtol


class SeedRelu:
    """The seed's Relu, verbatim: backward overwrites the caller's dout."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class SoftmaxIgnoringDout(reference.SoftmaxWithLoss):
    """The seed's SoftmaxWithLoss.backward: dout is accepted and ignored."""

    def backward(self, dout=1):
        return super().backward(1.0)


class AffineWithWrongDb(reference.Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.db = self.db * 1.001
        return dx


class AffineReturningFloat32(reference.Affine):
    def forward(self, x):
        return super().forward(x).astype(np.float32)


class SigmoidWithWrongDerivative(reference.Sigmoid):
    """Consistent with itself in forward, wrong in backward by a tiny amount only finite differences see."""

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out * (1 + 1e-5)


def test_catches_the_seeds_relu_overwriting_dout(rng):
    x = rng.standard_normal((4, 5))
    with pytest.raises(AssertionError, match=r"dout\[0\] unchanged"):
        check_layer(SeedRelu(), reference.Relu(), x)


def test_catches_softmax_ignoring_dout(rng):
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 2, 0])
    with pytest.raises(AssertionError, match=r"d\(input 0\)"):
        check_layer(SoftmaxIgnoringDout(), reference.SoftmaxWithLoss(), x, t, dout=2.0)


def test_catches_a_wrong_parameter_gradient(rng):
    W, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    with pytest.raises(AssertionError, match="FAIL db"):
        check_layer(AffineWithWrongDb(W.copy(), b.copy()), reference.Affine(W.copy(), b.copy()), x)


def test_catches_a_wrong_dtype(rng):
    W, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    with pytest.raises(AssertionError, match="dtype float32 != float64"):
        check_layer(AffineReturningFloat32(W.copy(), b.copy()), reference.Affine(W.copy(), b.copy()), x)


def test_finite_differences_catch_a_backward_that_agrees_with_a_wrong_reference(rng):
    x = rng.standard_normal((3, 4))
    # compared with itself, only the finite-difference check can see the error
    with pytest.raises(AssertionError, match="vs finite diff"):
        check_layer(SigmoidWithWrongDerivative(), SigmoidWithWrongDerivative(), x)


def test_report_lists_what_was_checked(rng):
    W, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    report = check_layer(reference.Affine(W.copy(), b.copy()), reference.Affine(W.copy(), b.copy()), x)
    assert report.passed
    assert report.gradchecked == ["d(input 0)", "dW", "db"]


def test_gradcheck_true_demands_float64(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="float64"):
        check_layer(reference.Relu(), reference.Relu(), x, gradcheck=True)


def test_default_tolerances_scale_with_dtype_and_reduction_length():
    assert default_rtol(np.float64) == 1e-12
    assert default_rtol(np.float32, 784) == pytest.approx(8 * np.finfo(np.float32).eps * 28)
    assert default_rtol(np.float32, 100) > default_rtol(np.float32, 1)


def test_assert_close_judges_entries_at_the_arrays_scale():
    ref = np.array([1000.0, 1e-9])
    assert_close(ref + np.array([1e-10, 1e-10]), ref, rtol=1e-12)  # 1e-10 against max|ref| = 1000: fine
    with pytest.raises(AssertionError, match="err"):
        assert_close(ref + np.array([1e-6, 0.0]), ref, rtol=1e-12)
    with pytest.raises(AssertionError, match="dtype float32 != float64"):
        assert_close(ref.astype(np.float32), ref, rtol=1e-3)
