"""Mini-batch training with the seed's loop, on a fused compiled path or layer by layer.

The seed's schedule: each step draws ``batch_size`` training indices with replacement (or, with
``sampling='shuffle'``, walks a fresh permutation each epoch), runs forward, backward and the
optimizer update; after the update of every step ``i`` with ``i % eval_every == 0`` (0-based;
``eval_every`` defaults to one epoch, ``train_size // batch_size``) the accuracy on the whole
train and test sets is recorded. 10000 steps of batch 100 on MNIST give the seed's 17 evaluations.

``path='fused'`` runs each stretch of steps between evaluations as one call of the backend's
``train_steps`` (no Python per layer or per step); ``path='layers'`` calls ``net.gradient`` and
the optimizer's ``update`` each step, through the same kernels. Both draw the same indices from
the same seeded generator, so they record the same losses (to float rounding).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import _validate as check
from . import backends
from .backends import _network
from .nets import MultiLayerNet
from .optim import Optimizer, make_optimizer


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the network holds the weights of the last evaluation."""


@dataclass
class TrainConfig:
    iterations: int = 10000
    batch_size: int = 100
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    sampling: str = "replacement"  # or "shuffle"
    seed: int = 0
    path: str = "fused"  # or "layers"
    eval_every: int | None = None  # steps between evaluations; default one epoch
    eval_at_end: bool = True  # also evaluate after the last step if the schedule did not
    val_split: float = 0.0  # fraction of the training set held out for early stopping
    patience: int | None = None  # evaluations without a better validation accuracy before stopping
    progress: bool = True

    def validate(self) -> None:
        for name in ("iterations", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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


@dataclass
class Evaluation:
    step: int  # steps completed
    epoch: float
    loss: float  # mean training loss over the steps since the previous evaluation
    train_acc: float
    test_acc: float | None
    val_acc: float | None
    elapsed: float  # seconds since training started


@dataclass
class History:
    config: dict
    losses: list[float] = field(default_factory=list)  # one per step: the loss of that step's forward pass
    evaluations: list[Evaluation] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None
    train_seconds: float = 0.0  # forward/backward/update only
    eval_seconds: float = 0.0

    def save(self, directory) -> dict:
        """history.json (everything), history.csv (one row per evaluation), losses.csv (one row per step)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"json": directory / "history.json", "csv": directory / "history.csv", "losses": directory / "losses.csv"}
        with open(paths["json"], "w") as f:
            json.dump(asdict(self), f, indent=1)
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(Evaluation.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(asdict(e) for e in self.evaluations)
        with open(paths["losses"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss"])
            writer.writerows((i + 1, loss) for i, loss in enumerate(self.losses))
        return paths

    @classmethod
    def load(cls, path) -> "History":
        with open(path) as f:
            data = json.load(f)
        data["evaluations"] = [Evaluation(**e) for e in data["evaluations"]]
        return cls(**data)


class BatchSampler:
    """Mini-batch indices, block by block, from one seeded generator."""

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


class Trainer:
    def __init__(self, net: MultiLayerNet, config: TrainConfig | None = None, optimizer: Optimizer | None = None):
        self.net = net
        self.config = config or TrainConfig()
        self.config.validate()
        c = self.config
        extra = {"momentum": {"momentum": c.momentum}, "adam": {"beta1": c.beta1, "beta2": c.beta2}}.get(c.optimizer, {})
        self.optimizer = optimizer or make_optimizer(c.optimizer, c.lr, backend=net.backend, **extra)

    def _prepare(self, x, t, name: str):
        x = self.net._as_input(x)
        x = check.kernel_ready(x.reshape(x.shape[0], -1), self.net.dtype)
        labels = check.class_labels(t, x.shape[0], int(self.net.sizes[-1]))
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty")
        return x, labels

    def fit(self, x_train, t_train, x_test=None, t_test=None,
            on_evaluation: Callable[[Evaluation], None] | None = None) -> History:
        c, net = self.config, self.net
        net.check_params_in_place()
        x, labels = self._prepare(x_train, t_train, "the training set")
        check.finite("the training set", x)
        test = self._prepare(x_test, t_test, "the test set") if x_test is not None else None
        rng = np.random.default_rng(c.seed)
        val = None
        if c.val_split > 0:
            order = rng.permutation(x.shape[0])
            n_val = max(1, int(round(c.val_split * x.shape[0])))
            val = (x[order[:n_val]], labels[order[:n_val]])
            x, labels = np.ascontiguousarray(x[order[n_val:]]), labels[order[n_val:]]
        eval_every = c.eval_every or max(x.shape[0] // c.batch_size, 1)
        sampler = BatchSampler(x.shape[0], c.batch_size, c.sampling, rng)
        history = History(config=asdict(c) | {"eval_every": eval_every, "sizes": net.sizes.tolist(),
                                                "activation": net.activation, "dtype": str(net.dtype),
                                                "backend": net.backend or backends.current()})
        # evaluate after step i (0-based) when i % eval_every == 0, as the seed does
        eval_after = {i + 1 for i in range(0, c.iterations, eval_every)}
        if c.eval_at_end:
            eval_after.add(c.iterations)
        stops = sorted(eval_after | {c.iterations})  # each block of steps runs up to the next stop

        # each set once in the form the backend reads fastest (native: the nonzeros of MNIST's images)
        ops = backends.get(net.backend)
        rows = {"train": ops.prepare_rows(x)}
        if test:
            rows["test"] = ops.prepare_rows(test[0])
        if val:
            rows["val"] = ops.prepare_rows(val[0])
        step = self._step_runner(x, rows["train"], labels)
        checkpoint = net.flat_params.copy()
        best = (-1.0, None)
        done, start = 0, time.perf_counter()
        progress = _progress_bar(c.iterations, c.progress)
        try:
            for stop in stops:
                t0 = time.perf_counter()
                losses = step(sampler.next_block(stop - done), done)
                history.train_seconds += time.perf_counter() - t0
                history.losses.extend(losses.tolist())
                if losses.size < stop - done or not np.isfinite(losses).all():
                    failed = done + losses.size + 1
                    net.flat_params[...] = checkpoint
                    raise TrainingDiverged(
                        f"the loss became NaN or inf at step {failed}; the network holds the weights of step {done} "
                        f"(the last evaluation). Lower the learning rate (now {c.lr}) or check the inputs."
                    )
                progress.update(stop - done)
                done = stop
                if done not in eval_after:
                    continue
                t0 = time.perf_counter()
                record = Evaluation(
                    step=done, epoch=done / eval_every,
                    loss=float(np.mean(losses)),
                    train_acc=self._accuracy(ops, rows["train"], labels),
                    test_acc=self._accuracy(ops, rows["test"], test[1]) if test else None,
                    val_acc=self._accuracy(ops, rows["val"], val[1]) if val else None,
                    elapsed=0.0,
                )
                history.eval_seconds += time.perf_counter() - t0
                record.elapsed = time.perf_counter() - start
                history.evaluations.append(record)
                checkpoint[...] = net.flat_params
                progress.set_postfix(loss=f"{record.loss:.4f}", test_acc=record.test_acc or record.train_acc)
                if on_evaluation:
                    on_evaluation(record)
                if val is not None:
                    if record.val_acc > best[0]:
                        best = (record.val_acc, net.flat_params.copy())
                        history.best_step = done
                    elif c.patience and len([e for e in history.evaluations if e.step > history.best_step]) >= c.patience:
                        net.flat_params[...] = best[1]  # early stopping keeps the best weights seen
                        history.stopped_early = True
                        break
        finally:
            progress.close()
        return history

    def _accuracy(self, ops, rows, labels) -> float:
        """net.accuracy on a set already checked and prepared by the backend."""
        net = self.net
        predicted = ops.predict_labels(rows, net.flat_params, net.sizes, _network.ACTIVATIONS[net.activation])
        return float(np.sum(predicted == labels) / labels.shape[0])

    def _step_runner(self, x, rows, labels):
        """A function (indices block, steps done) -> losses of that block, for the configured path
        (``rows``: x as the backend's prepare_rows gave it)."""
        net, opt = self.net, self.optimizer
        if self.config.path == "layers":
            def run_layers(batches, done):
                losses = np.empty(len(batches))
                for s, batch in enumerate(batches):
                    try:
                        grads = net.gradient(x[batch], labels[batch])
                    except check.NonFiniteError:
                        return losses[:s]
                    losses[s] = net.last_layer.loss
                    if not np.isfinite(losses[s]):
                        return losses[:s]
                    opt.update(net.params, grads)
                return losses
            return run_layers

        ops = backends.get(net.backend)
        grads = np.zeros_like(net.flat_params)
        state = np.zeros((2, net.flat_params.size), dtype=net.dtype)
        hyper = opt.hyper(net.dtype)
        activation = _network.ACTIVATIONS[net.activation]

        def run_fused(batches, done):
            losses = np.empty(len(batches))
            completed = ops.train_steps(rows, labels, batches, net.flat_params, grads, net.sizes, activation,
                                        opt.code, hyper, state, done, losses)
            return losses[:completed]
        return run_fused


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, leave=False)
