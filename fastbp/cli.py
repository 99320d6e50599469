"""The ``fastbp`` command: train (the seed's MNIST experiment), evaluate, predict, gradcheck, info."""

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
--model mlp (the default) reproduces the seed's experiment: a 784-50-10 ReLU network, weights
of std 0.01, mini-batches of 100 drawn with replacement, SGD with lr 0.1, 10000 iterations,
accuracy on the full train and test sets once per epoch (600 iterations). Expect about 97%
test accuracy. (The std 0.01 is the seed's TwoLayerNet; the Python API's MultiLayerNet defaults
to 'auto', He or Xavier scaling, as the book's MultiLayerNet does: pass --init auto for that.)

--model simple-convnet is the book's chapter 7 experiment (ch07/train_convnet.py): conv 30 5x5 -
relu - pool 2x2 - affine 100 - relu - affine 10, Adam lr 0.001, shuffled batches of 100, 20
epochs, accuracy on the first 1000 train and test images each epoch and on the whole test set
at the end: 0.989 on the 10000 test images in a run on 2 cores (about 3 minutes). --model
deep-convnet is chapter 8's (ch08/train_deepnet.py): six 3x3 convolutions, dropout (its masks
from the engine's generator, seeded by --seed), the same schedule: 0.993 in a run here (the book
reports 99.35%), about 20 minutes on 2 cores. Any flag given replaces the preset's value.

--batchnorm, --dropout RATIO and --weight-decay LAMBDA are the book's chapter 6 options
(MultiLayerNetExtend; weight decay for any model); all of them train in the fused engine.

The learning rate defaults to the optimizer's: sgd 0.1 (the seed's), adam 0.001, momentum,
nesterov, adagrad and rmsprop 0.01 (the book's chapter 6).

With --val-split, the network ends with the weights of its best validation evaluation, and
the final accuracy printed is theirs. Ctrl-C stops training and keeps what was trained.
--resume runs.../weights.npz continues a run: architecture, optimizer state and step count
come from the file; --iterations more steps are run.

MNIST is read from --data, else $FASTBP_DATA, else the user cache (downloaded on first use).
Writes into --out: weights.npz (with the optimizer state), history.json, history.csv,
losses.csv, loss.png, accuracy.png.
"""


# Each model's experiment: the seed's for the MLP, the book's ch07/ch08 trainers for the convnets.
PRESETS = {
    "mlp": dict(optimizer="sgd", sampling="replacement", iterations=10000, epochs=None, eval_samples=None),
    "simple-convnet": dict(optimizer="adam", sampling="shuffle", iterations=None, epochs=20, eval_samples=1000),
    "deep-convnet": dict(optimizer="adam", sampling="shuffle", iterations=None, epochs=20, eval_samples=1000),
}


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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < np.inf:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def _init(text: str):
    if text in ("he", "xavier", "auto"):
        return text
    try:
        return _positive_float(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be 'he', 'xavier', 'auto' or a positive number, got {text}") from None


def _add_backend(parser):
    from fastbp.backends import KNOWN

    parser.add_argument("--backend", default=None, choices=KNOWN,
                        help=f"kernel backend: {', '.join(KNOWN)} (default: the fastest available, native, or $FASTBP_BACKEND)")


def _add_data(parser):
    parser.add_argument("--data", type=Path, default=None, metavar="DIR", help="folder with the MNIST IDX files (default: $FASTBP_DATA)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbp", description="Backpropagation with compiled kernels: train and check the book's networks on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an MLP or the book's convnets on MNIST (defaults: the seed's experiment)",
                           description="Train an MLP or one of the book's convnets on MNIST with mini-batch gradient "
                                       "descent.",
                           epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    arch = train.add_argument_group("network (taken from the file with --resume)")
    arch.add_argument("--model", choices=list(PRESETS), default=None,
                      help="mlp (the seed's), simple-convnet (the book's ch07) or deep-convnet (ch08), each with its "
                           "experiment's settings as defaults (default: mlp)")
    arch.add_argument("--hidden", type=_positive_int, nargs="+", default=None, metavar="N",
                      help="hidden layer sizes, one number per layer (default: 50); a convnet's one hidden affine "
                           "layer (default: simple-convnet 100, deep-convnet 50)")
    arch.add_argument("--activation", choices=["relu", "sigmoid"], default=None, help="hidden activation (default: relu)")
    arch.add_argument("--init", type=_init, default=None, metavar="STD",
                      help="initial weight std: a number, 'he' (ReLU), 'xavier' (Sigmoid) or 'auto' (default: 0.01, as the seed)")
    arch.add_argument("--dtype", choices=["float32", "float64"], default=None, help="parameter dtype (default: float32)")
    arch.add_argument("--batchnorm", action="store_true",
                      help="mlp: a batch normalization before each hidden activation (the book's use_batchnorm)")
    arch.add_argument("--dropout", type=_ratio, default=None, metavar="RATIO",
                      help="mlp: a dropout of this ratio after each hidden activation (the book's use_dropout, "
                           "dropout_ration; default: none)")
    opt = train.add_argument_group("optimization")
    opt.add_argument("--lr", type=_positive_float, default=None,
                     help="learning rate (default: the optimizer's: sgd 0.1, adam 0.001, the others 0.01)")
    opt.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size (default: 100)")
    steps = opt.add_mutually_exclusive_group()
    steps.add_argument("--iterations", type=_positive_int, default=None, help="training steps (default: mlp 10000)")
    steps.add_argument("--epochs", type=_positive_float, default=None,
                       help="training steps as passes over the training set (default: the convnets' 20)")
    opt.add_argument("--optimizer", choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"], default=None,
                     help="update rule, the book's six (default: mlp sgd, the convnets adam; or the resumed run's)")
    opt.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="LAMBDA",
                     help="the book's weight decay: lambda/2 sum W^2 on the loss, lambda W on each weight gradient "
                          "(default: 0, none)")
    opt.add_argument("--momentum", type=float, default=0.9, help="momentum coefficient for --optimizer momentum (default: 0.9)")
    opt.add_argument("--sampling", choices=["replacement", "shuffle"], default=None,
                     help="draw each batch with replacement as the seed does, or walk shuffled epochs as the book's "
                          "convnet trainer does (default: mlp replacement, the convnets shuffle)")
    opt.add_argument("--eval-every", type=_positive_int, default=None, metavar="STEPS",
                     help="steps between accuracy evaluations (default: one epoch, train size / batch size)")
    opt.add_argument("--eval-samples", type=_positive_int, default=None, metavar="N",
                     help="evaluate on the first N images of each set, and on the whole test set at the end "
                          "(default: mlp all, the convnets 1000 as the book)")
    opt.add_argument("--val-split", type=float, default=0.0, metavar="FRACTION",
                     help="hold out this fraction of the training set for validation; the run ends with the weights "
                          "of the best validation accuracy (default: 0, none)")
    opt.add_argument("--patience", type=_positive_int, default=None, metavar="EVALS",
                     help="early stopping: stop after this many evaluations without a better validation "
                          "accuracy and keep the best weights (needs --val-split)")
    run = train.add_argument_group("execution")
    _add_backend(run)
    run.add_argument("--path", choices=["fused", "layers"], default=None,
                     help="fused: each stretch of steps in one compiled call; layers: Python per layer, as the seed "
                          "(default: fused)")
    run.add_argument("--seed", type=int, default=0, help="seed for the initial weights and the batches (default: 0)")
    _add_data(run)
    run.add_argument("--resume", type=Path, default=None, metavar="WEIGHTS",
                     help="continue the run that wrote this weights.npz: its network, optimizer state and step count")
    run.add_argument("--no-verify", action="store_true", help="skip the MNIST checksums (for other data in IDX format)")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder, checked before training (default: a new runs/mnist-YYYYmmdd-HHMMSS)")
    run.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = sub.add_parser("gradcheck", help="compare backprop with numerical gradients on MNIST (the seed's gradient check)",
                           description="The seed's gradient check: a float64 TwoLayerNet, the first --batch training "
                                       "images, backprop against central differences, per parameter.")
    check.add_argument("--batch", type=_positive_int, default=3, help="number of training images (default: 3, as the seed)")
    check.add_argument("--hidden", type=_positive_int, default=50, help="hidden layer size (default: 50)")
    check.add_argument("--rtol", type=_positive_float, default=1e-6, help="relative tolerance to pass (default: 1e-6)")
    check.add_argument("--seed", type=int, default=0, help="seed for the initial weights (default: 0)")
    _add_data(check)
    _add_backend(check)

    evaluate = sub.add_parser("evaluate", help="accuracy of saved weights on the MNIST test set or on given arrays",
                              description="Accuracy of a weights.npz (written by fastbp train) on the MNIST test set, "
                                          "or on --images and --labels .npy arrays.")
    evaluate.add_argument("weights", type=Path, help="a weights.npz written by fastbp train (or a network's save)")
    evaluate.add_argument("--images", type=Path, default=None, metavar="X.npy",
                          help="images, (N, 784), (N, 28, 28) or (N, 1, 28, 28); uint8 pixels are scaled to [0, 1] (default: MNIST's test set)")
    evaluate.add_argument("--labels", type=Path, default=None, metavar="T.npy", help="integer labels (N,) for --images")
    _add_data(evaluate)
    evaluate.add_argument("--no-verify", action="store_true", help="skip the MNIST checksums (for other data in IDX format)")
    _add_backend(evaluate)

    predict = sub.add_parser("predict", help="predicted labels and class probabilities of images",
                             description="Predicted label and class probabilities of each image, as CSV: "
                                         "index,label,p0,...,p9.")
    predict.add_argument("weights", type=Path, help="a weights.npz written by fastbp train (or a network's save)")
    predict.add_argument("images", type=Path, help="images as .npy: (N, 784), (N, 28, 28) or one image; "
                                                   "uint8 pixels are scaled to [0, 1]")
    predict.add_argument("--out", type=Path, default=None, metavar="FILE.csv", help="write the CSV here (default: standard output)")
    _add_backend(predict)

    sub.add_parser("info", help="versions, backends, threads and CPU", description="Show versions, backends, threads and CPU.")
    return parser


def _output_folder(out: Path | None) -> Path:
    """The run's folder, made now (before training) and never one another run is using."""
    if out is None:
        base = Path("runs") / datetime.datetime.now().strftime("mnist-%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                candidate.mkdir(parents=True, exist_ok=False)
                return candidate
            except FileExistsError:
                continue
            except OSError as exc:
                raise ValueError(f"cannot create the output folder {candidate}: {exc.strerror}; pass --out DIR") from exc
        raise ValueError(f"{base}-*: a thousand runs started this second; pass --out DIR")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fastbp-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from exc
    return out


def _new_network(args, n_inputs: int):
    from fastbp.nets import DeepConvNet, MultiLayerNet, SimpleConvNet

    dtype, backend, seed = np.dtype(args.dtype or "float32"), args.backend, args.seed
    model = args.model or "mlp"
    if model != "mlp":
        wrong = [flag for flag, value in (("--activation", args.activation),
                                          ("--init", args.init if model == "deep-convnet" else None),
                                          ("--batchnorm", args.batchnorm or None), ("--dropout", args.dropout))
                 if value is not None]
        if isinstance(args.init, str) and model == "simple-convnet":
            wrong.append(f"--init {args.init} (a number: the weights' std)")
        if args.hidden is not None and len(args.hidden) != 1:
            wrong.append("--hidden with more than one size")
        if wrong:
            raise ValueError(f"--model {model} does not take {', '.join(wrong)}")
        if n_inputs != 784:
            raise ValueError(f"--model {model} takes MNIST's 28x28 images, got {n_inputs} inputs per sample")
    if model == "simple-convnet":
        return SimpleConvNet(hidden_size=(args.hidden or [100])[0], weight_init_std=0.01 if args.init is None else args.init,
                             dtype=dtype, backend=backend, seed=seed)
    if model == "deep-convnet":
        return DeepConvNet(hidden_size=(args.hidden or [50])[0], dtype=dtype, backend=backend, seed=seed)
    return MultiLayerNet(n_inputs, args.hidden or [50], 10, activation=args.activation or "relu",
                         weight_init_std=0.01 if args.init is None else args.init, use_batchnorm=args.batchnorm,
                         use_dropout=args.dropout is not None, dropout_ration=args.dropout or 0.5, dtype=dtype,
                         backend=backend, seed=seed)


def _network_and_trainer(args, x_train):
    from fastbp import checkpoint
    from fastbp.sequential import SequentialNet
    from fastbp.train import TrainConfig, Trainer

    start_step, state = 0, None
    if args.resume:
        given = [flag for flag, value in (("--model", args.model), ("--hidden", args.hidden), ("--activation", args.activation),
                                          ("--init", args.init), ("--dtype", args.dtype), ("--batchnorm", args.batchnorm or None),
                                          ("--dropout", args.dropout)) if value is not None]
        if given:
            raise ValueError(f"--resume takes the network from {args.resume}; drop {', '.join(given)}")
        saved = checkpoint.read(args.resume)
        if saved.optimizer is None:
            raise ValueError(f"--resume {args.resume}: the file holds weights but no optimizer state; "
                             f"it was not written by fastbp train")
        if args.optimizer not in (None, saved.optimizer):
            raise ValueError(f"--resume: the run used {saved.optimizer}; pass --optimizer {saved.optimizer} or omit it")
        args.optimizer = saved.optimizer
        net = SequentialNet.load(args.resume, backend=args.backend)
        start_step, state = saved.step, saved.optimizer_state
        preset = PRESETS["mlp" if saved.mlp else "simple-convnet"]
    else:
        net = _new_network(args, x_train.shape[1])
        preset = PRESETS[args.model or "mlp"]
    net.weight_decay_lambda = args.weight_decay  # a training setting: a resumed run takes it again
    iterations = args.iterations
    if iterations is None:
        epochs = args.epochs or preset["epochs"]
        iterations = max(1, int(np.ceil(epochs * x_train.shape[0] / args.batch_size))) if epochs else preset["iterations"]
    config = TrainConfig(iterations=iterations, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer or preset["optimizer"], momentum=args.momentum,
                         sampling=args.sampling or preset["sampling"], seed=args.seed,
                         path=args.path or ("fused" if net.engine_runs_it else "layers"), eval_every=args.eval_every,
                         val_split=args.val_split, patience=args.patience,
                         eval_samples=args.eval_samples or preset["eval_samples"], progress=not args.no_progress)
    return net, Trainer(net, config, start_step=start_step, optimizer_state=state)


def cmd_train(args) -> int:
    import fastbp
    from fastbp.data import load_mnist
    from fastbp.train import tqdm_class

    out = _output_folder(args.out)
    try:
        (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=args.data, verify=not args.no_verify)
        net, trainer = _network_and_trainer(args, x_train)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty run folder behind
        raise
    config = trainer.config
    print(f"fastbp {fastbp.__version__}: {net.describe()}, {net.dtype}, "
          f"{config.optimizer} lr {config.lr}"
          f"{f', weight decay {net.weight_decay_lambda:g}' if net.weight_decay_lambda else ''}, "
          f"batch {config.batch_size}, {config.iterations} iterations"
          f"{f' from step {trainer.step}' if trainer.step else ''}, "
          f"backend {net.backend or fastbp.get_backend()}, {config.path} path", flush=True)

    write = tqdm_class().write if trainer.config.progress else print  # (around a bar, if one is drawn)

    def report(e):
        val = f"\t Val acc: {e.val_acc:.5f}" if e.val_acc is not None else ""
        write(f"Step: {e.step:5d} \t Loss: {e.loss:.4f} \t Train acc: {e.train_acc:.5f} \t Test acc: {e.test_acc:.5f}{val}")

    start = time.perf_counter()
    history = trainer.fit(x_train, t_train, x_test, t_test, on_evaluation=report)
    wall = time.perf_counter() - start
    final = history.final
    if history.interrupted:
        print(f"Interrupted at step {trainer.step}: keeping what was trained.")
    print(f"Optimization finished in {wall:.1f} s ({history.train_seconds:.1f} s training, "
          f"{history.eval_seconds:.1f} s evaluating)." + (f" Final test accuracy {final.test_acc:.4f}." if final else ""))
    if config.eval_samples is not None and config.eval_samples < x_test.shape[0] and final:
        print(f"Test accuracy on all {x_test.shape[0]} test images: {net.accuracy(x_test, t_test):.4f}.")
    if history.best_step is not None:
        how = "stopped early; " if history.stopped_early else ""
        print(f"Validation accuracy peaked at step {history.best_step} ({final.val_acc:.4f}): {how}"
              f"the saved weights and the final accuracy are from there.")

    net.save(out / "weights.npz", optimizer=config.optimizer, optimizer_state=trainer.state, step=trainer.step)
    written = [out / "weights.npz", *history.save(out).values()]
    if not args.no_plot and history.evaluations:
        from fastbp.plots import PlottingUnavailable, plot_history

        try:
            written += list(plot_history(history, out).values())
        except PlottingUnavailable as exc:
            print(f"note: {exc}", file=sys.stderr)
    print("Wrote " + ", ".join(str(p) for p in written))
    return 130 if history.interrupted else 0


def _images(path: Path) -> np.ndarray:
    """An .npy of images as float32 (uint8 pixels scaled to [0, 1], as load_mnist does)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read it as a .npy array ({exc})") from exc
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype.kind not in "f":
        raise ValueError(f"{path}: images must be uint8 pixels or floats, got dtype {x.dtype}")
    return x


def cmd_evaluate(args) -> int:
    from fastbp.data import load_mnist
    from fastbp.sequential import SequentialNet

    net = SequentialNet.load(args.weights, backend=args.backend)
    if (args.images is None) != (args.labels is None):
        raise ValueError("pass both --images and --labels, or neither (MNIST's test set)")
    if args.images is None:
        _, (x, t) = load_mnist(data_dir=args.data, verify=not args.no_verify)
        source = "the MNIST test set"
    else:
        x, t = _images(args.images), np.load(args.labels, allow_pickle=False)
        source = str(args.images)
    accuracy = net.accuracy(x, t)
    print(f"{args.weights}: accuracy {accuracy:.4f} on {source} ({int(round(accuracy * len(t)))} of {len(t)} right)")
    return 0


def cmd_predict(args) -> int:
    import csv

    from fastbp.sequential import SequentialNet

    net = SequentialNet.load(args.weights, backend=args.backend)
    x = _images(args.images)
    probs = np.atleast_2d(net.predict_proba(x))
    labels = np.argmax(probs, axis=1)
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(["index", "label", *(f"p{c}" for c in range(probs.shape[1]))])
        for i, (label, row) in enumerate(zip(labels, probs)):
            writer.writerow([i, int(label), *(f"{p:.6f}" for p in row)])
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"Wrote {len(labels)} predictions to {args.out}")
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
              f"row kernels: {_native.isa()[0]}; BLAS: {_native.blas()}")
    from fastbp import _malloc

    spin = os.environ.get("GOMP_SPINCOUNT", os.environ.get("OMP_WAIT_POLICY", "OpenMP's default"))
    heap = (f"large arrays kept for reuse (mmap threshold {_malloc.MMAP_THRESHOLD >> 20} MiB, trim "
            f"{_malloc.TRIM_THRESHOLD >> 20} MiB; FASTBP_MALLOC=system keeps glibc's)" if _malloc.configured
            else "the C library's own thresholds")
    print(f"settings    OpenMP idle spin {spin}; malloc: {heap}")
    print(f"numba cache {os.environ.get('NUMBA_CACHE_DIR') or '__pycache__ beside the package'}")
    print(f"MNIST       {os.environ.get('FASTBP_DATA') or 'FASTBP_DATA not set (user cache or download)'}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fastbp.backends import BackendUnavailable
    from fastbp.data import DataError
    from fastbp.train import TrainingDiverged

    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "gradcheck": cmd_gradcheck,
                "info": cmd_info}
    try:
        return commands[args.command](args)
    except (DataError, TrainingDiverged, BackendUnavailable, ValueError, TypeError, MemoryError) as exc:
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
