"""The drop-in acceptance test: the book's own scripts (../shared/dlfs) run unchanged with fastbp's
layers and optimizers in place of its common/layers.py and common/optimizer.py. The quick ones run
here; the long trainings run a few iterations here and whole in benchmarks/dropin.py."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from book import BOOK, requires_book, run_book_script
from mnist import requires_mnist

pytestmark = [requires_book, requires_mnist]


def numbers(text: str, key: str) -> list[float]:
    """The values the book's gradient checks print as 'key:value' or 'key value'."""
    return [float(v) for v in re.findall(rf"^{key}[: ]\s*([0-9.eE+-]+)\s*$", text, flags=re.M)]


def test_ch05_gradient_check():
    result = run_book_script("ch05/gradient_check.py")
    assert result.returncode == 0, result.stderr
    for key in ("W1", "b1", "W2", "b2"):  # the mean |backprop - numerical| the book prints
        assert numbers(result.stdout, key)[0] < 1e-6


def test_ch06_optimizer_compare_naive():
    result = run_book_script("ch06/optimizer_compare_naive.py")
    assert result.returncode == 0, result.stderr


def test_ch06_batch_norm_gradient_check():
    ours, book = run_book_script("ch06/batch_norm_gradient_check.py"), run_book_script("ch06/batch_norm_gradient_check.py", original=True)
    assert ours.returncode == 0, ours.stderr
    for key in ("W1", "b1", "gamma1", "beta1", "W2", "b2", "W3", "b3"):
        assert numbers(ours.stdout, key)[0] < 1e-6, key
    # beta2's numerical gradient is noise (a batch of one normalises to 0): as large as the book's own
    assert numbers(ours.stdout, "beta2")[0] < 10 * max(numbers(book.stdout, "beta2")[0], 1e-6)


def test_ch07_gradient_check():
    result = run_book_script("ch07/gradient_check.py")
    assert result.returncode == 0, result.stderr
    for key in ("W1", "b1", "W2", "b2", "W3", "b3"):
        assert numbers(result.stdout, key)[0] < 1e-5, key


@pytest.mark.parametrize("script", ["ch07/apply_filter.py", "ch07/visualize_filter.py",
                                    "ch06/weight_init_activation_histogram.py"])
def test_scripts_that_draw_run(script):
    result = run_book_script(script)
    assert result.returncode == 0, result.stderr


# Runs in a copy of the book: its SimpleConvNet with the book's trained ch07/params.pkl, the
# predictions for the first 1000 test images as JSON.
PREDICT = r"""
import json, os, sys
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "ch07"))
import numpy as np
from simple_convnet import SimpleConvNet
from fastbp.data import load_mnist
_, (x, t) = load_mnist(flatten=False)
net = SimpleConvNet()
net.load_params(os.path.join("ch07", "params.pkl"))
print(json.dumps({"labels": np.argmax(net.predict(x[:1000]), axis=1).tolist(), "accuracy": net.accuracy(x[:3000], t[:3000])}))
"""


def book_copy(tmp_path, fastbp_layers: bool):
    work = tmp_path / ("fastbp" if fastbp_layers else "book")
    for part in ("common", "ch07", "dataset"):
        shutil.copytree(BOOK / part, work / part)
    if fastbp_layers:
        (work / "common" / "layers.py").write_text("from fastbp.layers import *  # noqa: F401,F403\n")
        (work / "common" / "optimizer.py").write_text("from fastbp.optim import *  # noqa: F401,F403\n")
    return work


def test_the_books_trained_simple_convnet_predicts_the_same_through_fastbps_layers(tmp_path):
    results = {}
    for fastbp_layers in (True, False):
        out = subprocess.run([sys.executable, "-c", PREDICT], cwd=book_copy(tmp_path, fastbp_layers), check=True,
                             capture_output=True, text=True, env=os.environ).stdout
        results[fastbp_layers] = json.loads(out.strip().splitlines()[-1])
    assert results[True]["labels"] == results[False]["labels"]
    assert results[True]["accuracy"] == pytest.approx(results[False]["accuracy"], abs=1e-4)
    assert results[True]["accuracy"] > 0.9  # the book's trained network: 0.949 on the first 3000 test images


# A few iterations of the book's own Trainer and SimpleConvNet (ch07/train_convnet.py trains 20
# epochs: whole in the benchmarks), float64 as the book; the losses of both runs printed.
TRAIN = r"""
import json, os, sys
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "ch07"))
import numpy as np
from simple_convnet import SimpleConvNet
from common.trainer import Trainer
from fastbp.data import load_mnist
(x, t), (xt, tt) = load_mnist(flatten=False)
np.random.seed(0)
net = SimpleConvNet()
trainer = Trainer(net, x[:500], t[:500], xt[:100], tt[:100], epochs=1, mini_batch_size=50, optimizer="Adam",
                  optimizer_param={"lr": 0.001}, evaluate_sample_num_per_epoch=100, verbose=False)
trainer.train()
print(json.dumps({"losses": trainer.train_loss_list, "W1": net.params["W1"].ravel().tolist()}))
"""


def test_a_few_iterations_of_the_books_ch07_training_give_the_books_losses(tmp_path):
    losses, weights = {}, {}
    for fastbp_layers in (True, False):
        out = subprocess.run([sys.executable, "-c", TRAIN], cwd=book_copy(tmp_path, fastbp_layers), check=True,
                             capture_output=True, text=True, env=os.environ).stdout
        run = json.loads(out.strip().splitlines()[-1])
        losses[fastbp_layers], weights[fastbp_layers] = np.array(run["losses"]), np.array(run["W1"])
    assert len(losses[True]) == 10
    # the same float64 steps from the same seed: the same weights, to rounding (summed in other orders)
    np.testing.assert_allclose(weights[True], weights[False], rtol=1e-9, atol=1e-12)
    # the book's loss is -log(y + 1e-7): below the exact -log(y) fastbp reports by at most 1e-7 / y,
    # 2e-6 for a label's probability y >= 0.05 (an untrained net gives each about 0.1)
    assert np.all(losses[True] >= losses[False] - 1e-12)
    np.testing.assert_allclose(losses[True], losses[False], rtol=0, atol=2e-6)
