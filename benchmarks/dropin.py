"""Drop-in: the book's own code with fastbp's layers and optimizers in place of its own, against
the book's NumPy, side by side, each variant in a fresh process, rounds taken in turn (A B A B).

Three kinds of measurement:

  steps     the book's TwoLayerNet (ch05/two_layer_net.py: float64 weights, float32 MNIST images,
            one-hot labels) forward + backward (network.gradient) at batch 1, 3 and 100, and its
            SGD update; median microseconds per step in a process that imports one or the other
  convnet   the book's ch07 training loop: its SimpleConvNet (float64) gradient and its Adam update
            on shuffled batches of 100, as its Trainer runs them; median milliseconds per iteration
  layers    each layer of chapters 6-7 forward + backward at the SimpleConvNet shapes (batch 100,
            float32 images into float64 weights, as the book feeds them), in a process that
            imports one or the other (the book's alone never imports fastbp); median milliseconds
  scripts   whole processes of the book's scripts through ../shared/dlfs/run_with_fastbp.sh
            (ch05 gradient_check.py, train_neuralnet.py, ...): wall seconds

    python benchmarks/dropin.py                          # both, 3 rounds, table to stdout
    python benchmarks/dropin.py --only steps --rounds 5
    python benchmarks/dropin.py --scripts ch05/gradient_check.py ch07/gradient_check.py

Ratios are the book's time over fastbp's (above 1: fastbp is faster), the median of the rounds'
ratios, with their range. Needs ../shared/dlfs beside the checkout and MNIST in FASTBP_DATA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOK = HERE.parent.parent / "shared" / "dlfs"
BATCHES = (1, 3, 100)
DEFAULT_SCRIPTS = ("ch05/gradient_check.py", "ch05/train_neuralnet.py")

# Runs in the child: the book's TwoLayerNet from a copy of the book whose common/layers.py is
# either the book's or fastbp's; prints {batch: median us per gradient+update}.
STEP_CHILD = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "ch05"))
from two_layer_net import TwoLayerNet
from fastbp.data import load_mnist
(x, t), _ = load_mnist(one_hot_label=True)
np.random.seed(0)
net = TwoLayerNet(784, 50, 10)
result = {}
for batch in json.loads(sys.argv[1]):
    idx = np.random.choice(60000, (400, batch))
    times = []
    for i in range(400):
        xb, tb = x[idx[i]], t[idx[i]]
        start = time.perf_counter()
        grads = net.gradient(xb, tb)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * grads[key]
        times.append(time.perf_counter() - start)
    kept = sorted(times[50:])  # the first 50 warm caches and thread pools
    result[batch] = kept[len(kept) // 2] * 1e6
print(json.dumps(result))
"""


# The book's ch07 loop: SimpleConvNet, Adam(lr=0.001), batches of 100 as its Trainer draws them.
CONVNET_CHILD = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "ch07"))
from simple_convnet import SimpleConvNet
from common.optimizer import Adam
from fastbp.data import load_mnist
(x, t), _ = load_mnist(flatten=False)
np.random.seed(0)
net = SimpleConvNet()
opt = Adam(lr=0.001)
times = []
for i in range(int(sys.argv[1])):
    mask = np.random.choice(x.shape[0], 100)
    start = time.perf_counter()
    grads = net.gradient(x[mask], t[mask])
    opt.update(net.params, grads)
    times.append(time.perf_counter() - start)
kept = sorted(times[3:])
print(json.dumps({"ms": kept[len(kept) // 2] * 1e3}))
"""


def book_copy(variant: str) -> Path:
    """A temporary copy of the book; for 'fastbp', common/layers.py and common/optimizer.py import fastbp's."""
    work = Path(tempfile.mkdtemp(prefix=f"dlfs-{variant}-"))
    for part in ("common", "dataset", "ch05", "ch07"):
        shutil.copytree(BOOK / part, work / part)
    if variant == "fastbp":
        (work / "common" / "layers.py").write_text("from fastbp.layers import *  # noqa: F401,F403\n")
        (work / "common" / "optimizer.py").write_text("from fastbp.optim import *  # noqa: F401,F403\n")
    return work


def child_env(variant: str) -> dict:
    """The book's variant runs as the book does without fastbp: where its child imports fastbp (only
    to read MNIST), glibc's malloc keeps its own thresholds (fastbp/_malloc.py)."""
    return os.environ | ({"FASTBP_MALLOC": "system"} if variant == "book" else {})


def steps(variant: str) -> dict:
    work = book_copy(variant)
    try:
        out = subprocess.run([sys.executable, "-c", STEP_CHILD, json.dumps(list(BATCHES))], cwd=work, check=True,
                             env=child_env(variant),
                             capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


# Runs in the child: each layer of chapters 6-7 from the copy's common/layers.py (the book's or
# fastbp's), forward + backward at SimpleConvNet's shapes; prints {name: median ms}.
LAYER_CHILD = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.getcwd())
from common import layers as m
rng = np.random.default_rng(0)
x = rng.random((100, 1, 28, 28), dtype=np.float32)
W, b = rng.standard_normal((30, 1, 5, 5)) * 0.01, np.zeros(30)
h = np.maximum(rng.standard_normal((100, 30, 24, 24)), 0)
flat = rng.standard_normal((100, 100))
dconv, dpool = rng.standard_normal((100, 30, 24, 24)), rng.standard_normal((100, 30, 12, 12))
cases = [
    ("Convolution 30x1x5x5", lambda: m.Convolution(W, b), x, dconv),
    ("Pooling 2x2 stride 2", lambda: m.Pooling(2, 2, stride=2), h, dpool),
    ("Relu 100x30x24x24", lambda: m.Relu(), h - 0.5, dconv),
    ("BatchNormalization 100x100", lambda: m.BatchNormalization(np.ones(100), np.zeros(100)), flat, flat),
    ("Dropout 0.5, 100x100", lambda: m.Dropout(0.5), flat, flat),
    ("Dropout 0.5, 100x30x24x24", lambda: m.Dropout(0.5), h, dconv),
]
def per_call(layer, inputs, dout, calls):
    start = time.perf_counter()
    for _ in range(calls):
        layer.forward(inputs)
        layer.backward(dout)
    return (time.perf_counter() - start) / calls

result = {}
for name, make, inputs, dout in cases:
    layer = make()
    first = min(per_call(layer, inputs, dout, 1) for _ in range(3))  # warms caches and thread pools
    calls = max(1, int(0.01 / first))  # samples of at least 10 ms: small layers' calls are microseconds
    samples = sorted(per_call(layer, inputs, dout, calls) for _ in range(9))
    result[name] = samples[4] * 1e3  # the median sample's time per call
print(json.dumps(result))
"""


def layer_ms(variant: str) -> dict:
    work = book_copy(variant)
    try:
        out = subprocess.run([sys.executable, "-c", LAYER_CHILD], cwd=work, check=True, env=child_env(variant),
                             capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])


def convnet_ms(variant: str, iterations: int) -> float:
    work = book_copy(variant)
    try:
        out = subprocess.run([sys.executable, "-c", CONVNET_CHILD, str(iterations)], cwd=work, check=True,
                             env=child_env(variant),
                             capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])["ms"]


def script_seconds(script: str, variant: str) -> float:
    command = [str(BOOK / "run_with_fastbp.sh"), *(["--original"] if variant == "book" else []), script]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=os.environ | {"PYTHON": sys.executable})
    return time.perf_counter() - start


def ratio_summary(book: list[float], fast: list[float]) -> str:
    ratios = [b / f for b, f in zip(book, fast)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="times each variant runs, in turn (default: 3)")
    parser.add_argument("--only", choices=["steps", "layers", "convnet", "scripts"], default=None,
                        help="one kind of measurement")
    parser.add_argument("--iterations", type=int, default=23, help="iterations of the ch07 loop per run (default: 23)")
    parser.add_argument("--scripts", nargs="+", default=list(DEFAULT_SCRIPTS), metavar="CH/SCRIPT.py",
                        help=f"the book's scripts to time whole (default: {' '.join(DEFAULT_SCRIPTS)})")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not BOOK.is_dir():
        parser.error(f"the book's code is not at {BOOK}")
    if not os.environ.get("FASTBP_DATA"):
        parser.error("set FASTBP_DATA to the MNIST folder")
    sys.path.insert(0, str(HERE))
    from machine import describe

    print(describe())
    print(f"Rounds: {args.rounds}, variants in turn; ratios: the book's time / fastbp's, median (range)\n")
    if args.only in (None, "steps"):
        runs = {"book": [], "fastbp": []}
        for r in range(args.rounds):
            for variant in runs:
                print(f"steps: {variant} (round {r + 1} of {args.rounds}) ...", file=sys.stderr)
                runs[variant].append(steps(variant))
        # the book's own step time is bimodal from process to process (batch 100 on the 2-core AMD
        # machine: about 540 us in some processes, 1100-1550 in others, the same code and data), so
        # the last column holds fastbp against the book's fastest round as well
        print("| the book's TwoLayerNet: gradient + SGD update | book's layers, us | fastbp's layers, us | speed-up "
              "| against the book's fastest round |")
        print("|---|---:|---:|---:|---:|")
        for batch in BATCHES:
            book = [run[batch] for run in runs["book"]]
            fast = [run[batch] for run in runs["fastbp"]]
            print(f"| batch {batch} | {statistics.median(book):.0f} | {statistics.median(fast):.0f} | "
                  f"{ratio_summary(book, fast)} | {min(book) / statistics.median(fast):.2f}x |")
        print()
    if args.only in (None, "layers"):
        runs = {"book": [], "fastbp": []}
        for r in range(args.rounds):
            for variant in runs:
                print(f"layers: {variant} (round {r + 1} of {args.rounds}) ...", file=sys.stderr)
                runs[variant].append(layer_ms(variant))
        print("| layer, forward + backward (batch 100) | book's, ms | fastbp's (native), ms | speed-up |")
        print("|---|---:|---:|---:|")
        for name in runs["book"][0]:
            book, fast = [run[name] for run in runs["book"]], [run[name] for run in runs["fastbp"]]
            print(f"| {name} | {statistics.median(book):.2f} | {statistics.median(fast):.2f} | {ratio_summary(book, fast)} |")
        print()
    if args.only in (None, "convnet"):
        runs = {"book": [], "fastbp": []}
        for r in range(args.rounds):
            for variant in runs:
                print(f"convnet: {variant} (round {r + 1} of {args.rounds}) ...", file=sys.stderr)
                runs[variant].append(convnet_ms(variant, args.iterations))
        print("| the book's ch07 loop (SimpleConvNet, Adam, batch 100) | book's layers, ms/iteration | "
              "fastbp's layers, ms/iteration | speed-up |")
        print("|---|---:|---:|---:|")
        print(f"| gradient + update | {statistics.median(runs['book']):.1f} | {statistics.median(runs['fastbp']):.1f} | "
              f"{ratio_summary(runs['book'], runs['fastbp'])} |")
        print()
    if args.only in (None, "scripts"):
        print("| the book's script, whole process | book's layers, s | fastbp's layers, s | speed-up |")
        print("|---|---:|---:|---:|")
        for script in args.scripts:
            times = {"book": [], "fastbp": []}
            for r in range(args.rounds):
                for variant in times:
                    print(f"{script}: {variant} (round {r + 1} of {args.rounds}) ...", file=sys.stderr)
                    times[variant].append(script_seconds(script, variant))
            print(f"| {script} | {statistics.median(times['book']):.2f} | {statistics.median(times['fastbp']):.2f} | "
                  f"{ratio_summary(times['book'], times['fastbp'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
