"""fastbp._native's own guards (dtype, length and index checks before any C runs) and its
kernels against the reference. The native backend also runs every differential test of the
suite, since tests parametrize over every available backend."""

import numpy as np
import pytest

from fastbp import _native, engine
from fastbp.backends import native, reference
from fastbp.testing import default_rtol

SGD_01 = engine.hyper_vector(np.float64, 0.1)


def sgd(param, grad, hyper=None):
    """One SGD step of lr 0.1 through the binding (m and v unused: the parameter itself)."""
    hyper = engine.hyper_vector(param.dtype if param.dtype.kind == "f" else np.float64, 0.1) if hyper is None else hyper
    _native.optimizer_step(param, grad, param, param, hyper, engine.SGD, 1)


@pytest.mark.parametrize("shape", [(1,), (7, 13), (100, 50), (256, 1024)], ids=str)
def test_native_relu_matches_reference(dtype, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[0] = 0.0  # the boundary: 0 is masked, as x <= 0 says
    out, mask = native.relu_forward(x)
    ref_out, ref_mask = reference.relu_forward(x)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(mask, ref_mask)
    dout = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(native.relu_backward(dout, mask), reference.relu_backward(dout, ref_mask))


def test_native_relu_passes_nan_through_like_numpy(dtype):
    x = np.array([np.nan, -1.0, 2.0], dtype=dtype)
    out, mask = native.relu_forward(x)
    np.testing.assert_array_equal(mask, [False, True, False])
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 2


@pytest.mark.parametrize("size", [1, 17, 39200])
def test_native_sgd_matches_reference(dtype, size, rng):
    param = rng.standard_normal(size).astype(dtype)
    grad = rng.standard_normal(size).astype(dtype)
    expected = param.copy()
    hyper = engine.hyper_vector(dtype, 0.1)
    reference.optimizer_step(engine.SGD, expected, grad, None, None, hyper, 1)
    native.optimizer_step(engine.SGD, param, grad, param, param, hyper, 1)
    # float32: the C loop may fuse multiply and subtract (one rounding instead of two)
    np.testing.assert_allclose(param, expected, rtol=2 * np.finfo(dtype).eps, atol=2 * np.finfo(dtype).eps)


def test_native_rejects_bad_buffers_instead_of_reading_out_of_bounds():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="grad has 3 elements, expected 4"):
        sgd(p, np.zeros(3))
    with pytest.raises(TypeError, match="same dtype"):
        sgd(p, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        sgd(np.zeros(4, np.int64), np.zeros(4, np.int64), SGD_01)
    with pytest.raises(TypeError, match="C-contiguous"):
        sgd(np.zeros((4, 2))[:, 0], np.zeros(4))
    with pytest.raises(TypeError, match="writable"):
        ro = np.zeros(4)
        ro.flags.writeable = False
        sgd(ro, np.zeros(4))
    with pytest.raises(ValueError, match=f"hyper has 3 elements, expected {engine.HYPER_LENGTH}"):
        sgd(p, np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"optimizer_step: o must lie in \[0, 5\], got 7"):
        _native.optimizer_step(p, p, p, p, SGD_01, 7, 1)
    with pytest.raises(ValueError, match=r"optimizer_step: T must lie in \[1, "):
        _native.optimizer_step(p, p, p, p, SGD_01, engine.ADAM, 0)  # Adam's step 0 divides by zero
    with pytest.raises(TypeError, match=r"optimizer_step takes 7 arguments"):
        _native.optimizer_step(p, p, p, p, SGD_01, 0)
    with pytest.raises(TypeError, match="mask must be a bool array"):
        _native.relu_backward(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="mask has 3 elements, expected 4"):
        _native.relu_backward(np.zeros(4), np.zeros(3, bool))
    with pytest.raises(TypeError, match=r"relu_forward takes 1 arguments"):  # its outputs are made, not passed
        _native.relu_forward(np.zeros(4), np.zeros(4), np.zeros(4, bool))
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        _native.relu_forward(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="W has 6 elements, expected 8"):
        _native.affine_forward(np.zeros((2, 4)), np.zeros((3, 2)), np.zeros(2), np.zeros((2, 2)), 2, 4, 2)
    with pytest.raises(TypeError, match="x must be a float32 array"):  # the float32-into-weights entry
        _native.affine_forward_f32x(np.zeros((2, 4)), np.zeros((4, 2)), np.zeros(2), np.zeros((2, 2)), 2, 4, 2)
    with pytest.raises(ValueError, match="x has 8 elements, expected 12"):
        _native.affine_backward_f32x(np.zeros((2, 2)), np.zeros((2, 4), np.float32), np.zeros((6, 2)), None,
                                     np.zeros((6, 2)), np.zeros(2), 2, 6, 2)
    with pytest.raises(ValueError, match=r"labels\[1\] = 7 is outside \[0, 3\)"):
        _native.softmax_xent_forward(np.zeros((2, 3)), np.array([0, 7]), np.zeros((2, 3)), 2, 3)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4, 5)], ids=str)
def test_outputs_made_in_c_have_the_inputs_shape_and_dtype(dtype, shape, rng):
    """relu_forward and relu_backward make their outputs in C (NumPy's C API): C-contiguous arrays
    of the input's shape, the float ones of its dtype, each call new ones (never a shared buffer)."""
    x = rng.standard_normal(shape).astype(dtype)
    out, mask = _native.relu_forward(x)
    again, _ = _native.relu_forward(x)
    dx = _native.relu_backward(x, mask)
    for a, kind in ((out, dtype), (mask, np.bool_), (dx, dtype)):
        assert a.shape == x.shape and a.dtype == kind and a.flags.c_contiguous and a.flags.owndata and a.flags.writeable
    assert out is not again and not np.shares_memory(out, again)
    np.testing.assert_array_equal(out, np.where(x <= 0, 0, x))
    np.testing.assert_array_equal(dx, np.where(x <= 0, 0, x))


def test_native_train_steps_checks_indices_and_sizes():
    program = engine.mlp_program([3, 4, 2], "relu")
    n_params = 3 * 4 + 4 + 4 * 2 + 2
    args = dict(x=np.zeros((5, 3)), labels=np.zeros(5, np.int64), batches=np.zeros((2, 2), np.int64),
                params=np.zeros(n_params), grads=np.zeros(n_params), hyper=np.zeros(engine.HYPER_LENGTH), state=np.zeros(2 * n_params),
                losses=np.zeros(2), program=program, optimizer=engine.SGD)

    def call(**change):
        a = args | change
        return _native.train_steps(a["x"], a["x"].shape[0], a["labels"], a["batches"], a["batches"].shape[0],
                                   a["params"], a["grads"], a["program"], a["optimizer"], a["hyper"], a["state"], 0,
                                   a["losses"], np.empty(0), False)

    assert call() == (2, False)
    with pytest.raises(ValueError, match=r"batches\[3\] = 5 is outside \[0, 5\)"):
        call(batches=np.array([[0, 1], [2, 5]]))
    with pytest.raises(ValueError, match=r"labels\[0\] = 2 is outside \[0, 2\)"):
        call(labels=np.array([2, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="program has parameters outside the parameter buffer"):
        call(params=np.zeros(10))
    with pytest.raises(ValueError, match="grads has 10 elements, expected 26"):
        call(grads=np.zeros(10))
    with pytest.raises(ValueError, match="program has a size outside"):
        call(program=engine.mlp_program([3, 0, 2], "relu"))
    with pytest.raises(TypeError, match="same dtype"):
        call(grads=np.zeros(n_params, np.float32))
    with pytest.raises(TypeError, match="same dtype"):  # float32 rows into a float64 net: prediction only
        call(x=np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="unknown update rule 9"):
        call(optimizer=9)


def test_native_compact_rows_are_checked_against_the_call():
    x = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0]])
    assert _native.compact_rows(x, 2, 3, 1) == (None, 2)  # more nonzeros than allowed: counted, not compacted
    rows, nnz = _native.compact_rows(x, 2, 3, 6)
    assert nnz == 2
    program = engine.mlp_program([3, 4, 2], "relu")
    params = np.zeros(3 * 4 + 4 + 4 * 2 + 2)
    labels = np.zeros(2, np.int64)
    _native.predict_labels(rows, 2, params, program, np.empty(0), 8, labels)
    with pytest.raises(ValueError, match=r"compact rows of shape \(2, 3\), expected \(5, 3\)"):
        _native.predict_labels(rows, 5, params, program, np.empty(0), 8, np.zeros(5, np.int64))
    with pytest.raises(TypeError, match="same dtype"):
        _native.predict_labels(rows, 2, params.astype(np.float32), program, np.empty(0), 8, labels)
    _native.predict_labels(x.astype(np.float32), 2, params, program, np.empty(0), 8, labels)  # dense float32 into float64
    with pytest.raises(TypeError, match="same dtype"):  # (and not the other way)
        _native.predict_labels(x, 2, params.astype(np.float32), program, np.empty(0), 8, labels)
    with pytest.raises(ValueError, match=r"x has 6 elements, expected 9"):
        _native.compact_rows(np.zeros(6), 3, 3, 9)


def test_native_skips_dx_when_asked(rng):
    dout, x, W = rng.standard_normal((4, 3)), rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    dx, dW, db = native.affine_backward(dout, x, W, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dW, x.T @ dout, rtol=1e-12)
    np.testing.assert_allclose(db, dout.sum(axis=0), rtol=1e-12)


def test_native_sizes_that_overflow_or_are_negative_are_refused():
    with pytest.raises(ValueError, match=r"compact_rows: bad shape \(2305843009213693952, 4\)"):
        _native.compact_rows(np.zeros(4), 2**61, 4, 0)  # n * k wraps to 0 in 64 bits
    with pytest.raises(ValueError, match=r"affine_forward: n must lie in \[0, "):
        _native.affine_forward(np.zeros(4), np.zeros(4), np.zeros(2), np.zeros(4), -1, -1, 2)
    with pytest.raises(ValueError, match=r"softmax_xent_backward: N must lie in \[1, "):
        _native.softmax_xent_backward(np.zeros(4), np.zeros(2, np.int64), np.zeros(4), -2, -2, 1.0)
    with pytest.raises(ValueError, match=r"x has 4 elements, expected 4611686014132420609"):  # no wrap-around
        _native.affine_forward(np.zeros(4), np.zeros(4), np.zeros(2), np.zeros(4), 2**31 - 1, 2**31 - 1, 2**31 - 1)
    n_params = 3 * 4 + 4 + 4 * 2 + 2
    with pytest.raises(ValueError, match="program has parameters outside|program is too large"):
        huge = engine.mlp_program([2**31 - 1, 2**31 - 1, 2**31 - 1, 2], "relu")
        _native.predict_labels(np.zeros(1), 1, np.zeros(n_params), huge, np.empty(0), 8, np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"bad shape \(-1, 3\)"):
        _native.predict_labels(np.zeros(3), -1, np.zeros(n_params), engine.mlp_program([3, 4, 2], "relu"), np.empty(0), 8,
                               np.zeros(1, np.int64))


def test_native_blas_cannot_be_replaced_from_python():
    assert not hasattr(_native, "set_blas")  # taken from scipy.linalg.cython_blas when the module loads


@pytest.mark.skipif(_native.openmp() == 0, reason="built without OpenMP: no threads to bound")
def test_native_thread_count_is_bounded():
    with pytest.raises(ValueError, match=r"at most \d+ threads on this machine"):
        _native.set_num_threads(10**6)


def test_native_uses_numpys_blas_where_numpy_carries_one(tmp_path):
    """NumPy's wheels carry an OpenBLAS (numpy.libs/libscipy_openblas64_*); the products use it, so
    that fastbp and np.dot share one BLAS; FASTBP_BLAS=scipy chooses SciPy's (checked in a child)."""
    import glob
    import os
    import subprocess
    import sys

    carried = glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs", "libscipy_openblas64_*"))
    expected = "NumPy's OpenBLAS" if carried else "SciPy's OpenBLAS"
    assert _native.blas().startswith(expected)
    child = subprocess.run([sys.executable, "-c", "from fastbp import _native; print(_native.blas())"], text=True,
                           capture_output=True, env=os.environ | {"FASTBP_BLAS": "scipy"}, cwd=tmp_path)
    assert child.stdout.startswith("SciPy's OpenBLAS"), child.stderr
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((37, 19)), rng.standard_normal((19, 23)), rng.standard_normal(23)
    np.testing.assert_allclose(native.affine_forward(x, W, b), x @ W + b, rtol=1e-12)


def blas_threads_now() -> int:
    """NumPy's BLAS threads for this thread's products (-1: the BLAS has no such setting)."""
    now = _native.blas_threads_local(1)
    if now > 0:
        _native.blas_threads_local(now)
    return now


@pytest.mark.skipif(_native.openmp() < 2, reason="team products need two OpenMP threads")
def test_team_products_leave_numpys_blas_threads_as_they_were(rng):
    """The layers' products on the OpenMP team keep BLAS to one thread each while they run. In
    NumPy's OpenBLAS that setting is the whole process's, not each thread's: when every team
    thread put back what it had found, the last one to finish could leave it at 1, and NumPy's
    own products ran on one thread for the rest of the process (2x slower)."""
    before = blas_threads_now()
    if before < 2:
        pytest.skip("BLAS here has no per-call thread setting, or only one thread")
    x, W, b = rng.standard_normal((100, 784)), rng.standard_normal((784, 50)), rng.standard_normal(50)  # the book's first layer
    for _ in range(20):  # (which thread finishes last varies from call to call)
        out = native.affine_forward(x, W, b)
        native.affine_backward(out, x, W)
    assert blas_threads_now() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# blocks, long rows; above and below FASTBP_WIDE_MIN; on the OpenMP threads (from 2^16 entries: FASTBP_SOFTMAX_WORK)
@pytest.mark.parametrize("shape", [(200, 100), (40, 600), (3, 10), (700, 100)], ids=str)
def test_native_softmax_is_the_same_on_every_instruction_set(row_isa, dtype, shape, rng):
    """Large softmax runs in AVX-512 where the CPU has it (kernels/loss_impl.h), else in AVX2: the
    same operations in the same order, so the same bits; and the reference's values within its rule."""
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    loss, y = native.softmax_cross_entropy_forward(x, t)
    _native.isa("base")
    base_loss, base_y = native.softmax_cross_entropy_forward(x, t)
    assert loss == base_loss and np.array_equal(y, base_y)
    ref_loss, ref_y = reference.softmax_cross_entropy_forward(x, t)
    # y: exp of |x - max| up to ~40 and a row sum of c terms, rounded in dtype (default_rtol's sqrt(c) rule)
    np.testing.assert_allclose(y, ref_y, rtol=default_rtol(dtype, shape[1]), atol=float(np.finfo(dtype).tiny))
    assert loss == pytest.approx(ref_loss, rel=default_rtol(dtype, shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(700, 100), (130, 1024)], ids=str)
def test_native_softmax_on_threads_is_the_one_thread_softmax(dtype, shape, rng):
    """From 2^16 entries the softmax splits its rows between the OpenMP threads: each row's
    operations as on one thread (the same y, bit for bit); the loss is summed per thread first."""
    if _native.openmp() < 2:
        pytest.skip("one OpenMP thread here")
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    loss, y = native.softmax_cross_entropy_forward(x, t)
    before = _native.openmp()
    _native.set_num_threads(1)
    try:
        one_loss, one_y = native.softmax_cross_entropy_forward(x, t)
    finally:
        _native.set_num_threads(before)
    assert np.array_equal(y, one_y)
    assert loss == pytest.approx(one_loss, rel=default_rtol(np.float64, shape[0]))  # a sum of n rows' losses, in double

