"""The SGD update, validated, on every backend and layout."""

import numpy as np
import pytest

import fastbp
from fastbp.optim import sgd_step


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


def test_threads_setting_is_shared_and_checked():
    import numba

    from fastbp.threads import get_num_threads, set_num_threads

    set_num_threads(1)
    assert get_num_threads() == 1 == numba.get_num_threads()
    set_num_threads(numba.config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError, match="at most"):
        set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError, match="positive integer"):
        set_num_threads(0)
