"""The ``fastbp`` command: train (the seed's MNIST experiment), gradcheck, info."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

EPILOG_TRAIN = """
defaults reproduce the seed's experiment: a 784-50-10 ReLU network, weights of std 0.01,
mini-batches of 100 drawn with replacement, SGD with lr 0.1, 10000 iterations, accuracy on the
full train and test sets once per epoch (600 iterations). Expect about 97%% test accuracy.

MNIST is read from --data, else $FASTBP_DATA, else the user cache (downloaded on first use).
Writes into --out: weights.npz, history.json, history.csv, losses.csv, loss.png, accuracy.png.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _init(text: str):
    if text in ("he", "xavier", "auto"):
        return text
    try:
        return _positive_float(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be 'he', 'xavier', 'auto' or a positive number, got {text}") from None


def _add_backend(parser):
    parser.add_argument("--backend", default=None, metavar="NAME",
                        help="kernel backend: numba or reference (default: the fastest available, or $FASTBP_BACKEND)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbp", description="Backpropagation with compiled kernels: train and check small MLPs on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an MLP on MNIST (defaults: the seed's experiment)",
                           description="Train a multi-layer perceptron on MNIST with mini-batch gradient descent.",
                           epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    arch = train.add_argument_group("network")
    arch.add_argument("--hidden", type=_positive_int, nargs="+", default=[50], metavar="N",
                      help="hidden layer sizes, one number per layer (default: 50)")
    arch.add_argument("--activation", choices=["relu", "sigmoid"], default="relu", help="hidden activation (default: relu)")
    arch.add_argument("--init", type=_init, default=0.01, metavar="STD",
                      help="initial weight std: a number, 'he' (ReLU), 'xavier' (Sigmoid) or 'auto' (default: 0.01, as the seed)")
    arch.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype (default: float32)")
    opt = train.add_argument_group("optimization")
    opt.add_argument("--lr", type=_positive_float, default=0.1, help="learning rate (default: 0.1)")
    opt.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size (default: 100)")
    opt.add_argument("--iterations", type=_positive_int, default=10000, help="training steps (default: 10000)")
    opt.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="sgd", help="update rule (default: sgd)")
    opt.add_argument("--momentum", type=float, default=0.9, help="momentum coefficient for --optimizer momentum (default: 0.9)")
    opt.add_argument("--sampling", choices=["replacement", "shuffle"], default="replacement",
                     help="draw each batch with replacement as the seed does, or walk shuffled epochs (default: replacement)")
    opt.add_argument("--eval-every", type=_positive_int, default=None, metavar="STEPS",
                     help="steps between accuracy evaluations (default: one epoch, train size / batch size)")
    opt.add_argument("--val-split", type=float, default=0.0, metavar="FRACTION",
                     help="hold out this fraction of the training set for validation (default: 0, none)")
    opt.add_argument("--patience", type=_positive_int, default=None, metavar="EVALS",
                     help="early stopping: stop after this many evaluations without a better validation "
                          "accuracy and keep the best weights (needs --val-split)")
    run = train.add_argument_group("execution")
    _add_backend(run)
    run.add_argument("--path", choices=["fused", "layers"], default="fused",
                     help="fused: each stretch of steps in one compiled call; layers: Python per layer, as the seed (default: fused)")
    run.add_argument("--seed", type=int, default=0, help="seed for the initial weights and the batches (default: 0)")
    run.add_argument("--data", type=Path, default=None, metavar="DIR", help="folder with the MNIST IDX files (default: $FASTBP_DATA)")
    run.add_argument("--no-verify", action="store_true", help="skip the MNIST checksums (for other data in IDX format)")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder (default: runs/mnist-YYYYmmdd-HHMMSS)")
    run.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = sub.add_parser("gradcheck", help="compare backprop with numerical gradients on MNIST (the seed's gradient check)",
                           description="The seed's gradient check: a float64 TwoLayerNet, the first --batch training "
                                       "images, backprop against central differences, per parameter.")
    check.add_argument("--batch", type=_positive_int, default=3, help="number of training images (default: 3, as the seed)")
    check.add_argument("--hidden", type=_positive_int, default=50, help="hidden layer size (default: 50)")
    check.add_argument("--rtol", type=_positive_float, default=1e-6, help="relative tolerance to pass (default: 1e-6)")
    check.add_argument("--seed", type=int, default=0, help="seed for the initial weights (default: 0)")
    check.add_argument("--data", type=Path, default=None, metavar="DIR", help="folder with the MNIST IDX files (default: $FASTBP_DATA)")
    _add_backend(check)

    sub.add_parser("info", help="versions, backends, threads and CPU", description="Show versions, backends, threads and CPU.")
    return parser


def cmd_train(args) -> int:
    import fastbp
    from fastbp.data import load_mnist
    from fastbp.nets import MultiLayerNet
    from fastbp.train import TrainConfig, Trainer

    out = args.out or Path("runs") / datetime.datetime.now().strftime("mnist-%Y%m%d-%H%M%S")
    (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=args.data, verify=not args.no_verify)
    net = MultiLayerNet(x_train.shape[1], args.hidden, 10, activation=args.activation, weight_init_std=args.init,
                        dtype=np.dtype(args.dtype), backend=args.backend, seed=args.seed)
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                         momentum=args.momentum, sampling=args.sampling, seed=args.seed, path=args.path,
                         eval_every=args.eval_every, val_split=args.val_split, patience=args.patience,
                         progress=not args.no_progress and sys.stderr.isatty())
    trainer = Trainer(net, config)
    backend = args.backend or fastbp.get_backend()
    print(f"fastbp {fastbp.__version__}: {'-'.join(map(str, net.sizes))} {args.activation} net, {args.dtype}, "
          f"{args.optimizer} lr {args.lr}, batch {args.batch_size}, {args.iterations} iterations, "
          f"backend {backend}, {args.path} path", flush=True)

    from tqdm.auto import tqdm

    def report(e):
        val = f"\t Val acc: {e.val_acc:.5f}" if e.val_acc is not None else ""
        tqdm.write(f"Step: {e.step:5d} \t Loss: {e.loss:.4f} \t Train acc: {e.train_acc:.5f} \t Test acc: {e.test_acc:.5f}{val}")

    start = time.perf_counter()
    history = trainer.fit(x_train, t_train, x_test, t_test, on_evaluation=report)
    wall = time.perf_counter() - start
    last = history.evaluations[-1]
    print(f"Optimization finished in {wall:.1f} s ({history.train_seconds:.1f} s training, "
          f"{history.eval_seconds:.1f} s evaluating). Final test accuracy {last.test_acc:.4f}.")
    if history.stopped_early:
        print(f"Stopped early: validation accuracy peaked at step {history.best_step}; the saved weights are from there.")

    out.mkdir(parents=True, exist_ok=True)
    net.save(out / "weights.npz")
    written = [out / "weights.npz", *history.save(out).values()]
    if not args.no_plot:
        from fastbp.plots import PlottingUnavailable, plot_history

        try:
            written += list(plot_history(history, out).values())
        except PlottingUnavailable as exc:
            print(f"note: {exc}", file=sys.stderr)
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_gradcheck(args) -> int:
    import fastbp
    from fastbp.data import load_mnist
    from fastbp.nets import TwoLayerNet

    (x_train, t_train), _ = load_mnist(data_dir=args.data, one_hot_label=True)
    net = TwoLayerNet(784, args.hidden, 10, backend=args.backend, seed=args.seed)
    x_batch, t_batch = x_train[:args.batch], t_train[:args.batch]
    print(f"Gradient check: TwoLayerNet 784-{args.hidden}-10 (float64), {args.batch} MNIST images, "
          f"backend {args.backend or fastbp.get_backend()}. Numerical gradients take a while...", flush=True)
    start = time.perf_counter()
    numerical = net.numerical_gradient(x_batch, t_batch)
    t_numerical = time.perf_counter() - start
    start = time.perf_counter()
    backprop = net.gradient(x_batch, t_batch)
    t_backprop = time.perf_counter() - start
    report = fastbp.compare_gradients(backprop, numerical)
    print(report)
    print(f"numerical: {t_numerical:.2f} s, backprop: {t_backprop * 1e3:.2f} ms ({t_numerical / t_backprop:,.0f}x faster)")
    ok = report.passed(rtol=args.rtol)
    print(f"{'PASSED' if ok else 'FAILED'}: |backprop - numerical| <= {args.rtol:g} * (|numerical| + max|numerical|) for every parameter")
    return 0 if ok else 1


def cmd_info(args) -> int:
    import numba
    import scipy

    import fastbp
    from fastbp import backends
    from fastbp._system import cpu_model

    print(f"fastbp      {fastbp.__version__}")
    print(f"python      {platform.python_version()} ({sys.executable})")
    print(f"numpy       {np.__version__}")
    print(f"numba       {numba.__version__} (threading layer {numba.config.THREADING_LAYER}, {numba.get_num_threads()} threads)")
    print(f"scipy       {scipy.__version__}")
    print(f"cpu         {cpu_model()}, {os.cpu_count()} logical cores")
    print(f"backends    {', '.join(backends.available())} (default: {backends.current()})")
    for name, reason in backends.unavailable().items():
        print(f"  {name}: unavailable, {reason}")
    if "native" in backends.available():
        from fastbp import _native

        omp = _native.openmp()
        print(f"native      OpenMP {'with ' + str(omp) + ' threads' if omp else 'not available: single-threaded'}; "
              f"BLAS: SciPy's")
    print(f"numba cache {os.environ.get('NUMBA_CACHE_DIR') or '__pycache__ beside the package'}")
    print(f"MNIST       {os.environ.get('FASTBP_DATA') or 'FASTBP_DATA not set (user cache or download)'}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fastbp.backends import BackendUnavailable
    from fastbp.data import DataError
    from fastbp.train import TrainingDiverged

    commands = {"train": cmd_train, "gradcheck": cmd_gradcheck, "info": cmd_info}
    try:
        return commands[args.command](args)
    except (DataError, TrainingDiverged, BackendUnavailable, ValueError, TypeError) as exc:
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
