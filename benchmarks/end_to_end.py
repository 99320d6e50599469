"""The seed's experiment end to end, every way a user might run it, side by side in one run.

784-50-10 ReLU network, weights of std 0.01, batch 100 drawn with replacement, SGD lr 0.1,
10000 iterations, accuracy on the full train and test sets after iteration i when
i % 600 == 0 (17 evaluations). Each variant runs in its own process (no shared thread pools):

  fused-native       fastbp.train.Trainer, fused path on the native (C) backend, float32
                     (MNIST kept as compact rows: the first layer skips the 81% zero pixels)
  fused-native-dense the same with the images kept dense (first layer through BLAS)
  fused-numba        the same on the numba backend
  seed-loop-native   the seed's loop verbatim, TwoLayerNet with fastbp's native layers (float64, as the seed)
  seed-loop-numba    the same loop with the numba layers
  seed-loop-reference  the same loop with the reference (NumPy) layers
  torch-eager        idiomatic PyTorch: nn.Sequential, F.cross_entropy, optim.SGD (float32)
  jax-jit            JAX, one jitted update per step, batch gathered inside the jit (float32)

    python benchmarks/end_to_end.py                      # all variants, table to stdout
    python benchmarks/end_to_end.py --markdown out.md    # also write the table
    python benchmarks/end_to_end.py --rounds 3           # every variant three times, in turn: medians
    python benchmarks/end_to_end.py --whole-process 5    # `fastbp train` against the PyTorch script, whole
                                                         # processes (imports, MNIST's load), five pairs in turn

Also reported: numba compile time of the fused path on a fresh cache and on a warm one, and the
achieved GFLOP/s (dense-equivalent FLOPs / seconds) against NumPy's float32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import statistics
import sys
import tempfile
import time

import numpy as np

ITERATIONS, BATCH, LR, HIDDEN = 10000, 100, 0.1, 50
VARIANTS = ("fused-native", "fused-native-dense", "fused-numba", "seed-loop-native", "seed-loop-numba", "seed-loop-reference",
            "torch-eager", "jax-jit")


def experiment_flops(iterations: int, evaluations: int, n_eval: int = 70000, density: float = 1.0) -> float:
    """FLOPs of forward and weight gradients of both layers, dx of the second only. density < 1:
    the first layer's products on compact rows, which skip the zero inputs' terms."""
    fwd = 2 * (784 * HIDDEN * density + HIDDEN * 10)
    per_step = BATCH * (2 * fwd + 2 * HIDDEN * 10)
    return iterations * per_step + evaluations * n_eval * fwd


def eval_points(iterations, per_epoch=600):
    return {i for i in range(iterations) if i % per_epoch == 0}


def timed_loop(iterations, step, evaluate, finish=None, per_epoch=600) -> dict:
    """step(i) for every iteration, evaluate() -> test accuracy after step i when i % per_epoch == 0."""
    eval_s, test_acc, evals = 0.0, None, 0
    start = time.perf_counter()
    for i in range(iterations):
        step(i)
        if i % per_epoch == 0:
            t0 = time.perf_counter()
            test_acc = evaluate()
            eval_s += time.perf_counter() - t0
            evals += 1
    if finish:
        finish()  # wait for work still queued (JAX dispatches asynchronously)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "train_s": seconds - eval_s, "eval_s": eval_s, "test_acc": test_acc, "evaluations": evals}


# ---- variants: each returns a dict with train/eval seconds and the last test accuracy ------

def run_fastbp_fused(data, iterations, backend):
    from fastbp.nets import MultiLayerNet
    from fastbp.train import TrainConfig, Trainer

    from fastbp import backends

    (x, t), (xt, tt) = data
    # the fraction of the first layer's products done (compact rows skip the zero pixels), untimed
    net = MultiLayerNet(784, [HIDDEN], 10, weight_init_std=0.01, dtype=np.float32, backend=backend, seed=0)
    density = getattr(backends.get(backend).prepare_rows(x, net.program), "density", 1.0)
    config = TrainConfig(iterations=iterations, batch_size=BATCH, lr=LR, eval_at_end=False, progress=False)
    start = time.perf_counter()
    history = Trainer(net, config).fit(x, t, xt, tt)
    return {"seconds": time.perf_counter() - start, "train_s": history.train_seconds, "eval_s": history.eval_seconds,
            "test_acc": history.evaluations[-1].test_acc, "evaluations": len(history.evaluations), "density": density}


def run_seed_loop(data, iterations, backend):
    from fastbp.nets import TwoLayerNet

    (x_train, t_train), (x_test, t_test) = data
    np.random.seed(0)
    network = TwoLayerNet(input_size=784, hidden_size=HIDDEN, output_size=10, backend=backend)
    train_size = x_train.shape[0]

    def step(i):  # the seed's loop body
        batch_mask = np.random.choice(train_size, BATCH)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grad = network.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= LR * grad[key]
        network.loss(x_batch, t_batch)

    def evaluate():
        network.accuracy(x_train, t_train)
        return network.accuracy(x_test, t_test)

    return timed_loop(iterations, step, evaluate)


def run_torch(data, iterations):
    import torch
    import torch.nn.functional as F

    (x, t), (xt, tt) = data
    torch.manual_seed(0)
    X, T = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    Xt, Tt = torch.from_numpy(xt), torch.from_numpy(tt.astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))
    for layer in (model[0], model[2]):
        torch.nn.init.normal_(layer.weight, std=0.01)
        torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []

    def step(i):
        idx = torch.randint(0, X.shape[0], (BATCH,))
        loss = F.cross_entropy(model(X[idx]), T[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    def evaluate():
        with torch.no_grad():
            (model(X).argmax(1) == T).float().mean().item()
            return (model(Xt).argmax(1) == Tt).float().mean().item()

    return timed_loop(iterations, step, evaluate)


def run_jax(data, iterations):
    import jax
    import jax.numpy as jnp

    (x, t), (xt, tt) = data
    X, T, Xt, Tt = jnp.asarray(x), jnp.asarray(t.astype(np.int32)), jnp.asarray(xt), jnp.asarray(tt.astype(np.int32))
    rng = np.random.default_rng(0)
    params = {"W1": jnp.asarray(0.01 * rng.standard_normal((784, HIDDEN)), jnp.float32), "b1": jnp.zeros(HIDDEN),
              "W2": jnp.asarray(0.01 * rng.standard_normal((HIDDEN, 10)), jnp.float32), "b2": jnp.zeros(10)}

    def logits(p, xb):
        return jnp.maximum(xb @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]

    def loss_fn(p, xb, tb):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(p, xb)), tb[:, None], axis=1))

    @jax.jit
    def update(p, idx):
        loss, grads = jax.value_and_grad(loss_fn)(p, X[idx], T[idx])
        return jax.tree_util.tree_map(lambda a, g: a - LR * g, p, grads), loss

    @jax.jit
    def accuracy(p, xs, ts):
        return jnp.mean(jnp.argmax(logits(p, xs), axis=1) == ts)

    compile_start = time.perf_counter()
    update(params, jnp.zeros(BATCH, jnp.int32))[1].block_until_ready()  # compile outside the timed run
    accuracy(params, X, T).block_until_ready()
    accuracy(params, Xt, Tt).block_until_ready()
    compile_s = time.perf_counter() - compile_start
    state = {"params": params}
    losses = []

    def step(i):
        state["params"], loss = update(state["params"], jnp.asarray(rng.integers(0, X.shape[0], BATCH), jnp.int32))
        losses.append(loss)

    def evaluate():
        float(accuracy(state["params"], X, T))
        return float(accuracy(state["params"], Xt, Tt))

    result = timed_loop(iterations, step, evaluate, finish=lambda: jax.block_until_ready(losses))
    return result | {"compile_s": compile_s}


def run_variant(name: str, iterations: int) -> dict:
    from fastbp.data import load_mnist

    data = load_mnist()
    if name == "fused-native-dense":
        from fastbp.backends import native

        native.COMPACT_MAX_DENSITY = 0.0  # every set stays dense
        return run_fastbp_fused(data, iterations, "native")
    if name.startswith("fused-"):
        return run_fastbp_fused(data, iterations, name.split("-", 1)[1])
    if name.startswith("seed-loop-"):
        return run_seed_loop(data, iterations, name.split("-", 2)[2])
    if name == "torch-eager":
        return run_torch(data, iterations)
    if name == "jax-jit":
        return run_jax(data, iterations)
    raise ValueError(name)


def in_subprocess(args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_use_times() -> dict:
    """A short fused run in a fresh process, whole process timed: numba on a fresh cache, numba
    on the warm cache, and native (compiled ahead of time: nothing to warm up)."""
    code = ("import sys, time; t0 = time.perf_counter(); import numpy as np; from fastbp.nets import MultiLayerNet; "
            "from fastbp.train import TrainConfig, Trainer; "
            "x = np.random.default_rng(0).random((200, 784), np.float32); t = np.arange(200) % 10; "
            "Trainer(MultiLayerNet(784, [50], 10, backend=sys.argv[1]), TrainConfig(iterations=2, progress=False)).fit(x, t, x, t); "
            "print(time.perf_counter() - t0)")

    def run(backend, env):
        out = subprocess.run([sys.executable, "-c", code, backend], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout)

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        return {"numba_first_use_s": run("numba", env), "numba_cached_s": run("numba", env), "native_s": run("native", env)}


def whole_process_pairs(pairs: int) -> list[str]:
    """`fastbp train` (the seed's experiment, the CLI as a user runs it) against the torch-eager
    variant's process, each timed whole, in turn: the table's lines."""
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as out:
        commands = {"fastbp train": [sys.executable, "-m", "fastbp", "train", "--no-plot", "--no-progress", "--out", out],
                    "torch eager": [sys.executable, __file__, "--variant", "torch-eager"]}
        for pair in range(pairs):
            seconds = {}
            for name, command in commands.items():
                print(f"whole process: {name} (pair {pair + 1} of {pairs}) ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                seconds[name] = time.perf_counter() - start
            ratios.append(seconds["fastbp train"] / seconds["torch eager"])
            rows.append(f"| {pair + 1} | {seconds['fastbp train']:.2f} | {seconds['torch eager']:.2f} | {ratios[-1]:.3f} |")
    return ["| pair | fastbp train, s | torch eager, s | ratio |", "|---|---:|---:|---:|", *rows, "",
            f"fastbp train / torch eager, whole processes: {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f}) over {pairs} pairs"]


def median_run(runs: list[dict]) -> dict:
    """The run of median total time among those that finished (the lower median for an even
    count), else the last error."""
    done = sorted((r for r in runs if "seconds" in r), key=lambda r: r["seconds"])
    return done[(len(done) - 1) // 2] if done else runs[-1]


def ratio_text(ratios: list[float]) -> str:
    if not ratios:
        return "n/a"
    text = f"{statistics.median(ratios):.2f}x"
    return text + f" ({min(ratios):.2f}-{max(ratios):.2f})" if max(ratios) > min(ratios) else text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--whole-process", type=int, metavar="PAIRS",
                        help="instead: time `fastbp train` and the torch-eager variant as whole processes (imports and "
                             "MNIST's load included), PAIRS pairs in turn, and report the ratios")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, in turn (a noisy machine drifts between runs): "
                             "each row is the variant's median run, each ratio the median of the rounds' ratios")
    args = parser.parse_args()
    if args.variant:  # child process: run one variant, print its result as JSON
        print(json.dumps(run_variant(args.variant, args.iterations)))
        return 0

    sys.path.insert(0, os.path.dirname(__file__))
    from machine import describe

    if args.whole_process is not None:
        if args.whole_process < 1:
            parser.error(f"--whole-process must be at least 1, got {args.whole_process}")
        emit([f"Machine: {describe()}", "", *whole_process_pairs(args.whole_process)], {}, args.markdown)
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    rounds, results = run_rounds(args.variants, args.rounds, lambda name: in_subprocess(
        ["--variant", name, "--iterations", str(args.iterations)]))
    compile_info = first_use_times()
    # the peak is measured in a process of its own too: OpenBLAS threads keep spinning for a while
    # after a product, and on 2 cores they would slow down whatever runs next in this process
    peak = float(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; "
                                 "from machine import matmul_peak; print(matmul_peak(np.float32))", os.path.dirname(__file__)],
                                capture_output=True, text=True, check=True).stdout)
    base_name = "fused-native" if "seconds" in results.get("fused-native", {}) else "fused-numba"
    flops = experiment_flops(args.iterations, len(eval_points(args.iterations)))
    lines = [
        f"Machine: {describe()}",
        f"Experiment: 784-50-10, batch {BATCH}, lr {LR}, {args.iterations} iterations, "
        f"{len(eval_points(args.iterations))} evaluations of train+test accuracy; {flops / 1e9:.1f} GFLOP dense-equivalent.",
        f"Rounds: {args.rounds} (rows: each variant's median run; ratios: median of the rounds' ratios, range in brackets)"
        if args.rounds > 1 else "Rounds: 1",
        f"float32 matmul peak (NumPy BLAS, 1024^3, all threads): {peak:.1f} GFLOP/s",
        "",
        "GFLOP/s: dense-equivalent (the same count for every variant); executed: without the products",
        "that compact rows skip (fused-native), the figure compared with the peak.",
        "",
        f"| variant | total s | train s | eval s | test acc | GFLOP/s | executed GFLOP/s | % of peak | time / {base_name} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | | |")
            continue
        gflops = flops / r["seconds"] / 1e9
        executed = experiment_flops(args.iterations, r["evaluations"], density=r.get("density", 1.0)) / r["seconds"] / 1e9
        ratio = ratio_text([rnd[name].get("seconds", 0) / rnd[base_name]["seconds"] for rnd in rounds
                            if "seconds" in rnd[name] and "seconds" in rnd.get(base_name, {})])
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['train_s']:.2f} | {r['eval_s']:.2f} | {r['test_acc']:.4f} "
                     f"| {gflops:.1f} | {executed:.1f} | {100 * executed / peak:.0f}% | {ratio} |")
    lines += ["", "First use (a 2-step fused run in a fresh process, timed whole): "
                  f"numba on a fresh cache {compile_info['numba_first_use_s']:.1f} s, numba cached {compile_info['numba_cached_s']:.1f} s, "
                  f"native {compile_info['native_s']:.1f} s"]
    emit(lines, results, args.markdown)
    return 0


def run_rounds(variants, n_rounds: int, run) -> tuple[list[dict], dict]:
    """run(name) for every variant, round after round in turn; the rounds, and each variant's median run."""
    rounds = []
    for r in range(n_rounds):
        rounds.append({})
        for name in variants:
            print(f"running {name} (round {r + 1} of {n_rounds}) ...", file=sys.stderr, flush=True)
            rounds[-1][name] = run(name)
    return rounds, {name: median_run([rnd[name] for rnd in rounds]) for name in variants}


def emit(lines: list[str], results: dict, markdown: str | None) -> None:
    """The table (and JAX's compile time, which the rows exclude) to stdout, and to ``markdown``."""
    if "jax-jit" in results and "compile_s" in results["jax-jit"]:
        lines.append(f"\nJAX compile time (excluded above): {results['jax-jit']['compile_s']:.2f} s")
    table = "\n".join(lines)
    print(table)
    if markdown:
        with open(markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
