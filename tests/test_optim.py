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


# ---- the book's six optimizers: names, defaults and numbers ---------------------------------------

BOOK_OPTIMIZERS = {"SGD": {}, "Momentum": {}, "Nesterov": {}, "AdaGrad": {}, "RMSprop": {}, "Adam": {},
                   "Momentum-0.5": {"lr": 0.05, "momentum": 0.5}, "RMSprop-0.9": {"lr": 0.02, "decay_rate": 0.9},
                   "Adam-lr": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}}


@pytest.mark.parametrize("name", list(BOOK_OPTIMIZERS))
def test_every_optimizer_gives_the_books_numbers(backend, name, rng):
    """Five steps from the same parameters and gradients: float64 rounding apart, the book's values."""
    from book import book_module

    book = book_module("optimizer")
    cls, kwargs = name.split("-")[0], BOOK_OPTIMIZERS[name]
    ours, theirs = getattr(fastbp.optim, cls)(backend=backend, **kwargs), getattr(book, cls)(**kwargs)
    start = {"W": rng.standard_normal((30, 20)), "b": rng.standard_normal(20)}
    params_ours = {k: v.copy() for k, v in start.items()}
    params_book = {k: v.copy() for k, v in start.items()}
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in start.items()}
        ours.update(params_ours, grads)
        theirs.update(params_book, grads)
    for key in start:
        # a few float64 roundings per step, of terms as large as the parameters
        np.testing.assert_allclose(params_ours[key], params_book[key], rtol=1e-13, atol=1e-13)


def test_the_books_defaults():
    from fastbp.optim import AdaGrad, Nesterov, RMSprop

    assert SGD().lr == 0.01 and Momentum().lr == 0.01 and Momentum().momentum == 0.9
    assert Nesterov().lr == 0.01 and Nesterov().momentum == 0.9 and AdaGrad().lr == 0.01
    assert RMSprop().lr == 0.01 and RMSprop().decay_rate == 0.99
    adam = Adam()
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (0.001, 0.9, 0.999, 1e-7)


def test_scalar_parameters_are_written_back_as_the_books_minus_equals(rng):
    """The book's optimizer_compare_naive.py keeps Python floats in params."""
    from book import book_module
    from fastbp.optim import AdaGrad

    book = book_module("optimizer")
    for cls in ("SGD", "Momentum", "AdaGrad", "Adam"):
        ours, theirs = getattr(fastbp.optim, cls)(lr=0.3), getattr(book, cls)(lr=0.3)
        p_ours, p_book = {"x": -7.0, "y": 2.0}, {"x": -7.0, "y": 2.0}
        for _ in range(10):
            ours.update(p_ours, {"x": p_ours["x"] / 10.0, "y": 2.0 * p_ours["y"]})
            theirs.update(p_book, {"x": p_book["x"] / 10.0, "y": 2.0 * p_book["y"]})
        assert p_ours["x"] == pytest.approx(p_book["x"], rel=1e-13) and p_ours["y"] == pytest.approx(p_book["y"], rel=1e-13)
    assert isinstance(AdaGrad().h, dict)
