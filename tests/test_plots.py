import sys

import pytest

from fastbp.plots import PlottingUnavailable, plot_history
from fastbp.train import Evaluation, History


def small_history():
    evals = [Evaluation(step=s, epoch=s / 10, loss=1.0 / s, train_acc=0.5 + s / 100, test_acc=0.5 + s / 120,
                        val_acc=None, elapsed=0.1 * s) for s in (1, 11, 21)]
    return History(config={"eval_every": 10}, losses=[2.0 / (i + 1) for i in range(25)], evaluations=evals)


def test_plots_are_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    paths = plot_history(small_history(), tmp_path)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails as if it were not installed
    with pytest.raises(PlottingUnavailable, match=r'pip install "fastbp\[plot\]"'):
        plot_history(small_history(), tmp_path)


def mnist_like_history(best_step=None, stopped_early=False):
    accs = [0.16, 0.90, 0.93, 0.95, 0.96, 0.97]
    evals = [Evaluation(step=1 + 600 * k, epoch=(1 + 600 * k) / 600, loss=1.0, train_acc=a, test_acc=a - 0.002,
                        val_acc=a - 0.001 if best_step else None, elapsed=k) for k, a in enumerate(accs)]
    config = {"eval_every": 600, "sizes": [784, 50, 10], "activation": "relu", "dtype": "float32",
              "optimizer": "sgd", "lr": 0.1, "batch_size": 100, "backend": "native"}
    return History(config=config, losses=[1.0] * 3001, evaluations=evals, best_step=best_step, stopped_early=stopped_early)


def test_accuracy_plot_shows_the_run_the_region_of_the_curves_and_whole_epochs():
    pytest.importorskip("matplotlib")
    from matplotlib.ticker import MaxNLocator

    from fastbp.plots import accuracy_figure, loss_figure

    history = mnist_like_history(best_step=1801)
    for figure in (accuracy_figure, loss_figure):
        ax = figure(history).axes[0]
        assert ax.get_title() == "784-50-10 relu net, float32, sgd lr 0.1, batch 100, 3001 steps, native backend"
    ax = accuracy_figure(history).axes[0]
    low, high = ax.get_ylim()
    assert 0.85 < low < 0.898 and 0.97 < high <= 1.0  # not 0-1: the trained curves fill the axis
    assert any("step 1: train acc 0.160 (below the axis)" == t.get_text() for t in ax.texts)
    locator = ax.xaxis.get_major_locator()
    assert isinstance(locator, MaxNLocator) and all(float(t).is_integer() for t in locator.tick_values(0, 5))
    best = [line for line in ax.get_lines() if line.get_label() == "best validation (kept)"]
    assert len(best) == 1 and best[0].get_xdata()[0] == pytest.approx(1801 / 600)
    ax = accuracy_figure(mnist_like_history(best_step=1801, stopped_early=True)).axes[0]
    assert [line.get_label() for line in ax.get_lines()][-1] == "best validation (early stop)"
