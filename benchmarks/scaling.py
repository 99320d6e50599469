"""Time per training step against batch size and hidden width, for each backend, as PNG plots.

One step = forward, softmax-with-loss, backward and SGD update of a 784-H-10 ReLU network
(float32), run through the backend's train_steps (the fused path), median of several blocks.

    python benchmarks/scaling.py --out benchmarks/results     # writes scaling_batch.png, scaling_width.png, scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import fastbp
from fastbp import backends, engine

BATCHES = [1, 4, 16, 64, 100, 256, 1024, 4096]
WIDTHS = [16, 64, 256, 1024, 4096]


def step_seconds(backend: str, batch: int, hidden: int, budget: float = 0.4) -> float:
    rng = np.random.default_rng(0)
    sizes = np.array([784, hidden, 10])
    params = (rng.standard_normal(engine.parameter_count(sizes)) * 0.01).astype(np.float32)
    program = engine.mlp_program(sizes, "relu")
    grads, state = np.zeros_like(params), np.zeros((2, params.size), np.float32)
    x = rng.random((8192, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 8192)
    hyper = engine.hyper_vector(np.float32, 0.01)
    ops = backends.get(backend)

    def block(steps):
        batches = rng.integers(0, 8192, (steps, batch))
        losses = np.empty(steps)
        start = time.perf_counter()
        ops.train_steps(x, labels, batches, params, grads, program, engine.SGD, hyper, state, 0, losses)
        return (time.perf_counter() - start) / steps

    first = block(1)  # compiles (numba) and sizes the blocks
    steps = max(1, min(200, int(budget / 5 / max(first, 1e-6))))
    return float(np.median([block(steps) for _ in range(5)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--backends", nargs="+", default=fastbp.available_backends())
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = {"batch": {}, "width": {}}
    for b in args.backends:
        results["batch"][b] = {n: step_seconds(b, n, 50) for n in BATCHES}
        results["width"][b] = {h: step_seconds(b, 100, h) for h in WIDTHS}
        print(b, {k: f"{v * 1e6:.0f}us" for k, v in results["batch"][b].items()},
              {k: f"{v * 1e6:.0f}us" for k, v in results["width"][b].items()}, file=sys.stderr)
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(results, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, xlabel, title in (("batch", "batch size (784-50-10)", "scaling_batch.png"),
                               ("width", "hidden width (batch 100)", "scaling_width.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b, series in results[key].items():
            xs = list(series)
            ax.loglog(xs, [series[x] * 1e6 for x in xs], marker="o", label=b)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("µs per training step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, title), dpi=100)
        plt.close(fig)
    print(f"wrote {args.out}/scaling_batch.png, scaling_width.png, scaling.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
