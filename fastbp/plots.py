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


def run_title(history: History) -> str:
    """One line naming the run: network, optimizer, batch, steps, backend."""
    c = history.config
    network = c.get("network") or f"{'-'.join(map(str, c.get('sizes', [])))} {c.get('activation', '')} net"  # 0.1's
    return (f"{network}, {c.get('dtype', '')}, {c.get('optimizer')} lr {c.get('lr')}, "
            f"batch {c.get('batch_size')}, {history.first_step + len(history.losses)} steps, {c.get('backend')} backend")


def accuracy_limits(values) -> tuple[float, float]:
    """The accuracy axis around where the curves are (0.90-0.98 for MNIST, not squashed into 0-1)."""
    values = [v for v in values if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    margin = max(0.1 * (high - low), 0.005)
    return max(0.0, low - margin), min(1.0, high + margin)


def plot_history(history: History, directory) -> dict[str, Path]:
    """Write loss.png and accuracy.png into ``directory``; returns their paths."""
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"loss": directory / "loss.png", "accuracy": directory / "accuracy.png"}
    for name, draw in (("loss", loss_figure), ("accuracy", accuracy_figure)):
        fig = draw(history)
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)
    return paths


def loss_figure(history: History):
    """The loss of every step, and its running mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    losses = np.asarray(history.losses)
    steps = history.first_step + np.arange(1, losses.size + 1)
    ax.plot(steps, losses, linewidth=0.5, alpha=0.5, label="loss per step")
    window = min(100, max(losses.size // 20, 1))
    if losses.size >= window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, label=f"mean of {window} steps")
    ax.set_title(run_title(history), fontsize=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def accuracy_figure(history: History):
    """Train, test and validation accuracy per epoch, the axis fitted to the trained network."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(10, 5))
    evaluations = history.evaluations
    epochs = [e.epoch for e in evaluations]
    ax.plot(epochs, [e.train_acc for e in evaluations], marker="o", label="train acc")
    if any(e.test_acc is not None for e in evaluations):
        ax.plot(epochs, [e.test_acc for e in evaluations], marker="s", linestyle="--", label="test acc")
    if any(e.val_acc is not None for e in evaluations):
        ax.plot(epochs, [e.val_acc for e in evaluations], marker="^", linestyle=":", label="validation acc")
    if history.best_step is not None:
        label = "best validation (early stop)" if history.stopped_early else "best validation (kept)"
        ax.axvline(history.best_step / history.config["eval_every"], color="gray", linestyle=":", label=label)
    ax.set_title(run_title(history), fontsize=10)
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # the first evaluation (after one step) is near chance: with later ones to show, it is left
    # below the axis and named in a note, so that the axis spans where the trained network is
    shown = evaluations[1:] if len(evaluations) > 2 else evaluations
    low, high = accuracy_limits([a for e in shown for a in (e.train_acc, e.test_acc, e.val_acc)])
    ax.set_ylim(low, high)
    first = evaluations[0] if evaluations else None
    if first is not None and min(a for a in (first.train_acc, first.test_acc, first.val_acc) if a is not None) < low:
        ax.annotate(f"step {first.step}: train acc {first.train_acc:.3f} (below the axis)", xy=(0.01, 0.02),
                    xycoords="axes fraction", fontsize=8, color="gray")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
