"""Dense rows against compact rows on the native backend, by the input's density.

The seed's network (784-50-10, float32, batch 100, SGD) on synthetic inputs of MNIST's shape
with a chosen fraction of nonzero entries: microseconds per training step (train_steps) and per
1000 predicted rows (predict_labels), dense and compact, median of several blocks, alternated
in one process. The crossover sets fastbp.backends.native.COMPACT_MAX_DENSITY.

    python benchmarks/compact_rows.py                       # densities 0.05 ... 0.6
    python benchmarks/compact_rows.py --densities 0.19 0.5 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fastbp import engine
from fastbp.backends import native

SIZES = np.array([784, 50, 10])
ROWS, BATCH, STEPS = 20000, 100, 200


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(density: float, repeats: int, rng) -> dict:
    x = rng.random((ROWS, SIZES[0]), dtype=np.float32)
    x[rng.random(x.shape) >= density] = 0
    labels = rng.integers(0, 10, ROWS)
    batches = rng.integers(0, ROWS, (STEPS, BATCH))
    count = engine.parameter_count(SIZES)
    program = engine.mlp_program(SIZES, "relu")
    start = (rng.standard_normal(count) * 0.01).astype(np.float32)
    hyper = engine.hyper_vector(np.float32, 0.1)
    forms = {"dense": x, "compact": native.CompactRows(x)}
    result = {"density": float(np.count_nonzero(x) / x.size)}
    for name, rows in forms.items():
        params, grads = start.copy(), np.zeros_like(start)
        state, losses = np.zeros((2, count), np.float32), np.zeros(STEPS)

        def train():
            native.train_steps(rows, labels, batches, params, grads, program, engine.SGD, hyper, state, 0, losses)

        def predict():
            native.predict_labels(rows, params, program)

        train()  # warm caches and BLAS threads
        result[f"{name}_step_us"] = timed(train, repeats) / STEPS * 1e6
        result[f"{name}_predict_us"] = timed(predict, repeats) / ROWS * 1000 * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.1, 0.19, 0.3, 0.4, 0.5, 0.6],
                        help="fractions of nonzero inputs to measure (MNIST: 0.19)")
    parser.add_argument("--repeats", type=int, default=5, help="blocks per measurement; the median is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"native backend, {SIZES[0]}-{SIZES[1]}-{SIZES[2]} float32, batch {BATCH}; "
          f"current threshold COMPACT_MAX_DENSITY = {native.COMPACT_MAX_DENSITY}")
    print("| density | dense step us | compact step us | step speedup | dense predict us/1000 rows "
          "| compact predict us/1000 rows | predict speedup |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for density in args.densities:
        r = measure(density, args.repeats, rng)
        print(f"| {r['density']:.2f} | {r['dense_step_us']:.0f} | {r['compact_step_us']:.0f} "
              f"| {r['dense_step_us'] / r['compact_step_us']:.2f}x | {r['dense_predict_us']:.0f} "
              f"| {r['compact_predict_us']:.0f} | {r['dense_predict_us'] / r['compact_predict_us']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
