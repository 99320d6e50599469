"""The seed's central claim, measured: one full gradient of the 784-50-10 network by central
differences against one by backpropagation, on a mini-batch of 100 MNIST images. Each backend
runs in a process of its own (two BLAS thread pools in one process slow each other down).

    python benchmarks/gradient_cost.py            # needs FASTBP_DATA
"""

import subprocess
import sys
import time

import fastbp


def measure(backend: str) -> str:
    from fastbp.data import load_mnist
    from fastbp.nets import TwoLayerNet

    (x, t), _ = load_mnist()
    x_batch, t_batch = x[:100], t[:100]
    net = TwoLayerNet(784, 50, 10, backend=backend, seed=0)
    net.gradient(x_batch, t_batch)  # compile
    start = time.perf_counter()
    for _ in range(50):
        net.gradient(x_batch, t_batch)
    backprop = (time.perf_counter() - start) / 50
    start = time.perf_counter()
    net.numerical_gradient(x_batch, t_batch)
    numerical = time.perf_counter() - start
    return (f"| {backend} | {numerical:.2f} s | {backprop * 1e3:.2f} ms | {numerical / backprop:,.0f}x | "
            f"{numerical * 10000 / 3600:.1f} h | {backprop * 10000:.1f} s |")


def main() -> int:
    if len(sys.argv) > 1:
        print(measure(sys.argv[1]))
        return 0
    print("784-50-10 TwoLayerNet (float64), batch 100 of MNIST, one full gradient:\n")
    print("| backend | numerical | backprop | ratio | 10000 steps, numerical | 10000 steps, backprop |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in fastbp.available_backends():
        out = subprocess.run([sys.executable, __file__, backend], capture_output=True, text=True, check=True)
        print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
