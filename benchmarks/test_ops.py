"""Per-operation benchmarks: every hot kernel, on every available backend, in float32 and float64,
at the seed's shapes, batch 1 and large shapes. Each kernel's result is checked against the
reference before it is timed (a wrong kernel is never benchmarked), and kernels are compiled
before the timed rounds (pytest-benchmark's warmup).

    pytest benchmarks/ --benchmark-group-by=group --benchmark-json=ops.json   # time
    python benchmarks/report.py ops.json                                         # median ratios
    pytest benchmarks/ --benchmark-disable                                       # CI smoke: run and check once
"""

import numpy as np
import pytest

import fastbp
from fastbp import backends, engine
from fastbp.testing import assert_close, default_rtol

BACKENDS = fastbp.available_backends()
DTYPES = {"float32": np.float32, "float64": np.float64}
# (batch, in, out): the seed's two layers, a single sample, and large shapes for the crossovers
SHAPES = {"seed-784x50": (100, 784, 50), "seed-50x10": (100, 50, 10), "batch1-784x50": (1, 784, 50),
          "256-1024x1024": (256, 1024, 1024), "4096-784x512": (4096, 784, 512), "mnist-like-784x50": (100, 784, 50)}
# inputs with this fraction of exact zeros, as MNIST's images (the native layers skip them); others dense
ZERO_FRACTION = {"mnist-like-784x50": 0.81}


def make_inputs(op, shape, dtype, zero_fraction=0.0):
    n, d_in, d_out = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d_in))
    x[rng.random(x.shape) < zero_fraction] = 0
    x = x.astype(dtype)
    W = (rng.standard_normal((d_in, d_out)) * 0.05).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype)
    dout = rng.standard_normal((n, d_out)).astype(dtype)
    h = rng.standard_normal((n, d_out)).astype(dtype)
    labels = rng.integers(0, d_out, n)
    if op == "affine_forward":
        return lambda ops: ops.affine_forward(x, W, b)
    if op == "affine_backward":
        return lambda ops: ops.affine_backward(dout, x, W)
    if op == "relu_forward_backward":
        return lambda ops: ops.relu_backward(dout, ops.relu_forward(h)[1])
    if op == "sigmoid_forward_backward":
        return lambda ops: ops.sigmoid_backward(dout, ops.sigmoid_forward(h))
    if op == "softmax_cross_entropy_forward_backward":
        def softmax(ops):
            loss, y = ops.softmax_cross_entropy_forward(h, labels)
            return loss, ops.softmax_cross_entropy_backward(y, labels, 1.0)
        return softmax
    if op == "sgd_update":
        hyper = engine.hyper_vector(W.dtype, 0.01)

        def sgd(ops):
            param = W.copy()
            ops.optimizer_step(engine.SGD, param, W, param, param, hyper, 1)
            return param
        return sgd
    raise ValueError(op)


def op_flops(op, shape):
    """Multiply-add FLOPs of the matrix products (the elementwise ops are memory-bound: 0)."""
    n, d_in, d_out = shape
    return {"affine_forward": 2 * n * d_in * d_out, "affine_backward": 4 * n * d_in * d_out}.get(op, 0)


OPS = ["affine_forward", "affine_backward", "relu_forward_backward", "sigmoid_forward_backward",
       "softmax_cross_entropy_forward_backward", "sgd_update"]
# Shapes for the row-wise ops only, (batch, -, classes or units): no product is made at them
ROW_OPS = ["relu_forward_backward", "sigmoid_forward_backward", "softmax_cross_entropy_forward_backward"]
ROW_SHAPES = {"rows-1000x100": (1000, 1, 100), "rows-4096x1000": (4096, 1, 1000)}
SHAPES_OF = {op: [name for name in SHAPES if op.startswith("affine") or name not in ZERO_FRACTION]
             + (list(ROW_SHAPES) if op in ROW_OPS else []) for op in OPS}


def assert_matches(got, ref, dtype, reduction):
    if isinstance(ref, tuple):
        for g, r in zip(got, ref):
            assert_matches(g, r, dtype, reduction)
        return
    if ref is None:
        assert got is None
        return
    assert_close(got, ref, default_rtol(dtype, reduction))


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op, shape_name", [(op, shape) for op in OPS for shape in SHAPES_OF[op]])
def test_op(benchmark, op, backend, dtype_name, shape_name):
    dtype, shape = DTYPES[dtype_name], {**SHAPES, **ROW_SHAPES}[shape_name]
    run = make_inputs(op, shape, dtype, ZERO_FRACTION.get(shape_name, 0.0))
    ops = backends.get(backend)
    # checked before timing, and compiled by this first call
    assert_matches(run(ops), run(backends.get("reference")), dtype, max(shape))
    benchmark.group = f"{op} {shape_name} {dtype_name}"
    benchmark.extra_info.update(op=op, backend=backend, dtype=dtype_name, shape=shape_name, flops=op_flops(op, shape))
    benchmark(run, ops)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_matmul_peak(benchmark, dtype_name):
    """The roofline: NumPy's BLAS on a 1024^3 product, all threads, timed in the same run as the kernels."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((1024, 1024)).astype(DTYPES[dtype_name]) for _ in range(2))
    out = np.empty_like(a)
    benchmark.group = f"matmul peak {dtype_name}"
    benchmark.extra_info.update(op="matmul_peak", backend="numpy", dtype=dtype_name, shape="1024^3", flops=2 * 1024**3)
    benchmark(np.dot, a, b, out)
