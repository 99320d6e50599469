"""numerical_gradient and gradient_check, and the reference backend against finite differences."""

import numpy as np
import pytest

import fastbp
from fastbp import gradient_check, reference


def test_numerical_gradient_of_known_function(rng):
    x = rng.standard_normal((3, 4))
    grad = fastbp.numerical_gradient(lambda v: np.sum(v**3), x, h=1e-5)
    np.testing.assert_allclose(grad, 3 * x**2, rtol=1e-8, atol=1e-9)


def test_numerical_gradient_reads_x_by_reference_like_the_seed(rng):
    W = rng.standard_normal(5)
    grad = fastbp.numerical_gradient(lambda _: float(np.dot(W, W)), W)  # f ignores its argument
    np.testing.assert_allclose(grad, 2 * W, rtol=1e-8)


def test_numerical_gradient_rejects_integer_arrays():
    with pytest.raises(TypeError, match=r"integer array cannot hold x \+ h.*astype\(np.float64\)"):
        fastbp.numerical_gradient(lambda v: v.sum(), np.arange(3))


def test_numerical_gradient_restores_x_even_when_f_raises():
    x = np.array([1.0, 2.0])
    calls = []

    def f(v):
        calls.append(v.copy())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fastbp.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])
    assert calls[0][0] == pytest.approx(1.0001)


def test_numerical_gradient_stops_on_non_finite_loss():
    with pytest.raises(ValueError, match=r"returned nan at x\[0\] \+ h"):
        fastbp.numerical_gradient(lambda v: float("nan"), np.zeros(2))


def test_numerical_gradient_warns_for_float32_and_uses_the_stored_step():
    x = np.array([1.0, 300.0], dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="float32"):
        grad = fastbp.numerical_gradient(lambda v: float(np.sum(v.astype(np.float64))), x)
    np.testing.assert_allclose(grad, [1.0, 1.0], rtol=1e-12)  # exact: divides by the step actually stored


def test_gradient_check_reports_per_parameter(rng):
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    x = rng.standard_normal((4, 3))

    def loss():
        return float(np.sum((x @ W + b) ** 2))

    out = x @ W + b
    grads = {"W": x.T @ (2 * out), "b": (2 * out).sum(axis=0)}
    report = fastbp.gradient_check(loss, {"W": W, "b": b}, grads, h=1e-5)
    assert [r.name for r in report.rows] == ["W", "b"]
    assert report.passed(rtol=1e-7)
    assert report["W"].max_abs_diff < 1e-7 and report["b"].max_rel_diff < 1e-7
    assert "max |diff|" in str(report)

    wrong = dict(grads, b=grads["b"] * 1.01)
    bad = fastbp.gradient_check(loss, {"W": W, "b": b}, wrong, h=1e-5)
    assert not bad.passed(rtol=1e-7)
    assert bad["b"].max_rel_diff == pytest.approx(0.01 / 1.01, rel=1e-4)


def test_compare_gradients_rejects_mismatched_keys():
    with pytest.raises(ValueError, match="disagree on parameters"):
        fastbp.compare_gradients({"W": np.zeros(2)}, {"b": np.zeros(2)})


def test_two_layer_network_gradient_matches_finite_differences(backend, rng):
    """The seed's gradient check: Affine-Relu-Affine-SoftmaxWithLoss, backprop vs numerical, per parameter."""
    params = {
        "W1": rng.standard_normal((6, 5)) * 0.5, "b1": rng.standard_normal(5) * 0.1,
        "W2": rng.standard_normal((5, 3)) * 0.5, "b2": rng.standard_normal(3) * 0.1,
    }
    layers = [
        fastbp.Affine(params["W1"], params["b1"], backend=backend),
        fastbp.Relu(backend=backend),
        fastbp.Affine(params["W2"], params["b2"], backend=backend),
    ]
    last = fastbp.SoftmaxWithLoss(backend=backend)
    x, t = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])

    def loss():
        out = x
        for layer in layers:
            out = layer.forward(out)
        return float(last.forward(out, t))

    loss()
    dout = last.backward(1.0)
    for layer in reversed(layers):
        dout = layer.backward(dout)
    grads = {"W1": layers[0].dW, "b1": layers[0].db, "W2": layers[2].dW, "b2": layers[2].db}
    report = fastbp.gradient_check(loss, params, grads, h=1e-6)
    assert report.passed(rtol=1e-7), str(report)


def test_reference_layers_stay_reference_under_any_global_backend():
    fastbp.set_backend(fastbp.available_backends()[0])
    assert reference.Affine(np.ones((2, 2)), np.zeros(2)).ops.__name__.endswith(".reference")


def test_gradient_check_refuses_a_missing_or_extra_gradient():
    W = np.array([[1.0, 2.0]])
    b = np.array([0.5])
    params = {"W": W, "b": b}

    def loss():
        return float(np.sum(W**2) + np.sum(b))

    with pytest.raises(ValueError, match=r"no gradient for \['b'\]"):
        gradient_check(loss, params, {"W": 2 * W})
    with pytest.raises(ValueError, match=r"gradients of unknown parameters \['c'\]"):
        gradient_check(loss, params, {"W": 2 * W, "b": np.ones(1), "c": np.ones(1)})
    assert gradient_check(loss, params, {"W": 2 * W, "b": np.ones(1)}).passed()
