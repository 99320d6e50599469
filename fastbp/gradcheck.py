"""Numerical gradients and gradient checking: backprop is proven against finite differences.

``numerical_gradient`` is the seed's central difference, made safe: it refuses arrays that
cannot hold x +- h, divides by the step actually stored (exact for float32 too), restores x
even when f raises, and stops on a non-finite loss instead of returning garbage.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import _validate as check


def _loss_value(value, where: str) -> float:
    try:
        return check.scalar("the value of f", value)
    except ValueError as exc:  # non-finite
        raise ValueError(f"f returned {value} {where}; a numerical gradient through it is meaningless") from exc


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference gradient of the scalar function ``f`` at ``x`` (float64 result).

    As in the seed, each element of ``x`` is perturbed in place and ``f(x)`` re-evaluated, so
    ``f`` may ignore its argument and read ``x`` by reference (``lambda W: net.loss(x, t)``).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array that f reads (it is perturbed in place), got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(
            f"numerical_gradient needs a floating-point x, got dtype {x.dtype}: an integer array "
            f"cannot hold x + h, so every difference would be 0. Use x.astype(np.float64)."
        )
    if not x.flags.writeable:
        raise ValueError("x is read-only; numerical_gradient perturbs it in place")
    if not (h > 0 and np.isfinite(h)):
        raise ValueError(f"h must be a positive finite step, got {h}")
    if x.dtype != np.float64:
        warnings.warn(
            f"numerical_gradient on a {x.dtype} array: the result is accurate to only a few digits; "
            f"check gradients in float64",
            RuntimeWarning,
            stacklevel=2,
        )
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        original = x[idx]
        try:
            x[idx] = original + h
            upper = float(x[idx])
            f_upper = _loss_value(f(x), f"at x{list(idx)} + h")
            x[idx] = original - h
            lower = float(x[idx])
            f_lower = _loss_value(f(x), f"at x{list(idx)} - h")
        finally:
            x[idx] = original
        # divide by the step actually stored, which differs from 2h when x is float32
        grad[idx] = (f_upper - f_lower) / (upper - lower)
    return grad


@dataclass
class ParameterDiff:
    """How far one parameter's backprop gradient is from its numerical gradient."""

    name: str
    shape: tuple
    max_abs_diff: float
    max_rel_diff: float  # max over elements of |a - n| / max(|a|, |n|)
    mean_abs_diff: float  # the figure the seed prints
    backprop: np.ndarray = field(repr=False)
    numerical: np.ndarray = field(repr=False)

    def within(self, rtol: float, atol: float = 0.0) -> bool:
        """|backprop - numerical| <= atol + rtol * |numerical|, elementwise."""
        return bool(np.all(np.abs(self.backprop - self.numerical) <= atol + rtol * np.abs(self.numerical)))


@dataclass
class GradientCheckReport:
    rows: list[ParameterDiff]

    def __getitem__(self, name: str) -> ParameterDiff:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def passed(self, rtol: float = 1e-7, atol: float | None = None) -> bool:
        """Every parameter within tolerance; ``atol`` defaults to ``rtol`` times each gradient's largest entry."""
        return all(
            row.within(rtol, rtol * float(np.max(np.abs(row.numerical), initial=0.0)) if atol is None else atol)
            for row in self.rows
        )

    def __str__(self) -> str:
        lines = [f"{'param':<10} {'shape':<14} {'max |diff|':>12} {'max rel':>12} {'mean |diff|':>12}"]
        for r in self.rows:
            lines.append(
                f"{r.name:<10} {str(r.shape):<14} {r.max_abs_diff:12.3e} {r.max_rel_diff:12.3e} {r.mean_abs_diff:12.3e}"
            )
        return "\n".join(lines)


def compare_gradients(backprop: Mapping[str, np.ndarray], numerical: Mapping[str, np.ndarray]) -> GradientCheckReport:
    """Per-parameter differences between two gradient dicts with the same keys and shapes."""
    if set(backprop) != set(numerical):
        raise ValueError(f"gradients disagree on parameters: {sorted(backprop)} vs {sorted(numerical)}")
    rows = []
    for name in backprop:
        a = np.asarray(backprop[name], dtype=np.float64)
        n = np.asarray(numerical[name], dtype=np.float64)
        if a.shape != n.shape:
            raise ValueError(f"gradient {name!r}: backprop shape {a.shape} != numerical shape {n.shape}")
        diff = np.abs(a - n)
        scale = np.maximum(np.abs(a), np.abs(n))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        rows.append(
            ParameterDiff(
                name=name,
                shape=a.shape,
                max_abs_diff=float(diff.max(initial=0.0)),
                max_rel_diff=float(rel.max(initial=0.0)),
                mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                backprop=a,
                numerical=n,
            )
        )
    return GradientCheckReport(rows)


def gradient_check(
    loss: Callable[[], float],
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    h: float = 1e-4,
) -> GradientCheckReport:
    """Compare backprop ``grads`` with central differences of ``loss()`` for every array in ``params``.

    ``loss`` takes no argument and reads the parameters by reference, as the seed's networks do.
    ``grads`` must hold a gradient for every parameter and nothing else: a missing one would
    otherwise pass unchecked.
    """
    missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
    if missing or extra:
        raise ValueError("gradient_check: grads and params disagree: "
                         + "; ".join(part for part in (f"no gradient for {missing}" if missing else "",
                                                       f"gradients of unknown parameters {extra}" if extra else "") if part))
    numerical = {name: numerical_gradient(lambda _: loss(), params[name], h) for name in grads}
    return compare_gradients(grads, numerical)
