"""Mini-batch training with the seed's loop, on a fused compiled path or layer by layer.

The seed's schedule: each step draws ``batch_size`` training indices with replacement (or, with
``sampling='shuffle'``, walks a fresh permutation each epoch), runs forward, backward and the
optimizer update; after the update of every step ``i`` with ``i % eval_every == 0`` (0-based;
``eval_every`` defaults to one epoch, ``train_size // batch_size``) the accuracy on the whole
train and test sets is recorded. 10000 steps of batch 100 on MNIST give the seed's 17 evaluations.

``path='fused'`` runs the steps as calls of the backend's ``train_steps`` (no Python per layer or
per step), each call sized to take about ``BLOCK_SECONDS``, so that progress shows and Ctrl-C
stops within about that; ``path='layers'`` calls ``net.gradient`` and the optimizer's ``update``
each step, through the same kernels. Both draw the same indices from the same seeded generator,
so they record the same losses (to float rounding).

A run can continue where another stopped (``start_step`` and ``optimizer_state``, as
fastbp.checkpoint saves them): step numbers, Adam's bias correction and the evaluation schedule
carry on.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import _validate as check
from . import backends, engine
from ._system import require_memory
from .layers import NonFiniteWarning
from .optim import Optimizer, make_optimizer
from .sequential import SequentialNet
from .threads import ThreadChoice

# fastbp's own trainer defaults, per optimizer: the seed's SGD 0.1 on MNIST; for Momentum and
# Adam the book's (chapter 6: Momentum 0.01, Adam 0.001). The drop-in optimizer classes keep
# the book's defaults of their own (fastbp.optim).
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.01, "adam": 0.001}

# Each fused call runs about this long: the progress bar moves and Ctrl-C is seen this often.
BLOCK_SECONDS = 0.25


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or inf; the network holds the weights of the last evaluation."""


@dataclass
class TrainConfig:
    iterations: int = 10000
    batch_size: int = 100
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    optimizer: str = "sgd"
    momentum: float = 0.9  # Momentum's and Nesterov's
    decay_rate: float = 0.99  # RMSprop's
    beta1: float = 0.9
    beta2: float = 0.999
    sampling: str = "replacement"  # or "shuffle"
    seed: int = 0
    path: str = "fused"  # or "layers"
    eval_every: int | None = None  # steps between evaluations; default one epoch
    eval_at_end: bool = True  # also evaluate after the last step if the schedule did not
    val_split: float = 0.0  # fraction of the training set held out to choose the best weights
    patience: int | None = None  # evaluations without a better validation accuracy before stopping
    eval_samples: int | None = None  # evaluate on the first this many samples of each set (the book's
    #                                  convnet trainer: 1000); None: all of them
    progress: bool = True  # a progress bar where stderr is a terminal

    def validate(self) -> None:
        """Check every field; a missing ``lr`` becomes the optimizer's default."""
        for name in ("iterations", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in DEFAULT_LR:
            raise ValueError(f"optimizer must be one of {sorted(DEFAULT_LR)}, got {self.optimizer!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be a positive integer, got {self.eval_every!r}")
        if self.sampling not in ("replacement", "shuffle"):
            raise ValueError(f"sampling must be 'replacement' or 'shuffle', got {self.sampling!r}")
        if self.path not in ("fused", "layers"):
            raise ValueError(f"path must be 'fused' or 'layers', got {self.path!r}")
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"val_split must lie in [0, 1), got {self.val_split}")
        if self.patience is not None and (self.patience < 1 or self.val_split == 0):
            raise ValueError("patience (early stopping) needs a positive value and val_split > 0")
        if self.eval_samples is not None and (not isinstance(self.eval_samples, (int, np.integer)) or self.eval_samples < 1):
            raise ValueError(f"eval_samples must be a positive integer or None (all), got {self.eval_samples!r}")


@dataclass
class Evaluation:
    step: int  # steps completed (counting those of a resumed run)
    epoch: float
    loss: float  # mean training loss over the steps since the previous evaluation
    train_acc: float
    test_acc: float | None
    val_acc: float | None
    elapsed: float  # seconds since training started


@dataclass
class History:
    config: dict
    losses: list[float] = field(default_factory=list)  # one per step of this run: the loss of its forward pass
    evaluations: list[Evaluation] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None  # with validation: the evaluation whose weights the network ends with
    train_seconds: float = 0.0  # forward/backward/update only
    eval_seconds: float = 0.0
    first_step: int = 0  # steps done before this run (a resumed run)
    interrupted: bool = False  # stopped by Ctrl-C

    @property
    def final(self) -> Evaluation | None:
        """The evaluation of the weights the network ends with: the best one with validation, else the last."""
        if self.best_step is not None:
            return next(e for e in self.evaluations if e.step == self.best_step)
        return self.evaluations[-1] if self.evaluations else None

    def save(self, directory) -> dict:
        """history.json (everything), history.csv (one row per evaluation), losses.csv (one row per step)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"json": directory / "history.json", "csv": directory / "history.csv", "losses": directory / "losses.csv"}
        # a shallow dict (asdict would deep-copy every loss) encoded whole, then written: a third
        # of the time of json.dump's chunks for the seed's 10000 losses
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["evaluations"] = [asdict(e) for e in self.evaluations]
        with open(paths["json"], "w") as f:
            f.write(json.dumps(record, indent=1))
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(Evaluation.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(asdict(e) for e in self.evaluations)
        with open(paths["losses"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss"])
            writer.writerows((self.first_step + i + 1, loss) for i, loss in enumerate(self.losses))
        return paths

    @classmethod
    def load(cls, path) -> "History":
        with open(path) as f:
            data = json.load(f)
        data["evaluations"] = [Evaluation(**e) for e in data["evaluations"]]
        return cls(**data)


class BatchSampler:
    """Mini-batch indices, block by block, from one seeded generator (the blocks' sizes do not
    change the indices drawn)."""

    def __init__(self, n: int, batch_size: int, sampling: str, rng: np.random.Generator):
        if sampling == "shuffle" and batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training samples")
        self.n, self.batch_size, self.sampling, self.rng = n, batch_size, sampling, rng
        self._order = np.empty(0, dtype=np.int64)

    def next_block(self, steps: int) -> np.ndarray:
        if self.sampling == "replacement":  # as the seed's np.random.choice(train_size, batch_size)
            return self.rng.integers(0, self.n, size=(steps, self.batch_size), dtype=np.int64)
        needed = steps * self.batch_size
        while self._order.size < needed:  # whole epochs of fresh permutations; a partial last batch is dropped
            per_epoch = (self.n // self.batch_size) * self.batch_size
            self._order = np.concatenate([self._order, self.rng.permutation(self.n)[:per_epoch]])
        block, self._order = self._order[:needed], self._order[needed:]
        return block.reshape(steps, self.batch_size)


@dataclass
class _Set:
    """A data set checked and prepared for the backend: ``rows`` as its prepare_rows gave them."""

    x: np.ndarray
    labels: np.ndarray
    rows: object = None  # net.prepare(x), as the backend's engine reads it (for fused training)
    eval_rows: object = None  # the samples evaluated (the first eval_samples), prepared
    eval_labels: np.ndarray | None = None  # their labels


class Trainer:
    """Trains ``net`` with ``config``; ``start_step`` and ``optimizer_state`` continue an earlier run."""

    def __init__(self, net: SequentialNet, config: TrainConfig | None = None, optimizer: Optimizer | None = None,
                 start_step: int = 0, optimizer_state: np.ndarray | None = None):
        self.net = net
        self.config = config or TrainConfig()
        self.config.validate()
        c = self.config
        if c.path == "fused" and not net.engine_runs_it:
            raise ValueError(f"{net.describe()} has an op the fused engine does not run: train it with path='layers' "
                             f"(--path layers)")
        extra = {"momentum": {"momentum": c.momentum}, "nesterov": {"momentum": c.momentum},
                 "rmsprop": {"decay_rate": c.decay_rate}, "adam": {"beta1": c.beta1, "beta2": c.beta2}}.get(c.optimizer, {})
        self.optimizer = optimizer or make_optimizer(c.optimizer, c.lr, backend=net.backend, **extra)
        with np.errstate(over="ignore"):  # an overflow is reported below
            self.hyper = self.optimizer.hyper(net.dtype)
            self.hyper[engine.HYPER_DECAY] = net.weight_decay_lambda
        if not np.isfinite(self.hyper).all():
            raise ValueError(f"the optimizer's settings {self.optimizer.hyper(np.float64).tolist()} overflow {net.dtype} "
                             f"(at most {np.finfo(net.dtype).max:.3g}); the learning rate is far too large")
        if not isinstance(start_step, (int, np.integer)) or start_step < 0:
            raise ValueError(f"start_step must be a non-negative integer, got {start_step!r}")
        self.step = int(start_step)  # steps done, counting an earlier run's
        count = net.flat_params.size
        require_memory(3 * count * net.dtype.itemsize, f"training a network of {count:,} parameters (gradients and optimizer state)")
        self.state = np.zeros((2, count), dtype=net.dtype)  # optimizer state, the flat layout of the parameters
        if optimizer_state is not None:
            check.same_shape("optimizer_state", np.asarray(optimizer_state), "(2, parameter count)", self.state.shape)
            self.state[...] = optimizer_state
        # the layer path's optimizer keeps its per-parameter state in views of the same buffer
        self.optimizer.bind_state(self.state, net.param_views, self.step)

    # ---- the steps of fit ----------------------------------------------------------------

    def _prepare(self, x, t, name: str) -> _Set:
        x = check.kernel_ready(self.net.as_input(x, name), self.net.dtype)
        return _Set(x, check.class_labels(t, x.shape[0], self.net.n_classes))

    def _split_validation(self, train: _Set, rng) -> tuple[_Set, _Set | None]:
        c = self.config
        if c.val_split == 0:
            return train, None
        n = train.x.shape[0]
        n_val = max(1, int(round(c.val_split * n)))
        if n_val >= n:
            raise ValueError(f"val_split {c.val_split} of {n} training samples leaves no samples to train on")
        order = rng.permutation(n)
        val = _Set(train.x[order[:n_val]], train.labels[order[:n_val]])
        return _Set(np.ascontiguousarray(train.x[order[n_val:]]), train.labels[order[n_val:]]), val

    def _schedule(self, n_train: int) -> tuple[int, list[int]]:
        """eval_every, and the (global) step numbers after which to evaluate."""
        c = self.config
        eval_every = c.eval_every or max(n_train // c.batch_size, 1)
        first, last = self.step, self.step + c.iterations
        # after step i (0-based) when i % eval_every == 0, as the seed does
        after = [i + 1 for i in range(-(-first // eval_every) * eval_every, last, eval_every)]
        if c.eval_at_end and (not after or after[-1] != last):
            after.append(last)
        return eval_every, after

    def _begin(self, x_train, t_train, x_test, t_test) -> tuple[dict, BatchSampler, History, list[int]]:
        """The checked and prepared sets, the batch sampler, an empty history, the evaluation steps."""
        c, net = self.config, self.net
        net.check_params_in_place()
        train = self._prepare(x_train, t_train, "the training set")
        test = self._prepare(x_test, t_test, "the test set") if x_test is not None else None
        # a resumed run draws other batches than its first part did
        rng = np.random.default_rng(c.seed if self.step == 0 else [c.seed, self.step])
        train, val = self._split_validation(train, rng)
        eval_every, eval_after = self._schedule(train.x.shape[0])
        sampler = BatchSampler(train.x.shape[0], c.batch_size, c.sampling, rng)
        history = History(config=asdict(c) | {"eval_every": eval_every, "network": net.describe(),
                                                "architecture": net.architecture, "dtype": str(net.dtype),
                                                "backend": net.backend or backends.current()},
                          first_step=self.step)
        # each set once in the form the backend reads fastest (native: the nonzeros of MNIST's images);
        # the sets evaluated are their first eval_samples samples
        sets = {"train": train, "test": test, "val": val}
        train.rows = net.prepare(train.x, checked=True) if c.path == "fused" else None
        for s in sets.values():
            if s:
                whole = c.eval_samples is None or c.eval_samples >= s.x.shape[0]
                if whole and s.rows is not None:
                    s.eval_rows = s.rows
                else:
                    s.eval_rows = net.prepare(s.x[:c.eval_samples], checked=True)
                s.eval_labels = s.labels[:c.eval_samples]
        return sets, sampler, history, eval_after

    def _train_block(self, run_steps, sampler: BatchSampler, steps: int, history: History) -> tuple[np.ndarray, float]:
        """``steps`` steps; their losses and seconds. Divergence restores the last good weights."""
        t0 = time.perf_counter()
        try:
            losses = run_steps(sampler.next_block(steps), self.step)
        except engine.StepsInterrupted as stop:  # Ctrl-C within the block: keep the steps it applied
            history.train_seconds += time.perf_counter() - t0
            history.losses.extend(stop.losses.tolist())
            self.step += stop.done
            raise
        seconds = time.perf_counter() - t0
        history.train_seconds += seconds
        history.losses.extend(losses.tolist())
        if losses.size < steps:
            raise self._diverged(self.step + losses.size + 1, "loss")
        if not np.isfinite(self.net.flat_params).all():  # the last update overflowed
            raise self._diverged(self.step + steps, "weights")
        self.step += steps
        return losses, seconds

    def _evaluate(self, sets: dict, losses: list, history: History, started: float) -> Evaluation:
        """Accuracy on every set now; the weights become the ones to fall back on."""
        t0 = time.perf_counter()
        acc = {name: self.net.accuracy(s.eval_rows, s.eval_labels) if s else None for name, s in sets.items()}
        eval_every = history.config["eval_every"]
        record = Evaluation(step=self.step, epoch=self.step / eval_every,
                            loss=float(np.mean(losses)) if losses else float("nan"), train_acc=acc["train"],
                            test_acc=acc["test"], val_acc=acc["val"], elapsed=time.perf_counter() - started)
        history.eval_seconds += time.perf_counter() - t0
        history.evaluations.append(record)
        self._checkpoint = (self.step, self.net.flat_params.copy())
        return record

    def _keep_best(self, record: Evaluation, history: History) -> bool:
        """With validation: keep the best weights seen; True when patience has run out."""
        if self._best is None or record.val_acc > self._best[0]:
            self._best = (record.val_acc, self.net.flat_params.copy(), self.state.copy(), self.step)
            history.best_step = self.step
            return False
        patience = self.config.patience
        return bool(patience) and sum(e.step > history.best_step for e in history.evaluations) >= patience

    def _diverged(self, failed_step: int, what: str) -> TrainingDiverged:
        good_step, good = self._checkpoint
        self.net.flat_params[...] = good
        self.step = good_step
        return TrainingDiverged(
            f"the {what} became NaN or inf at step {failed_step}; the network holds the weights of step {good_step} "
            f"(the last evaluation). Lower the learning rate (now {self.config.lr}) or check the inputs."
        )

    def fit(self, x_train, t_train, x_test=None, t_test=None,
            on_evaluation: Callable[[Evaluation], None] | None = None) -> History:
        sets, sampler, history, eval_after = self._begin(x_train, t_train, x_test, t_test)
        run_steps = self._step_runner(sets["train"])
        self._checkpoint = (self.step, self.net.flat_params.copy())  # finite weights to fall back on
        self._best = None
        end = self.step + self.config.iterations
        since_eval: list[float] = []
        started = time.perf_counter()
        progress = _progress_bar(self.config.iterations, self.config.progress)
        block = 1  # steps per fused call, grown to about BLOCK_SECONDS
        threads = self._thread_choice()
        try:
            while self.step < end:
                next_eval = next((s for s in eval_after if s > self.step), end)
                steps = min(block, next_eval - self.step)
                count, probe = threads.next_block() if threads else (None, False)
                if probe:
                    steps = max(1, steps // threads.PROBE_SHARE)
                losses, seconds = self._train_block(run_steps, sampler, steps, history)
                if threads:
                    threads.record(count, seconds, steps)
                since_eval.extend(losses.tolist())
                if not probe:
                    block = max(1, min(4 * block, int(steps * BLOCK_SECONDS / max(seconds, 1e-6))))
                progress.update(steps)
                progress.set_postfix(loss=f"{np.mean(losses):.4f}", refresh=False)
                if self.step != next_eval or self.step not in eval_after:
                    continue
                record = self._evaluate(sets, since_eval, history, started)
                since_eval = []
                if on_evaluation:
                    on_evaluation(record)
                if sets["val"] is not None and self._keep_best(record, history):
                    history.stopped_early = True
                    break
        except KeyboardInterrupt:
            history.interrupted = True  # the caller keeps what was trained so far
        finally:
            progress.close()
            if threads:
                threads.restore()
        if self._best is not None:  # with validation the run ends where its best evaluation was
            _, self.net.flat_params[...], self.state[...], self.step = self._best
        return history

    def _thread_choice(self) -> ThreadChoice | None:
        """The native engine's threads, chosen block by block (fastbp/threads.py): all of the
        machine's, or one while another process holds a core and one measures faster."""
        if self.config.path == "layers" or (self.net.backend or backends.current()) != "native":
            return None
        return ThreadChoice.for_native()

    def _step_runner(self, train: _Set):
        """A function (indices block, steps done) -> losses of that block, for the configured path;
        fewer losses than steps when a loss was not finite (that step not applied)."""
        net, opt = self.net, self.optimizer
        if self.config.path == "layers":
            def run_layers(batches, done):
                losses = np.empty(len(batches))
                for s, batch in enumerate(batches):
                    with warnings.catch_warnings():  # a non-finite loss is reported as divergence, below
                        warnings.simplefilter("ignore", NonFiniteWarning)
                        grads = net.gradient(train.x[batch], train.labels[batch])
                    losses[s] = net.last_layer.loss + net.decay_loss()
                    if not np.isfinite(losses[s]):
                        return losses[:s]
                    opt.update(net.params, grads)
                return losses
            return run_layers

        grads = np.zeros_like(net.flat_params)
        program = engine.seeded(net.program, self.config.seed)  # dropout's masks: step `done + s + 1` of this seed

        def run_fused(batches, done):
            losses, stats = np.empty(len(batches)), net.running_stats()  # batch normalization's, updated per step
            try:
                completed = train.rows.ops.train_steps(train.rows.rows, train.labels, batches, net.flat_params, grads,
                                                       program, opt.code, self.hyper, self.state, done, losses, stats)
            finally:  # (a Ctrl-C keeps the steps applied, and their statistics)
                net.set_running_stats(stats)
            return losses[:completed]
        return run_fused


def tqdm_class():
    """tqdm's bar: a notebook's widget under IPython (tqdm.auto), else the terminal's, whose import
    costs a third of tqdm.auto's (no asyncio, no notebook probe): a short run's start is felt."""
    if "IPython" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class _NoProgress:
    """The bar's interface when no bar is wanted: tqdm is not even imported."""

    def update(self, steps):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    # disable=None: tqdm draws only where stderr is a terminal
    return tqdm_class()(total=total, disable=None, unit="step", dynamic_ncols=True, leave=False)
