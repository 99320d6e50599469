"""The optimizers (fastbp/optim.py): every update rule against the textbook's formulas, on every
backend and layout, and their arguments checked."""

import numpy as np
import pytest

import fastbp
from fastbp.optim import SGD, Adam, Momentum, sgd_step


def test_sgd_matches_reference(backend, dtype, rng):
    params = {"W": rng.standard_normal((300, 300)).astype(dtype), "b": rng.standard_normal(300).astype(dtype)}
    grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
    expected = {k: v - dtype(0.1) * grads[k] for k, v in params.items()}
    W = params["W"]
    fastbp.SGD(lr=0.1, backend=backend).update(params, grads)
    assert params["W"] is W  # in place: layers holding W see the update
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=2 * np.finfo(dtype).eps, atol=2 * np.finfo(dtype).eps)


def test_sgd_updates_non_contiguous_params_in_place(backend, rng):
    base = rng.standard_normal((6, 8))
    view = base[:, ::2]
    grad = np.asfortranarray(rng.standard_normal(view.shape))
    expected = view - 0.5 * grad
    sgd_step(view, grad, 0.5, backend)
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-15)


def test_sgd_casts_float64_gradients_to_float32_params(backend, rng):
    param = rng.standard_normal(10).astype(np.float32)
    grad = rng.standard_normal(10)
    expected = param - np.float32(0.1) * grad.astype(np.float32)
    sgd_step(param, grad, 0.1, backend)
    assert param.dtype == np.float32
    np.testing.assert_allclose(param, expected, rtol=1e-6)


def test_sgd_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lr must be positive"):
        fastbp.SGD(lr=-1)
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2,\)"):
        sgd_step(np.zeros(2), np.zeros(3), 0.1)
    with pytest.raises(TypeError, match="param must be a float32 or float64 NumPy array"):
        sgd_step([0.0, 1.0], np.zeros(2), 0.1)
    with pytest.raises(KeyError, match="no gradient"):
        fastbp.SGD().update({"W": np.zeros(2)}, {})


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
