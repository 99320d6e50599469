"""PNG plots of a training history: the loss per step and train/test accuracy per epoch, as the
seed draws them. matplotlib is optional (``pip install "fastbp[plot]"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .train import History


class PlottingUnavailable(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise PlottingUnavailable(
            'plots need matplotlib, which is not installed: pip install "fastbp[plot]" (or pass --no-plot)'
        ) from exc
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: History, directory) -> dict[str, Path]:
    """Write loss.png and accuracy.png into ``directory``; returns their paths."""
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"loss": directory / "loss.png", "accuracy": directory / "accuracy.png"}

    fig, ax = plt.subplots(figsize=(10, 5))
    losses = np.asarray(history.losses)
    ax.plot(np.arange(1, losses.size + 1), losses, linewidth=0.5, alpha=0.5, label="loss per step")
    window = min(100, max(losses.size // 20, 1))
    if losses.size >= window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, losses.size + 1), smooth, label=f"mean of {window} steps")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(paths["loss"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    epochs = [e.epoch for e in history.evaluations]
    ax.plot(epochs, [e.train_acc for e in history.evaluations], marker="o", label="train acc")
    if any(e.test_acc is not None for e in history.evaluations):
        ax.plot(epochs, [e.test_acc for e in history.evaluations], marker="s", linestyle="--", label="test acc")
    if any(e.val_acc is not None for e in history.evaluations):
        ax.plot(epochs, [e.val_acc for e in history.evaluations], marker="^", linestyle=":", label="validation acc")
    if history.best_step is not None and history.stopped_early:
        ax.axvline(history.best_step / history.config["eval_every"], color="gray", linestyle=":", label="early stop (best)")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(paths["accuracy"], dpi=100)
    plt.close(fig)
    return paths
