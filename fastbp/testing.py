"""Check a layer implementation the way fastbp checks its own.

:func:`check_layer` runs a layer and a reference layer on the same inputs and compares forward
values, shapes and dtypes and every gradient (inputs and parameters). In float64 it then checks
the layer's backward against central differences. It also checks that neither forward nor
backward modified the caller's arrays. Each failure is reported with the quantity, the largest
error and the tolerance::

    from fastbp.testing import check_layer
    from fastbp import reference
    W, b = rng.standard_normal((784, 50)), rng.standard_normal(50)
    check_layer(MyAffine(W.copy(), b.copy()), reference.Affine(W.copy(), b.copy()), x)

Tolerances: a result is compared elementwise as ``|got - ref| <= rtol * (|ref| + M)``, where M
is the magnitude of the terms it was computed from, since rounding errors scale with the terms
and not with what is left after they cancel:

- by default M = max|ref|: small entries are judged at the array's own scale (sums of products
  lose digits relative to their largest terms, not to each entry);
- a loss layer (its forward returns a scalar) computes its value and its input gradient from its
  output y (softmax probabilities, or the predictions themselves; the layer's ``y``) and the
  targets t, and both cancel where y is close to t (softmax's 0.9975 - 1 for a confident right
  answer, whose loss is log(1.0025)). The gradient ``dout * (y - t) / N`` has terms
  ``|dout| |y| / N`` and ``|dout| |t| / N``, and ``|t| <= |y| + |y - t|``, so
  M = max|ref| + |dout| max|y| / N; the value, a mean of such differences (or of logs of sums
  of y-scaled terms), has M = |ref| + max|y|.

``rtol`` defaults to :func:`default_rtol`: 1e-12 in float64, 8 eps sqrt(n) in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .gradcheck import numerical_gradient

GRADCHECK_RTOL = 1e-7  # finite differences against backprop, float64


def default_rtol(dtype, reduction_length: int = 1) -> float:
    """Tolerance for comparing a kernel with the reference in ``dtype``.

    float64: 1e-12. float32: rounding grows like sqrt(n) for sums of n terms, so
    8 * eps * sqrt(reduction_length) (2.7e-5 for the 784-long sums of MNIST's first layer).
    """
    if np.dtype(dtype) == np.float64:
        return 1e-12
    return 8 * float(np.finfo(np.float32).eps) * math.sqrt(max(reduction_length, 1))


@dataclass
class Comparison:
    quantity: str
    max_error: float  # max |got - ref| / (|ref| + max|ref|)
    tolerance: float
    passed: bool
    detail: str = ""


@dataclass
class LayerCheckReport:
    layer: str
    comparisons: list[Comparison] = field(default_factory=list)
    gradchecked: list[str] = field(default_factory=list)  # quantities checked by finite differences

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    def __str__(self) -> str:
        lines = [f"check_layer({self.layer}): {'passed' if self.passed else 'FAILED'}"]
        for c in self.comparisons:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"  {mark} {c.quantity:<28} err {c.max_error:9.2e}  tol {c.tolerance:9.2e}  {c.detail}")
        return "\n".join(lines)


def _compare(report: LayerCheckReport, quantity: str, got, ref, rtol: float, magnitude: float = 0.0) -> None:
    """|got - ref| <= rtol * (|ref| + M), M = max(max|ref|, magnitude): the module doc's rule."""
    got_arr, ref_arr = np.asarray(got), np.asarray(ref)
    if got_arr.shape != ref_arr.shape:
        report.comparisons.append(Comparison(quantity, math.inf, rtol, False, f"shape {got_arr.shape} != {ref_arr.shape}"))
        return
    if got_arr.dtype != ref_arr.dtype:
        report.comparisons.append(Comparison(quantity, math.inf, rtol, False, f"dtype {got_arr.dtype} != {ref_arr.dtype}"))
        return
    g, r = got_arr.astype(np.float64), ref_arr.astype(np.float64)
    same_nan = np.isnan(g) == np.isnan(r)
    g, r = np.where(np.isnan(g), 0.0, g), np.where(np.isnan(r), 0.0, r)
    terms = max(float(np.max(np.abs(r), initial=0.0)), magnitude, np.finfo(np.float64).tiny)
    error = float(np.max(np.abs(g - r) / (np.abs(r) + terms), initial=0.0)) if same_nan.all() else math.inf
    detail = "" if same_nan.all() else "NaN in different places"
    report.comparisons.append(Comparison(quantity, error, rtol, error <= rtol, detail))


def assert_close(got, ref, rtol: float, quantity: str = "result") -> None:
    """The harness's comparison on its own: shape, dtype, and |got - ref| <= rtol (|ref| + max|ref|)."""
    report = LayerCheckReport(quantity)
    _compare(report, quantity, got, ref, rtol)
    if not report.passed:
        raise AssertionError(str(report))


def _snapshot(values):
    return [np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in values]


def _unchanged(report: LayerCheckReport, what: str, before, after) -> None:
    for i, (b, a) in enumerate(zip(before, after)):
        if isinstance(b, np.ndarray) and not np.array_equal(b, a, equal_nan=True):
            report.comparisons.append(Comparison(f"{what}[{i}] unchanged", math.inf, 0.0, False, "the layer wrote into it"))


def _as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


def check_layer(
    layer,
    reference,
    *inputs,
    dout=None,
    rtol: float | None = None,
    gradcheck: bool | str = "auto",
    h: float = 1e-5,
    seed: int = 0,
    param_names=None,
    raise_on_failure: bool = True,
) -> LayerCheckReport:
    """Compare ``layer`` with ``reference`` (same class interface, same parameter values).

    ``inputs`` are the forward arguments; they are passed to ``layer`` as given (views,
    Fortran order and all) and copied for the reference. ``dout`` defaults to 1 for a layer
    whose forward returns a scalar (a loss) and to seeded standard-normal values otherwise.
    ``gradcheck``: True always runs finite differences (everything must be float64), False
    never, "auto" when every input and parameter involved is float64.
    Parameters are the attributes in ``param_names`` (default ``layer.param_names``); the
    gradient of ``W`` is read from ``dW``. Raises AssertionError on any failure.
    """
    names = tuple(getattr(layer, "param_names", ()) if param_names is None else param_names)
    report = LayerCheckReport(type(layer).__name__)
    params = [np.asarray(getattr(layer, n)) for n in names]
    arrays = [np.asarray(v) for v in inputs] + params
    dims = [d for a in arrays for d in a.shape] or [1]
    out_dtype = None

    # forward
    before = _snapshot(inputs)
    out = layer.forward(*inputs)
    ref_out = reference.forward(*_snapshot(inputs))
    _unchanged(report, "input", before, inputs)
    out_dtype = np.asarray(ref_out).dtype
    tol = rtol if rtol is not None else default_rtol(out_dtype, max(dims))
    is_loss = np.ndim(ref_out) == 0
    output_terms = _output_magnitude(reference) if is_loss else 0.0
    _compare(report, "forward", out, ref_out, tol, output_terms + abs(float(np.max(np.abs(ref_out), initial=0.0))))

    # backward
    if dout is None:
        dout = 1.0 if is_loss else np.random.default_rng(seed).standard_normal(np.shape(ref_out)).astype(out_dtype)
    dout_before = np.array(dout, copy=True)
    grads = _as_tuple(layer.backward(dout))
    ref_grads = _as_tuple(reference.backward(np.array(dout, copy=True) if not is_loss else dout))
    _unchanged(report, "dout", [dout_before], [dout])
    if len(grads) != len(ref_grads):
        report.comparisons.append(Comparison("backward arity", math.inf, 0, False, f"{len(grads)} != {len(ref_grads)} gradients"))
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        terms = output_terms * abs(float(dout)) / _rows(reference) if is_loss else 0.0
        _compare(report, f"d(input {i})", g, r, tol, terms + float(np.max(np.abs(r), initial=0.0)))
    for n in names:
        _compare(report, f"d{n}", getattr(layer, "d" + n), getattr(reference, "d" + n), tol)

    # finite differences (float64 only: float32 cannot resolve the differences)
    involved = [np.asarray(v) for v in inputs[: len(grads)]] + params
    all_f64 = all(a.dtype == np.float64 for a in involved) and np.asarray(ref_out).dtype == np.float64
    if gradcheck is True and not all_f64:
        raise ValueError("gradcheck=True needs float64 inputs and parameters; pass gradcheck='auto' or False for float32")
    if gradcheck and all_f64:
        _finite_difference_check(report, layer, inputs, grads, names, dout, h)

    if raise_on_failure and not report.passed:
        raise AssertionError(str(report))
    return report


def _output_magnitude(loss_layer) -> float:
    """max|y| of a loss layer's output ``y`` (0 when it keeps none): the module doc's rule."""
    y = getattr(loss_layer, "y", None)
    return 0.0 if y is None else float(np.max(np.abs(np.asarray(y, dtype=np.float64)), initial=0.0))


def _rows(loss_layer) -> int:
    """N, the samples a loss layer averaged over (a 1-D ``y`` is one sample)."""
    y = np.asarray(getattr(loss_layer, "y", 0.0))
    return max(y.shape[0], 1) if y.ndim > 1 else 1


def _finite_difference_check(report, layer, inputs, grads, names, dout, h) -> None:
    probes = [np.array(v, dtype=np.float64, copy=True) if i < len(grads) else v for i, v in enumerate(inputs)]
    weight = np.asarray(dout, dtype=np.float64)

    def objective(_):
        return float(np.sum(np.asarray(layer.forward(*probes), dtype=np.float64) * weight))

    targets = [(f"d(input {i})", probes[i], grads[i]) for i in range(len(grads))]
    targets += [(f"d{n}", getattr(layer, n), getattr(layer, "d" + n)) for n in names]
    # analytic gradients are held first: the forward calls below overwrite the layer's state
    targets = [(q, arr, np.array(g, dtype=np.float64, copy=True)) for q, arr, g in targets]
    for quantity, array, analytic in targets:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{quantity}: finite differences need a NumPy array, got {type(array).__name__}")
        numeric = numerical_gradient(objective, array, h)
        _compare(report, f"{quantity} vs finite diff", analytic.reshape(numeric.shape), numeric, GRADCHECK_RTOL)
        report.gradchecked.append(quantity)
