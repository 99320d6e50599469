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

from book import BOOK, book_network, requires_book, run_book_script
from mnist import requires_mnist

pytestmark = [requires_book, requires_mnist]


def numbers(text: str, key: str) -> list[float]:
    """The values the book's gradient checks print as 'key:value' or 'key value'."""
    return [float(v) for v in re.findall(rf"^{key}[: ]\s*([0-9.eE+-]+)\s*$", text, flags=re.M)]


def same_printed_gradient_checks(script: str, keys, seed: int = 0):
    """The script's printed mean |backprop - numerical| per parameter with fastbp's layers is no
    larger than with the book's own, from the same seeded draws (the scripts draw their weights
    unseeded): a finite difference that crosses a ReLU kink crosses it in both runs.

    fastbp's is usually smaller: the book's loss is -log(y + 1e-7), whose finite differences stray
    from backprop's y - t by about 1e-7 / y; fastbp's loss is -log(y) itself. The allowance is the
    rounding of a central difference (L(p + h) - L(p - h)) / 2h of a float64 loss of about 2.3
    (ln 10): 8 ulps, 8 * 2.2e-16 * 2.3 / 2e-4 = 2e-11 per entry, and so on each printed mean."""
    runs = [run_book_script(script, original=original, seed=seed) for original in (False, True)]
    for result in runs:
        assert result.returncode == 0, result.stderr
    for key in keys:
        ours, book = (numbers(result.stdout, key) for result in runs)
        assert len(ours) == len(book) == 1, key
        assert ours[0] <= book[0] + 2e-11, (key, ours, book)


def test_ch05_gradient_check():
    same_printed_gradient_checks("ch05/gradient_check.py", ("W1", "b1", "W2", "b2"))


def test_ch06_optimizer_compare_naive():
    result = run_book_script("ch06/optimizer_compare_naive.py")
    assert result.returncode == 0, result.stderr


def test_ch06_batch_norm_gradient_check():
    result = run_book_script("ch06/batch_norm_gradient_check.py")
    assert result.returncode == 0, result.stderr
    for key in ("W1", "b1", "gamma1", "beta1", "W2", "b2", "W3", "b3"):
        assert numbers(result.stdout, key)[0] < 1e-6, key
    # beta2's numerical gradient is noise (a batch of one normalises to 0; the book's own prints
    # about 0.05): only finite
    assert np.isfinite(numbers(result.stdout, "beta2")[0])


def test_ch07_gradient_check():
    same_printed_gradient_checks("ch07/gradient_check.py", ("W1", "b1", "W2", "b2", "W3", "b3"))


@pytest.mark.parametrize("backend", ["reference", "native", "numba"])
def test_the_books_nets_give_the_same_gradients_with_fastbps_layers(backend):
    """ch07's SimpleConvNet and ch06's MultiLayerNetExtend (batch norm, dropout) from the same seed:
    backprop through fastbp's layers is the book's, to rounding; so are the finite differences."""
    import fastbp

    if backend not in fastbp.available_backends():
        pytest.skip(f"{backend} is not available here")
    with fastbp.use_backend(backend):
        for module, make in (
            ("simple_convnet", lambda m: m.SimpleConvNet(input_dim=(1, 10, 10), hidden_size=10, weight_init_std=0.01,
                                                         conv_param={"filter_num": 4, "filter_size": 3, "pad": 0,
                                                                     "stride": 1})),
            ("common.multi_layer_net_extend", lambda m: m.MultiLayerNetExtend(
                input_size=20, hidden_size_list=[8, 6], output_size=3, use_batchnorm=True, use_dropout=True,
                dropout_ration=0.3)),
        ):
            grads = {}
            for fastbp_layers in (True, False):
                net_module = book_network(module, fastbp_layers)
                np.random.seed(3)
                net = make(net_module)
                x = np.random.rand(4, 1, 10, 10) if module == "simple_convnet" else np.random.rand(4, 20)
                t = np.array([1, 0, 2, 1])
                np.random.seed(4)  # dropout's draw
                grads[fastbp_layers] = net.gradient(x, t)
            for key, ours in grads[True].items():
                np.testing.assert_allclose(ours, grads[False][key], rtol=1e-9, atol=1e-15, err_msg=f"{module} {key}")


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
