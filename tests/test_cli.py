"""The fastbp command: help, info, train and gradcheck, and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fastbp.cli import build_parser, main
from mnist import requires_mnist


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True, text=True, env=env)


def test_help_explains_every_train_flag():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--hidden", "--activation", "--init", "--dtype", "--lr", "--batch-size", "--iterations", "--optimizer",
                 "--sampling", "--val-split", "--patience", "--backend", "--path", "--seed", "--data", "--out", "--no-plot"):
        assert flag in text
    assert "defaults reproduce the seed's experiment" in text and "97%" in text


def test_info_lists_versions_and_backends():
    result = run("info")
    assert result.returncode == 0, result.stderr
    for word in ("numpy", "numba", "scipy", "backends", "native", "reference", "cpu", "threads"):
        assert word in result.stdout


def test_bad_flags_are_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--lr", "-1"])
    assert exc.value.code == 2
    assert "must be a positive number, got -1" in capsys.readouterr().err


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
