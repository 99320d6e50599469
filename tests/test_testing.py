"""fastbp.testing.check_layer must catch broken layers: the seed's own defects and planted bugs."""

import numpy as np
import pytest

import fastbp
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


@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_float32_rule_accepts_a_cancelling_softmax_gradient(backend):
    # dx = (y - onehot) / N = (0.9975 - 1, 0.0025): rounding of y (eps * 1) is large next to |dx|
    x, t = np.array([[6.0, 0.0]], dtype=np.float32), np.array([0])
    check_layer(fastbp.SoftmaxWithLoss(backend=backend), reference.SoftmaxWithLoss(), x, t)


class SoftmaxGradientOffByEpsilons(reference.SoftmaxWithLoss):
    """dx off by 100 float32 epsilons of the terms (|y| / N) it cancels: beyond rounding."""

    def backward(self, dout=1):
        dx = super().backward(dout)
        return dx + np.float32(100 * np.finfo(np.float32).eps * dout / dx.shape[0])


def test_float32_rule_still_catches_an_error_of_the_cancelling_terms():
    x, t = np.array([[6.0, 0.0], [0.0, 6.0]], dtype=np.float32), np.array([0, 1])
    with pytest.raises(AssertionError, match=r"FAIL d\(input 0\)"):
        check_layer(SoftmaxGradientOffByEpsilons(), reference.SoftmaxWithLoss(), x, t)


def test_the_tests_import_an_installed_fastbp_before_a_source_checkout_without_its_extension(tmp_path):
    from conftest import path_without_the_checkout

    checkout, site = tmp_path / "checkout", tmp_path / "site-packages"
    for folder in (checkout, site):
        (folder / "fastbp").mkdir(parents=True)
        (folder / "fastbp" / "__init__.py").write_text("")
    path = [str(checkout), "/usr/lib/python3", str(site)]
    assert path_without_the_checkout(checkout, path) == ["/usr/lib/python3", str(site)]
    (site / "fastbp" / "__init__.py").unlink()
    (site / "fastbp").rmdir()  # no installed copy (an editable install's finder is not on the path)
    assert path_without_the_checkout(checkout, path) == path
    (checkout / "fastbp" / "_native.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # built in place
    assert path_without_the_checkout(checkout, [str(checkout), str(site)]) == [str(checkout), str(site)]
