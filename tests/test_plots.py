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
