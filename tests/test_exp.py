"""The compiled backends' own exp (kernels/vexp.h, and its numba twin), which softmax and sigmoid
use: at most 1 ulp from the correctly rounded result over the whole float range, special values
exact. The truth is NumPy's exp in a wider type, rounded once to the tested one."""

import numpy as np
import pytest

from fastbp import backends

COMPILED = [name for name in backends.KNOWN if name != "reference" and name in backends.available()]
WIDER = {np.float32: np.float64, np.float64: np.longdouble}
# The stated bound, in units in the last place of the result: the polynomial's truncation is below
# 0.05 ulp and the range reduction's error far below that, so what is left is the rounding of a
# dozen multiply-adds, which lands the result on one of the correctly rounded value's neighbours.
ULPS = 1

if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:  # long double is double here (not x86-64 Linux)
    WIDER = {np.float32: np.float64}


def ordered(a):
    """Each float's place in the order of all floats of its type, as an integer: the distance of two
    floats in ulps is the difference of their places (across zero and the subnormals too)."""
    bits = a.view(np.int32 if a.dtype == np.float32 else np.int64).astype(np.int64)
    return np.where(bits < 0, -(bits & np.iinfo(bits.dtype).max), bits)


def sweep(dtype, rng):
    """Every exponent and sign of the type (a stride through its bit patterns), uniform draws over
    the range where exp is finite and nonzero, and dense runs at the edges: overflow, the start of
    the subnormals, underflow to zero, and zero."""
    info = np.finfo(dtype)
    int_type = np.uint32 if dtype == np.float32 else np.uint64
    patterns = (rng.integers(0, np.iinfo(int_type).max, 400_000, dtype=int_type, endpoint=True)).view(dtype)
    top = np.log(info.max.astype(np.float64))
    bottom = np.log(np.float64(info.smallest_subnormal))
    edges = [top, np.log(np.float64(info.tiny)), bottom, 0.0]
    runs = [np.float64(e) + np.linspace(-1, 1, 20_001) * (1e-3 if e else 1e-6) for e in edges]
    return np.concatenate([patterns, rng.uniform(bottom - 1, top + 1, 400_000).astype(dtype)]
                          + [r.astype(dtype) for r in runs])


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", list(WIDER), ids=lambda t: np.dtype(t).name)
def test_exp_is_within_one_ulp_of_the_correctly_rounded_value(name, dtype, rng):
    x = sweep(dtype, rng)
    x = x[np.isfinite(x)]
    got = backends.get(name).exp(x)
    with np.errstate(over="ignore", under="ignore"):
        truth = np.exp(x.astype(WIDER[dtype])).astype(dtype)
    assert got.dtype == dtype
    assert np.array_equal(np.isinf(got), np.isinf(truth)), "overflow to inf exactly where exp overflows"
    distance = np.abs(ordered(got) - ordered(truth))
    worst = int(np.argmax(distance))
    assert distance[worst] <= ULPS, f"exp({x[worst]!r}) = {got[worst]!r}, correctly rounded {truth[worst]!r}"
    # the subnormal results and the underflow to zero are in the sweep, not only normal values
    assert np.count_nonzero((truth > 0) & (truth < np.finfo(dtype).tiny)) > 1000
    assert np.count_nonzero((truth == 0) & (got == 0)) > 1000


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_exp_of_special_values(name, dtype):
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4], dtype=dtype)
    got = backends.get(name).exp(x)
    assert np.isnan(got[:2]).all()
    assert got[2] == np.inf and got[3] == 0
    assert got[4] == 1 and got[5] == 1
    assert got[6] == np.inf and got[7] == 0
