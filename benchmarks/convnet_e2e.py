"""The book's chapter 7 and 8 experiments end to end, every way a user might run them, side by side in one run.

--model simple-convnet (ch07/train_convnet.py): SimpleConvNet (conv 30 5x5 - relu - pool 2x2 -
affine 100 - relu - affine 10), weights of std 0.01. --model deep-convnet (ch08/train_deepnet.py):
DeepConvNet (six 3x3 convolutions of 16-64 filters, three poolings, affine 50, dropout 0.5
twice), He weights. Both float32, Adam lr 0.001, shuffled batches of 100; accuracy on the first
1000 test images after each epoch's first step and on the whole test set at the end. Every
variant starts from fastbp's initial weights for seed 0 (the book's loops from np.random.seed(0)),
and runs in its own process (no shared thread pools):

  fused-native      fastbp.train.Trainer, fused path (the whole network in the engine), native backend
  fused-numba       the same on the numba backend
  book-loop-fastbp  the book's network code (../shared/dlfs/ch07 or ch08) with fastbp's layers and Adam
  book-loop-numpy   the same loop with the book's own layers and Adam (NumPy, float64 as the book)
  torch-eager       idiomatic PyTorch: nn.Sequential built from the same architecture, F.cross_entropy,
                    optim.Adam (float32; its Dropout scales by 1 / (1 - p) in training, the book's at test)
  jax-jit           JAX, one jitted Adam step per batch (float32), the same architecture

    python benchmarks/convnet_e2e.py                        # ch07, 1200 iterations (2 epochs), table to stdout
    python benchmarks/convnet_e2e.py --iterations 12000     # the book's 20 epochs
    python benchmarks/convnet_e2e.py --model deep-convnet --iterations 300
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
from end_to_end import emit, ratio_text, run_rounds  # noqa: E402

ITERATIONS, BATCH, LR, PER_EPOCH, EVAL_SAMPLES = 1200, 100, 0.001, 600, 1000
BOOK = Path(__file__).resolve().parents[2] / "shared" / "dlfs"
VARIANTS = ("fused-native", "fused-numba", "book-loop-fastbp", "book-loop-numpy", "torch-eager", "jax-jit")
# model: (fastbp.nets class, the book's chapter folder, module and class)
MODELS = {"simple-convnet": ("SimpleConvNet", "ch07", "simple_convnet"),
          "deep-convnet": ("DeepConvNet", "ch08", "deep_convnet")}


def fastbp_net(model: str, backend=None):
    """The model as fastbp builds it: float32, the initial weights of seed 0."""
    import fastbp.nets

    return getattr(fastbp.nets, MODELS[model][0])(dtype=np.float32, backend=backend, seed=0)


def layer_flops(model: str) -> list[tuple[str, float]]:
    """(op, multiply-add FLOPs of its forward pass per sample) of each affine and conv layer."""
    from fastbp import architecture

    flops = []
    for layer in architecture.shapes(fastbp_net(model).architecture):
        if layer["op"] in ("affine", "conv"):
            W = next(iter(layer["params"].values()))
            per_output = int(np.prod(W[1:])) if layer["op"] == "conv" else W[0]
            flops.append((layer["op"], 2.0 * int(np.prod(layer["out"])) * per_output))
    return flops


def step_flops(model: str, batch: int = BATCH) -> float:
    """One training step, dense: each layer's forward, its weight gradient and its input gradient
    (not the first layer's: the data needs none), each as many FLOPs as the forward."""
    flops = [f for _, f in layer_flops(model)]
    return batch * (3 * sum(flops) - flops[0])


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

def run_fused(model, data, iterations, backend):
    from fastbp.train import TrainConfig, Trainer

    (x, t), (xt, tt) = data
    net = fastbp_net(model, backend)
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


def book_network(model: str, fastbp_layers: bool):
    """The book's network class, importing fastbp.layers in place of common.layers or not."""
    import importlib
    import types

    name, chapter, module = MODELS[model]
    sys.path[:0] = [str(BOOK), str(BOOK / chapter)]
    if fastbp_layers:
        import fastbp.layers

        import common  # noqa: F401
        sys.modules["common.layers"] = types.ModuleType("common.layers")
        sys.modules["common.layers"].__dict__.update({n: getattr(fastbp.layers, n) for n in fastbp.layers.__all__})
    return getattr(importlib.import_module(module), name)


def run_book_loop(model, data, iterations, fastbp_layers: bool):
    (x, t), (xt, tt) = data
    Network = book_network(model, fastbp_layers)
    if fastbp_layers:
        from fastbp.optim import Adam
    else:
        from common.optimizer import Adam
    np.random.seed(0)
    network = Network()  # the book's defaults are the experiment's
    optimizer = Adam(lr=LR)
    batches = shuffled_batches(x.shape[0], iterations)

    def step(i):  # the book's Trainer.train_step, without its per-step print
        grads = network.gradient(x[batches[i]], t[batches[i]])
        optimizer.update(network.params, grads)

    return timed(iterations, step, lambda: network.accuracy(xt[:EVAL_SAMPLES], tt[:EVAL_SAMPLES]),
                 lambda: network.accuracy(xt, tt))


def run_torch(model, data, iterations):
    import torch
    import torch.nn.functional as F

    (x, t), (xt, tt) = data
    torch.manual_seed(0)
    X, T = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    Xt, Tt = torch.from_numpy(xt), torch.from_numpy(tt.astype(np.int64))
    nn, net = torch.nn, fastbp_net(model)
    modules, flat, params = [], False, iter(net.param_layers)
    for layer in net.architecture["layers"]:  # the same architecture, the same initial weights
        op = layer["op"]
        if op == "conv":
            src = next(params)
            modules.append(nn.Conv2d(src.W.shape[1], layer["filters"], layer["size"], layer["stride"], layer["pad"]))
            modules[-1].weight.data[...], modules[-1].bias.data[...] = torch.from_numpy(src.W), torch.from_numpy(src.b)
        elif op == "pool":
            modules.append(nn.MaxPool2d(layer["size"], layer["stride"], layer["pad"]))
        elif op == "affine":
            src = next(params)
            modules += [] if flat else [nn.Flatten()]
            flat = True
            modules.append(nn.Linear(*src.W.shape))
            modules[-1].weight.data[...], modules[-1].bias.data[...] = torch.from_numpy(src.W.T), torch.from_numpy(src.b)
        elif op == "dropout":
            modules.append(nn.Dropout(layer["ratio"]))
        else:
            modules.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[op]())
    model_ = nn.Sequential(*modules)
    opt = torch.optim.Adam(model_.parameters(), lr=LR)
    batches = torch.from_numpy(shuffled_batches(x.shape[0], iterations))

    def step(i):
        model_.train()
        idx = batches[i]
        loss = F.cross_entropy(model_(X[idx]), T[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def accuracy(xs, ts):
        model_.eval()
        with torch.no_grad():
            return sum((model_(xs[s:s + 1000]).argmax(1) == ts[s:s + 1000]).sum().item()
                       for s in range(0, len(xs), 1000)) / len(xs)

    return timed(iterations, step, lambda: accuracy(Xt[:EVAL_SAMPLES], Tt[:EVAL_SAMPLES]), lambda: accuracy(Xt, Tt))


def run_jax(model, data, iterations):
    import jax
    import jax.numpy as jnp

    (x, t), (xt, tt) = data
    X, T = jnp.asarray(x), jnp.asarray(t.astype(np.int32))
    net = fastbp_net(model)
    layers = net.architecture["layers"]
    params = {name: jnp.asarray(value) for name, value in net.params.items()}  # the same initial weights

    def logits(p, xb, key=None):
        h, k = xb, 0
        for i, layer in enumerate(layers):
            op = layer["op"]
            if op == "conv":
                k += 1
                pad = [(layer["pad"], layer["pad"])] * 2
                h = jax.lax.conv_general_dilated(h, p[f"W{k}"], (layer["stride"],) * 2, pad)
                h = h + p[f"b{k}"][None, :, None, None]
            elif op == "pool":
                size, pad = layer["size"], ((0, 0), (0, 0)) + ((layer["pad"], layer["pad"]),) * 2
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, *size), (1, 1, layer["stride"], layer["stride"]),
                                          pad)
            elif op == "affine":
                k += 1
                h = h.reshape(h.shape[0], -1) @ p[f"W{k}"] + p[f"b{k}"]
            elif op == "dropout":  # the book's: a mask in training, 1 - ratio at test
                ratio = layer["ratio"]
                h = h * jax.random.bernoulli(jax.random.fold_in(key, i), 1 - ratio, h.shape) if key is not None \
                    else h * (1 - ratio)
            else:
                h = jax.nn.relu(h) if op == "relu" else jax.nn.sigmoid(h)
        return h

    def loss_fn(p, xb, tb, key):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(p, xb, key)), tb[:, None], axis=1))

    @jax.jit
    def update(p, m, v, step, idx):
        g = jax.grad(loss_fn)(p, X[idx], T[idx], jax.random.fold_in(jax.random.PRNGKey(0), step.astype(jnp.int32)))
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
    jax.block_until_ready(update(state["p"], state["m"], state["v"], jnp.float32(1.0), batches[0]))
    jax.block_until_ready(predict(params, jnp.asarray(xt[:1000])))
    compile_s = time.perf_counter() - t0

    def step(i):
        state["p"], state["m"], state["v"] = update(state["p"], state["m"], state["v"], jnp.float32(i + 1), batches[i])

    def accuracy(xs, ts):
        return sum(int(np.sum(np.asarray(predict(state["p"], jnp.asarray(xs[s:s + 1000]))) == ts[s:s + 1000]))
                   for s in range(0, len(xs), 1000)) / len(xs)

    result = timed(iterations, step, lambda: accuracy(xt[:EVAL_SAMPLES], tt[:EVAL_SAMPLES]), lambda: accuracy(xt, tt),
                   finish=lambda: jax.block_until_ready(state["p"]))
    return result | {"compile_s": compile_s}


def run_variant(model: str, name: str, iterations: int) -> dict:
    from fastbp.data import load_mnist

    data = load_mnist(flatten=False)
    if name.startswith("fused-"):
        return run_fused(model, data, iterations, name.split("-", 1)[1])
    if name.startswith("book-loop-"):
        if name == "book-loop-numpy":  # the book's own code reads float64 images as its load_mnist gives them
            (x, t), (xt, tt) = data
            data = (x.astype(np.float64), t), (xt.astype(np.float64), tt)
        return run_book_loop(model, data, iterations, fastbp_layers=name.endswith("fastbp"))
    if name == "torch-eager":
        return run_torch(model, data, iterations)
    if name == "jax-jit":
        return run_jax(model, data, iterations)
    raise ValueError(name)


def in_subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(MODELS), default="simple-convnet")
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, in turn: each row is the variant's median run, each "
                             "ratio the median of the rounds' ratios")
    args = parser.parse_args()
    if args.variant:  # child process: one variant, its result as JSON
        print(json.dumps(run_variant(args.model, args.variant, args.iterations)))
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    from machine import describe

    rounds, results = run_rounds(args.variants, args.rounds, lambda name: in_subprocess(
        ["--model", args.model, "--variant", name, "--iterations", str(args.iterations)]))
    peak = float(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; "
                                 "from machine import matmul_peak; print(matmul_peak(np.float32))", os.path.dirname(__file__)],
                                capture_output=True, text=True, check=True).stdout)
    split = results.get("fused-native", {}).get("split")
    base = "torch-eager" if "seconds" in results.get("torch-eager", {}) else None
    lines = [
        f"Machine: {describe()}",
        f"Experiment: the book's {MODELS[args.model][1]} {MODELS[args.model][0]}, Adam lr {LR}, shuffled batches of "
        f"{BATCH}, {args.iterations} iterations, accuracy on {EVAL_SAMPLES} test images per epoch and on all 10000 at "
        f"the end; {step_flops(args.model) / 1e6:.0f} MFLOP per step (dense).",
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
        gflops = step_flops(args.model) * args.iterations / r["train_s"] / 1e9
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
    emit(lines, results, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
