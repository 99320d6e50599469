"""The fastbp command: help, info, train and gradcheck, and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp.cli import build_parser, main
from mnist import requires_mnist, write_tiny_mnist


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True, text=True, env=env)


def test_help_explains_every_train_flag():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--hidden", "--activation", "--init", "--dtype", "--lr", "--batch-size", "--iterations", "--optimizer",
                 "--sampling", "--val-split", "--patience", "--backend", "--path", "--seed", "--data", "--out", "--no-plot",
                 "--model", "--epochs", "--eval-samples"):
        assert flag in text
    assert "reproduces the seed's experiment" in text and "97%" in text
    assert "chapter 7 experiment" in text and "0.989" in text and "99.35%" in text  # the presets, as measured


def test_info_lists_versions_and_backends():
    result = run("info")
    assert result.returncode == 0, result.stderr
    for word in ("numpy", "numba", "scipy", "backends", "native", "reference", "cpu", "threads", "settings"):
        assert word in result.stdout
    if "native" in fastbp.available_backends():
        from fastbp import _native

        assert f"row kernels: {_native.isa()[1]};" in result.stdout  # the CPU's best, unless a test lowered it


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "must be a positive number, got -1"),
    (["--dropout", "1"], "--dropout: must lie in [0, 1), got 1"),
    (["--weight-decay", "-0.1"], "--weight-decay: must be a non-negative number, got -0.1"),
])
def test_bad_flags_are_refused_with_the_reason(capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert "MNIST not found in" in err and "missing train-images-idx3-ubyte" in err


@requires_mnist
def test_train_writes_weights_history_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    code = main(["train", "--iterations", "700", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Step:     1" in printed and "Step:   601" in printed and "Final test accuracy" in printed
    for name in ("weights.npz", "history.json", "history.csv", "losses.csv", "loss.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert len(history["losses"]) == 700 and history["evaluations"][-1]["test_acc"] > 0.85
    with np.load(out / "weights.npz") as weights:
        assert weights["W1"].shape == (784, 50) and weights["W1"].dtype == np.float32


@requires_mnist
def test_gradcheck_passes_on_mnist(capsys):
    assert main(["gradcheck", "--hidden", "8", "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "PASSED" in printed and "W1" in printed and "(784, 8)" in printed


@pytest.fixture
def tiny(tmp_path):
    """A small MNIST-shaped data set (random pixels) in a folder, for runs that check behaviour, not accuracy."""
    folder = tmp_path / "tiny-mnist"
    write_tiny_mnist(folder, n_train=200, n_test=50)
    return folder


def train(tiny, *flags):
    return main(["train", "--data", str(tiny), "--no-verify", "--no-progress", "--no-plot", *flags])


def test_help_names_every_backend_and_the_optimizers_own_learning_rates():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    text = " ".join(choices["train"].format_help().split())  # help wraps lines where it likes
    assert "97% test accuracy" in text and "97%%" not in text
    assert "native, numba, reference" in text
    assert "native, numba, reference" in " ".join(choices["gradcheck"].format_help().split())
    assert "sgd 0.1, adam 0.001, the others 0.01" in text


def test_each_optimizer_starts_from_its_own_learning_rate(tiny, tmp_path, capsys):
    for optimizer, lr in (("adam", "0.001"), ("momentum", "0.01"), ("sgd", "0.1"), ("rmsprop", "0.01"),
                          ("nesterov", "0.01"), ("adagrad", "0.01")):
        assert train(tiny, "--optimizer", optimizer, "--iterations", "3", "--out", str(tmp_path / optimizer)) == 0
        assert f"{optimizer} lr {lr}," in capsys.readouterr().out


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_unusable_out_folder_is_refused_before_training(tiny, tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "run"
    assert train(tiny, "--out", str(out)) == 2
    captured = capsys.readouterr()
    assert "Step:" not in captured.out  # nothing trained
    assert captured.err.count("\n") == 1 and str(out) in captured.err


def test_a_network_too_large_for_memory_is_refused_with_one_line(tiny, tmp_path, capsys):
    assert train(tiny, "--hidden", "1000000000", "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "784-1000000000-10 network" in err and "more than the" in err
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


def test_a_validation_split_with_no_training_rows_left_is_refused(tiny, tmp_path, capsys):
    assert train(tiny, "--val-split", "0.999", "--out", str(tmp_path / "run")) == 2
    assert "leaves no samples to train on" in capsys.readouterr().err


def test_runs_started_in_the_same_second_get_their_own_folders(tiny, tmp_path, monkeypatch, capsys):
    import datetime

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 11, 30, 12, 0, 0)

    monkeypatch.setattr(datetime, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert train(tiny, "--iterations", "2") == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["mnist-20261130-120000", "mnist-20261130-120000-2", "mnist-20261130-120000-3"]
    assert all((tmp_path / "runs" / f / "weights.npz").exists() for f in folders)


def test_evaluate_predict_and_resume(tiny, tmp_path, capsys):
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    assert train(tiny, "--iterations", "20", "--optimizer", "adam", "--eval-every", "10", "--out", str(run1)) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run1 / "weights.npz"), "--data", str(tiny), "--no-verify"]) == 0
    assert "on the MNIST test set" in capsys.readouterr().out

    from fastbp.nets import MultiLayerNet

    net = MultiLayerNet.load(run1 / "weights.npz")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", net.predict_labels(images.reshape(5, -1).astype(np.float32) / 255))
    assert main(["evaluate", str(run1 / "weights.npz"), "--images", str(tmp_path / "images.npy"),
                 "--labels", str(tmp_path / "labels.npy")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy 1.0000" in printed and "(5 of 5 right)" in printed
    assert main(["predict", str(run1 / "weights.npz"), str(tmp_path / "images.npy")]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "index,label," + ",".join(f"p{c}" for c in range(10)) and len(rows) == 6
    np.save(tmp_path / "one.npy", images[2])  # a single image, (28, 28)
    assert main(["predict", str(run1 / "weights.npz"), str(tmp_path / "one.npy")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].split(",")[1] == rows[3].split(",")[1]

    assert train(tiny, "--resume", str(run1 / "weights.npz"), "--iterations", "15", "--eval-every", "10",
                 "--out", str(run2)) == 0
    printed = capsys.readouterr().out
    assert "adam lr 0.001" in printed and "from step 20" in printed and "Step:    21" in printed
    with np.load(run2 / "weights.npz") as saved:
        assert int(saved["step"]) == 35 and str(saved["optimizer"]) == "adam"
    assert train(tiny, "--resume", str(run1 / "weights.npz"), "--hidden", "20", "--out", str(run2)) == 2
    assert "drop --hidden" in capsys.readouterr().err


def test_the_convnets_train_with_the_books_settings(tiny, tmp_path, capsys):
    """--model simple-convnet: Adam 0.001, shuffled epochs, evaluations on the first --eval-samples
    images, the whole test set at the end; evaluate, predict and resume read its weights."""
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    assert train(tiny, "--model", "simple-convnet", "--hidden", "12", "--epochs", "0.5", "--eval-samples", "30",
                 "--out", str(run1)) == 0
    printed = capsys.readouterr().out
    assert "a 1x28x28-conv30-pool-12-10 network" in printed and "adam lr 0.001" in printed
    assert "batch 100, 1 iterations" in printed  # half an epoch of 200 images in batches of 100
    assert "fused path" in printed and "Test accuracy on all 50 test images" in printed
    history = json.loads((run1 / "history.json").read_text())
    assert history["config"]["sampling"] == "shuffle" and history["config"]["eval_samples"] == 30
    assert main(["evaluate", str(run1 / "weights.npz"), "--data", str(tiny), "--no-verify"]) == 0
    assert "of 50 right" in capsys.readouterr().out
    np.save(tmp_path / "one.npy", np.zeros((1, 28, 28), np.uint8))  # one image, channels first
    assert main(["predict", str(run1 / "weights.npz"), str(tmp_path / "one.npy")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert train(tiny, "--resume", str(run1 / "weights.npz"), "--iterations", "2", "--out", str(run2)) == 0
    assert "from step 1" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["fused", "layers"])
def test_the_deep_convnet_trains_on_either_path(tiny, tmp_path, capsys, path):
    args = ["--model", "deep-convnet", "--iterations", "2", "--batch-size", "8", "--eval-samples", "8"]
    assert train(tiny, *args, *(["--path", "layers"] if path == "layers" else []), "--out", str(tmp_path / "run")) == 0
    printed = capsys.readouterr().out
    assert "conv16-conv16-pool-conv32-conv32-pool-conv64-conv64-pool-50-10" in printed and f"{path} path" in printed


@pytest.mark.parametrize("flags, message", [
    (["--model", "simple-convnet", "--activation", "sigmoid"], "does not take --activation"),
    (["--model", "deep-convnet", "--init", "0.1"], "does not take --init"),
    (["--model", "simple-convnet", "--init", "he"], "does not take --init he"),
    (["--model", "simple-convnet", "--hidden", "10", "20"], "does not take --hidden with more than one size"),
    (["--model", "simple-convnet", "--batchnorm"], "does not take --batchnorm"),
    (["--model", "deep-convnet", "--dropout", "0.2"], "does not take --dropout"),
])
def test_flags_a_convnet_does_not_take_are_named(tiny, tmp_path, capsys, flags, message):
    assert train(tiny, *flags, "--iterations", "1", "--out", str(tmp_path / "run")) == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_stops_a_long_run_soon_and_keeps_what_was_trained(tiny, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--data", str(tiny), "--no-verify", "--no-plot",
                             "--iterations", "100000000", "--eval-every", "100000000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):  # wait for training to start (the first line is printed just before)
        if proc.stdout.readline().startswith("fastbp"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)  # a hang guard, not a timing assertion
    assert proc.returncode == 130, stderr
    assert "Interrupted at step" in stdout
    with np.load(out / "weights.npz") as saved:
        assert int(saved["step"]) > 0


def test_the_books_chapter_6_options_train_in_the_fused_engine(tiny, tmp_path, capsys):
    """--batchnorm, --dropout and --weight-decay: the book's MultiLayerNetExtend on the fused path;
    the weights file keeps the architecture and the running statistics; a resumed run takes weight
    decay again but its network from the file."""
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    assert train(tiny, "--hidden", "20", "20", "--batchnorm", "--dropout", "0.3", "--weight-decay", "0.1",
                 "--iterations", "6", "--eval-every", "3", "--out", str(run1)) == 0
    printed = capsys.readouterr().out
    assert "a 784-20-20-10 batch-normalized network" in printed and "weight decay 0.1," in printed
    assert "fused path" in printed

    from fastbp.nets import MultiLayerNet

    net = MultiLayerNet.load(run1 / "weights.npz")
    assert net.use_batchnorm and net.use_dropout and net.architecture["layers"][3] == {"op": "dropout", "ratio": 0.3}
    assert net.norm_layers[0].running_var.min() > 0  # the engine's running statistics were saved
    assert train(tiny, "--resume", str(run1 / "weights.npz"), "--weight-decay", "0.2", "--iterations", "2",
                 "--out", str(run2)) == 0
    assert "weight decay 0.2," in capsys.readouterr().out
    assert train(tiny, "--resume", str(run1 / "weights.npz"), "--batchnorm", "--out", str(run2)) == 2
    assert "drop --batchnorm" in capsys.readouterr().err
