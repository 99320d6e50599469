"""The book's chapter 7 experiment end to end, every way a user might run it, side by side in one run.

SimpleConvNet (conv 30 5x5 - relu - pool 2x2 - affine 100 - relu - affine 10), weights of std
0.01, float32, Adam lr 0.001, shuffled batches of 100; accuracy on the first 1000 test images
after each epoch's first step and on the whole test set at the end. Each variant runs in its
own process (no shared thread pools):

  fused-native      fastbp.train.Trainer, fused path (conv and pooling in the engine), native backend
  fused-numba       the same on the numba backend
  book-loop-fastbp  the book's SimpleConvNet code (../shared/dlfs/ch07) with fastbp's layers and Adam
  book-loop-numpy   the same loop with the book's own layers and Adam (NumPy, float64 as the book)
  torch-eager       idiomatic PyTorch: nn.Sequential, F.cross_entropy, optim.Adam (float32)
  jax-jit           JAX, one jitted Adam step per batch (float32)

    python benchmarks/convnet_e2e.py                        # 1200 iterations (2 epochs), table to stdout
    python benchmarks/convnet_e2e.py --iterations 12000     # the book's 20 epochs
    python benchmarks/convnet_e2e.py --rounds 3 --markdown out.md

Also reported: ms per training iteration, where the native engine's time went (its own
account per op: fastbp.backends.native.engine_seconds), and the achieved GFLOP/s against
NumPy's float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from end_to_end import median_run, ratio_text  # noqa: E402

ITERATIONS, BATCH, LR, PER_EPOCH, EVAL_SAMPLES = 1200, 100, 0.001, 600, 1000
FILTERS, KERNEL, HIDDEN = 30, 5, 100
BOOK = Path(__file__).resolve().parents[2] / "shared" / "dlfs"
VARIANTS = ("fused-native", "fused-numba", "book-loop-fastbp", "book-loop-numpy", "torch-eager", "jax-jit")


def step_flops(batch: int = BATCH) -> float:
    """One training step, dense: conv forward and its weight gradient (no dx: the data), the hidden
    affine's forward, dW and dx, the output affine's (small)."""
    conv = 2 * 24 * 24 * FILTERS * KERNEL * KERNEL
    hidden = 2 * FILTERS * 12 * 12 * HIDDEN
    out = 2 * HIDDEN * 10
    return batch * (2 * conv + 3 * hidden + 3 * out)


def eval_flops(n: int) -> float:
    return n * (2 * 24 * 24 * FILTERS * KERNEL * KERNEL + 2 * FILTERS * 12 * 12 * HIDDEN + 2 * HIDDEN * 10)


def shuffled_batches(n: int, iterations: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    epochs = -(-iterations * BATCH // (n // BATCH * BATCH))
    order = np.concatenate([rng.permutation(n)[:n // BATCH * BATCH] for _ in range(epochs)])
    return order[:iterations * BATCH].reshape(iterations, BATCH)


def timed(iterations, step, evaluate, final, finish=None) -> dict:
    """step(i) per iteration; evaluate() after each epoch's first step; final() at the end."""
    eval_s, evals = 0.0, 0
    start = time.perf_counter()
    for i in range(iterations):
        step(i)
        if i % PER_EPOCH == 0:
            t0 = time.perf_counter()
            evaluate()
            eval_s += time.perf_counter() - t0
            evals += 1
    if finish:
        finish()
    t0 = time.perf_counter()
    test_acc = final()
    eval_s += time.perf_counter() - t0
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "train_s": seconds - eval_s, "eval_s": eval_s, "test_acc": test_acc, "evaluations": evals,
            "ms_per_iteration": 1e3 * (seconds - eval_s) / iterations}


# ---- variants -------------------------------------------------------------------------------

def run_fused(data, iterations, backend):
    from fastbp.nets import SimpleConvNet
    from fastbp.train import TrainConfig, Trainer

    (x, t), (xt, tt) = data
    net = SimpleConvNet(dtype=np.float32, backend=backend, seed=0)
    if backend == "native":
        from fastbp.backends import native

        native.engine_seconds(reset=True)
    config = TrainConfig(iterations=iterations, batch_size=BATCH, lr=LR, optimizer="adam", sampling="shuffle",
                         eval_every=PER_EPOCH, eval_at_end=False, eval_samples=EVAL_SAMPLES, progress=False)
    start = time.perf_counter()
    history = Trainer(net, config).fit(x, t, xt[:EVAL_SAMPLES], tt[:EVAL_SAMPLES])
    t0 = time.perf_counter()
    test_acc = net.accuracy(xt, tt)
    final_s = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "train_s": history.train_seconds, "eval_s": seconds - history.train_seconds,
              "test_acc": test_acc, "evaluations": len(history.evaluations), "final_eval_s": final_s,
              "ms_per_iteration": 1e3 * history.train_seconds / iterations}
    if backend == "native":  # where the engine's time went (evaluations' forward passes included)
        result["split"] = native.engine_seconds()
    return result


def book_simple_convnet(fastbp_layers: bool):
    """The book's ch07 SimpleConvNet class, importing fastbp.layers in place of common.layers or not."""
    import importlib
    import types

    sys.path[:0] = [str(BOOK), str(BOOK / "ch07")]
    if fastbp_layers:
        import fastbp.layers

        import common  # noqa: F401
        sys.modules["common.layers"] = types.ModuleType("common.layers")
        sys.modules["common.layers"].__dict__.update({n: getattr(fastbp.layers, n) for n in fastbp.layers.__all__})
    return importlib.import_module("simple_convnet").SimpleConvNet


def run_book_loop(data, iterations, fastbp_layers: bool):
    (x, t), (xt, tt) = data
    SimpleConvNet = book_simple_convnet(fastbp_layers)
    if fastbp_layers:
        from fastbp.optim import Adam
    else:
        from common.optimizer import Adam
    np.random.seed(0)
    network = SimpleConvNet(input_dim=(1, 28, 28), conv_param={"filter_num": FILTERS, "filter_size": KERNEL, "pad": 0,
                                                               "stride": 1},
                            hidden_size=HIDDEN, output_size=10, weight_init_std=0.01)
    optimizer = Adam(lr=LR)
    batches = shuffled_batches(x.shape[0], iterations)

    def step(i):  # the book's Trainer.train_step, without its per-step print
        grads = network.gradient(x[batches[i]], t[batches[i]])
        optimizer.update(network.params, grads)

    return timed(iterations, step, lambda: network.accuracy(xt[:EVAL_SAMPLES], tt[:EVAL_SAMPLES]),
                 lambda: network.accuracy(xt, tt))


def run_torch(data, iterations):
    import torch
    import torch.nn.functional as F

    (x, t), (xt, tt) = data
    torch.manual_seed(0)
    X, T = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    Xt, Tt = torch.from_numpy(xt), torch.from_numpy(tt.astype(np.int64))
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, FILTERS, KERNEL), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(FILTERS * 12 * 12, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    for layer in (model[0], model[4], model[6]):
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    batches = torch.from_numpy(shuffled_batches(x.shape[0], iterations))

    def step(i):
        idx = batches[i]
        loss = F.cross_entropy(model(X[idx]), T[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def accuracy(xs, ts):
        with torch.no_grad():
            return sum((model(xs[s:s + 1000]).argmax(1) == ts[s:s + 1000]).sum().item()
                       for s in range(0, len(xs), 1000)) / len(xs)

    return timed(iterations, step, lambda: accuracy(Xt[:EVAL_SAMPLES], Tt[:EVAL_SAMPLES]), lambda: accuracy(Xt, Tt))


def run_jax(data, iterations):
    import jax
    import jax.numpy as jnp

    (x, t), (xt, tt) = data
    X, T = jnp.asarray(x), jnp.asarray(t.astype(np.int32))
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"W1": 0.01 * jax.random.normal(k1, (FILTERS, 1, KERNEL, KERNEL)), "b1": jnp.zeros(FILTERS),
              "W2": 0.01 * jax.random.normal(k2, (FILTERS * 144, HIDDEN)), "b2": jnp.zeros(HIDDEN),
              "W3": 0.01 * jax.random.normal(k3, (HIDDEN, 10)), "b3": jnp.zeros(10)}

    def logits(p, xb):
        h = jax.lax.conv_general_dilated(xb, p["W1"], (1, 1), "VALID") + p["b1"][None, :, None, None]
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["W2"] + p["b2"])
        return h @ p["W3"] + p["b3"]

    def loss_fn(p, xb, tb):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(p, xb)), tb[:, None], axis=1))

    @jax.jit
    def update(p, m, v, step, idx):
        g = jax.grad(loss_fn)(p, X[idx], T[idx])
        lr_t = LR * jnp.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
        m = jax.tree_util.tree_map(lambda m_, g_: m_ + 0.1 * (g_ - m_), m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: v_ + 0.001 * (g_ * g_ - v_), v, g)
        p = jax.tree_util.tree_map(lambda p_, m_, v_: p_ - lr_t * m_ / (jnp.sqrt(v_) + 1e-7), p, m, v)
        return p, m, v

    predict = jax.jit(lambda p, xb: jnp.argmax(logits(p, xb), axis=1))
    state = {"p": params, "m": jax.tree_util.tree_map(jnp.zeros_like, params),
             "v": jax.tree_util.tree_map(jnp.zeros_like, params)}
    batches = jnp.asarray(shuffled_batches(x.shape[0], iterations))
    t0 = time.perf_counter()
    jax.block_until_ready(update(state["p"], state["m"], state["v"], 1.0, batches[0]))
    jax.block_until_ready(predict(params, jnp.asarray(xt[:1000])))
    compile_s = time.perf_counter() - t0

    def step(i):
        state["p"], state["m"], state["v"] = update(state["p"], state["m"], state["v"], float(i + 1), batches[i])

    def accuracy(xs, ts):
        return sum(int(np.sum(np.asarray(predict(state["p"], jnp.asarray(xs[s:s + 1000]))) == ts[s:s + 1000]))
                   for s in range(0, len(xs), 1000)) / len(xs)

    result = timed(iterations, step, lambda: accuracy(xt[:EVAL_SAMPLES], tt[:EVAL_SAMPLES]), lambda: accuracy(xt, tt),
                   finish=lambda: jax.block_until_ready(state["p"]))
    return result | {"compile_s": compile_s}


def run_variant(name: str, iterations: int) -> dict:
    from fastbp.data import load_mnist

    data = load_mnist(flatten=False)
    if name.startswith("fused-"):
        return run_fused(data, iterations, name.split("-", 1)[1])
    if name.startswith("book-loop-"):
        if name == "book-loop-numpy":  # the book's own code reads float64 images as its load_mnist gives them
            (x, t), (xt, tt) = data
            data = (x.astype(np.float64), t), (xt.astype(np.float64), tt)
        return run_book_loop(data, iterations, fastbp_layers=name.endswith("fastbp"))
    if name == "torch-eager":
        return run_torch(data, iterations)
    if name == "jax-jit":
        return run_jax(data, iterations)
    raise ValueError(name)


def in_subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, in turn: each row is the variant's median run, each "
                             "ratio the median of the rounds' ratios")
    args = parser.parse_args()
    if args.variant:  # child process: one variant, its result as JSON
        print(json.dumps(run_variant(args.variant, args.iterations)))
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    from machine import describe

    rounds = []
    for r in range(args.rounds):
        rounds.append({})
        for name in args.variants:
            print(f"running {name} (round {r + 1} of {args.rounds}) ...", file=sys.stderr, flush=True)
            rounds[-1][name] = in_subprocess(["--variant", name, "--iterations", str(args.iterations)])
    results = {name: median_run([rnd[name] for rnd in rounds]) for name in args.variants}
    peak = float(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; "
                                 "from machine import matmul_peak; print(matmul_peak(np.float32))", os.path.dirname(__file__)],
                                capture_output=True, text=True, check=True).stdout)
    split = results.get("fused-native", {}).get("split")
    base = "torch-eager" if "seconds" in results.get("torch-eager", {}) else None
    lines = [
        f"Machine: {describe()}",
        f"Experiment: the book's ch07 SimpleConvNet, Adam lr {LR}, shuffled batches of {BATCH}, {args.iterations} "
        f"iterations, accuracy on {EVAL_SAMPLES} test images per epoch and on all 10000 at the end; "
        f"{step_flops() / 1e6:.0f} MFLOP per step (dense).",
        f"Rounds: {args.rounds}" + (" (rows: each variant's median run; ratios: median of the rounds' ratios, range in "
                                    "brackets)" if args.rounds > 1 else ""),
        f"float32 matmul peak (NumPy BLAS, 1024^3, all threads): {peak:.1f} GFLOP/s",
        "",
        f"| variant | total s | train s | ms / iteration | test acc (10000) | train GFLOP/s | % of peak | "
        f"train time / {base or 'torch-eager'} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | |")
            continue
        gflops = step_flops() * args.iterations / r["train_s"] / 1e9
        ratio = ratio_text([rnd[name]["train_s"] / rnd[base]["train_s"] for rnd in rounds
                            if base and "seconds" in rnd[name] and "seconds" in rnd.get(base, {})])
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['train_s']:.1f} | {r['ms_per_iteration']:.1f} | "
                     f"{r['test_acc']:.4f} | {gflops:.1f} | {100 * gflops / peak:.0f}% | {ratio} |")
    if split:
        total = sum(split.values())
        lines += ["", "Where fused-native's engine time went (its own account, training and evaluation passes; conv "
                      "forward and backward include the ReLU and pooling fused into them):", "",
                  "| op | s | ms / iteration | share |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v:.2f} | {1e3 * v / args.iterations:.2f} | {100 * v / total:.0f}% |"
                  for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v >= 0.0005 * total]
        lines.append(f"| sum | {total:.2f} | {1e3 * total / args.iterations:.2f} | |")
    if "jax-jit" in results and "compile_s" in results["jax-jit"]:
        lines.append(f"\nJAX compile time (excluded above): {results['jax-jit']['compile_s']:.2f} s")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
