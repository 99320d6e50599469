"""The trainer: the seed's schedule, both paths agreeing, divergence, early stopping, history."""

import subprocess
import sys

import numpy as np
import pytest

from fastbp.nets import MultiLayerNet
from fastbp.train import BatchSampler, History, TrainConfig, Trainer, TrainingDiverged


def blobs(rng, n=600, d=12, classes=3):
    """Separable clusters: a small problem any of the optimizers learns in a few hundred steps."""
    centers = rng.standard_normal((classes, d)) * 3
    t = rng.integers(0, classes, n)
    return (centers[t] + rng.standard_normal((n, d))).astype(np.float32), t


def fit(rng, path="fused", optimizer="sgd", backend=None, dtype=np.float32, **config):
    x, t = blobs(np.random.default_rng(1))
    net = MultiLayerNet(12, [10], 3, weight_init_std=0.1, dtype=dtype, backend=backend, seed=0)
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.1, "rmsprop": 0.01, "adam": 0.01}[optimizer]
    defaults = dict(iterations=120, batch_size=16, lr=lr, optimizer=optimizer, path=path, progress=False)
    history = Trainer(net, TrainConfig(**(defaults | config))).fit(x[:500], t[:500], x[500:], t[500:])
    return net, history


def test_evaluates_on_the_seeds_schedule(rng):
    _, history = fit(rng, iterations=25, eval_every=10)
    assert [e.step for e in history.evaluations] == [1, 11, 21, 25]  # after steps 0, 10, 20 (0-based) and the last
    _, history = fit(rng, iterations=25, eval_every=10, eval_at_end=False)
    assert [e.step for e in history.evaluations] == [1, 11, 21]
    assert len(history.losses) == 25


def test_seeds_experiment_has_17_evaluations(rng):
    """10000 steps over 600 samples with batch 1: one epoch is 600 steps, as MNIST's 60000 / 100."""
    x, t = blobs(rng, n=600)
    net = MultiLayerNet(12, [4], 3, seed=0)
    config = TrainConfig(iterations=10000, batch_size=1, lr=0.01, eval_at_end=False, progress=False)
    history = Trainer(net, config).fit(x, t)
    assert [e.step for e in history.evaluations] == [1 + 600 * k for k in range(17)]
    assert len(history.losses) == 10000


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_fused_and_layer_paths_record_the_same_losses(backend, optimizer, rng):
    net_f, fused = fit(rng, "fused", optimizer, backend, dtype=np.float64)
    net_l, layers = fit(rng, "layers", optimizer, backend, dtype=np.float64)
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-10)
    np.testing.assert_allclose(net_f.flat_params, net_l.flat_params, rtol=1e-9, atol=1e-12)
    assert [e.train_acc for e in fused.evaluations] == [e.train_acc for e in layers.evaluations]
    assert fused.evaluations[-1].test_acc > 0.9


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_convnet_trains_the_same_on_both_paths(backend, optimizer):
    """SimpleConvNet on 8x8 images of two blobs: the fused engine's convolution and pooling give the
    layer path's losses and weights (float64: the same sums, in another order), and it learns."""
    from fastbp.nets import SimpleConvNet

    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, 300)
    x = rng.standard_normal((300, 1, 8, 8)) * 0.5
    x[t == 1, :, :4] += 1.5  # class 1: a bright top half
    results = {}
    for path in ("fused", "layers"):
        net = SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                            hidden_size=6, output_size=2, weight_init_std=0.3, backend=backend, seed=0)
        config = TrainConfig(iterations=40, batch_size=10, lr=0.1 if optimizer == "sgd" else 0.01, optimizer=optimizer,
                             sampling="shuffle", path=path, eval_samples=100, progress=False)
        results[path] = (net, Trainer(net, config).fit(x[:250], t[:250], x[250:], t[250:]))
    (net_f, fused), (net_l, layers) = results["fused"], results["layers"]
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-10)
    np.testing.assert_allclose(net_f.flat_params, net_l.flat_params, rtol=1e-9, atol=1e-12)
    assert fused.evaluations[-1].test_acc > 0.9


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_dropout_trains_the_same_on_both_paths_from_the_engines_generator(backend, optimizer, monkeypatch):
    """DeepConvNet (dropout after its hidden layer and its scores) on 12x12 images: the layer path's
    Dropout draws np.random.rand as the book's; given the engine's draws for the same seed, step
    and op (fastbp/engine.py), it records the fused engine's losses and ends with its weights."""
    from fastbp import engine
    from fastbp.nets import DeepConvNet

    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, 200)
    x = rng.standard_normal((200, 1, 12, 12)) * 0.5
    x[t == 1, :, :4] += 1.5
    results = {}
    for path in ("fused", "layers"):
        net = DeepConvNet(input_dim=(1, 12, 12), hidden_size=6, output_size=2, dropout_ratio=0.3, backend=backend, seed=0)
        program = engine.seeded(net.program, 7)
        dropouts = np.flatnonzero(program[:, engine.FIELD_CODE] == engine.DROPOUT)
        calls = iter(range(10**6))

        def engine_draws(*shape):
            call = next(calls)
            step, op = call // len(dropouts) + 1, dropouts[call % len(dropouts)]
            return engine.dropout_draws(engine.dropout_keys(program, step - 1, 1)[0, op], np.prod(shape)).reshape(shape)

        monkeypatch.setattr(np.random, "rand", engine_draws)
        config = TrainConfig(iterations=12, batch_size=10, lr=0.05 if optimizer == "momentum" else 0.01,
                             optimizer=optimizer, sampling="shuffle", path=path, seed=7, eval_samples=50, progress=False)
        results[path] = (net, Trainer(net, config).fit(x[:150], t[:150], x[150:], t[150:]))
    (net_f, fused), (net_l, layers) = results["fused"], results["layers"]
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-10)
    np.testing.assert_allclose(net_f.flat_params, net_l.flat_params, rtol=1e-9, atol=1e-12)


def test_evaluations_on_the_first_eval_samples(rng):
    x, t = blobs(np.random.default_rng(1))
    net = MultiLayerNet(12, [10], 3, weight_init_std=0.1, seed=0)
    config = TrainConfig(iterations=30, batch_size=16, lr=0.1, eval_every=10, eval_samples=7, progress=False)
    history = Trainer(net, config).fit(x[:500], t[:500], x[500:], t[500:])
    for e in history.evaluations:  # sevenths: the accuracy of 7 samples
        assert round(e.train_acc * 7, 9) == int(round(e.train_acc * 7)) and round(e.test_acc * 7, 9) == int(round(e.test_acc * 7))
    assert history.evaluations[-1].test_acc == net.accuracy(x[500:507], t[500:507])


def test_same_seed_same_losses_and_the_model_learns(rng):
    _, a = fit(rng)
    _, b = fit(rng)
    assert a.losses == b.losses
    _, c = fit(rng, seed=7)
    assert a.losses != c.losses
    assert np.mean(a.losses[-20:]) < 0.5 * np.mean(a.losses[:5])


def test_shuffle_sampling_visits_every_sample_once_per_epoch():
    sampler = BatchSampler(10, 3, "shuffle", np.random.default_rng(0))
    block = sampler.next_block(6)  # two epochs of 3 batches (the 10th sample is dropped each epoch)
    for epoch in (block[:3], block[3:]):
        assert len(set(epoch.ravel().tolist())) == 9
    with pytest.raises(ValueError, match="exceeds"):
        BatchSampler(2, 3, "shuffle", np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy (reference) reports the overflow provoked here
def test_divergence_stops_with_a_clear_error_and_keeps_good_weights(backend, rng):
    x, t = blobs(rng)
    net = MultiLayerNet(12, [10], 3, weight_init_std=0.1, backend=backend, seed=0)
    trainer = Trainer(net, TrainConfig(iterations=200, batch_size=16, lr=1e30, eval_every=1, progress=False))
    with pytest.raises(TrainingDiverged, match=r"loss became NaN or inf at step \d+.*Lower the learning rate \(now 1e\+30\)"):
        trainer.fit(x, t)
    assert np.isfinite(net.flat_params).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("n", [40, 6000], ids=["small", "checked-by-sum"])
def test_non_finite_training_data_is_refused_before_any_step(backend, bad, n, rng):
    x, t = blobs(rng, n=n)
    x[7, 2] = bad
    net = MultiLayerNet(12, [10], 3, backend=backend, seed=0)
    before = net.flat_params.copy()
    with pytest.raises(ValueError, match=r"the training set has 1 non-finite value.*index \(7, 2\)"):
        Trainer(net, TrainConfig(iterations=5, batch_size=8, progress=False)).fit(x, t)
    np.testing.assert_array_equal(net.flat_params, before)


def test_early_stopping_keeps_the_best_weights(rng):
    x, t = blobs(rng, n=300)
    t[::2] = rng.integers(0, 3, 150)  # half the labels are noise: the network overfits and validation peaks
    net = MultiLayerNet(12, [64], 3, weight_init_std="he", seed=0)
    config = TrainConfig(iterations=3000, batch_size=8, lr=0.3, eval_every=25, val_split=0.3, patience=3, progress=False)
    history = Trainer(net, config).fit(x, t)
    assert history.stopped_early and history.best_step is not None
    assert len(history.evaluations) < 3000 // 25
    best = max(e.val_acc for e in history.evaluations)
    assert [e.val_acc for e in history.evaluations if e.step == history.best_step] == [best]
    val_x, val_t = x[np.random.default_rng(0).permutation(300)[:90]], t[np.random.default_rng(0).permutation(300)[:90]]
    assert net.accuracy(val_x, val_t) == pytest.approx(best)  # the weights are the best ones, not the last


def test_bad_configurations_are_refused():
    for bad, match in (({"iterations": 0}, "iterations"), ({"sampling": "random"}, "sampling"),
                       ({"path": "gpu"}, "path"), ({"val_split": 1.0}, "val_split"), ({"patience": 3}, "val_split > 0"),
                       ({"eval_samples": 0}, "eval_samples must be a positive integer")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad).validate()


def test_history_round_trips_through_json_and_csv(tmp_path, rng):
    _, history = fit(rng, iterations=30, eval_every=10)
    paths = history.save(tmp_path)
    again = History.load(paths["json"])
    assert again.losses == history.losses and again.evaluations == history.evaluations
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,train_acc") and len(rows) == 1 + len(history.evaluations)
    assert len(paths["losses"].read_text().splitlines()) == 31


def test_a_learning_rate_that_overflows_the_dtype_is_refused(rng):
    net = MultiLayerNet(12, [10], 3, seed=0)  # float32: at most 3.4e38
    with pytest.raises(ValueError, match=r"overflow float32 .*learning rate is far too large"):
        Trainer(net, TrainConfig(lr=1e39, progress=False))
    Trainer(MultiLayerNet(12, [10], 3, dtype=np.float64, seed=0), TrainConfig(lr=1e39, progress=False))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy (reference) reports the overflow provoked here
def test_weights_that_overflow_are_never_kept(backend, rng):
    """lr 3e38 is finite in float32, but the first update makes the weights inf while that step's
    loss was finite: the evaluation after it must not keep them."""
    x, t = blobs(rng)
    x *= 100  # gradients of the first layer's weights far above 1: lr * grad overflows
    net = MultiLayerNet(12, [10], 3, weight_init_std=0.1, backend=backend, seed=0)
    start = net.flat_params.copy()
    trainer = Trainer(net, TrainConfig(iterations=20, batch_size=16, lr=3e38, eval_every=1, progress=False))
    with pytest.raises(TrainingDiverged, match=r"weights became NaN or inf at step 1; the network holds the weights of step 0"):
        trainer.fit(x, t)
    np.testing.assert_array_equal(net.flat_params, start)


def test_a_validation_split_that_leaves_nothing_to_train_on_is_refused(rng):
    x, t = blobs(rng, n=10)
    with pytest.raises(ValueError, match=r"val_split 0.99 of 10 training samples leaves no samples to train on"):
        Trainer(MultiLayerNet(12, [4], 3, seed=0), TrainConfig(val_split=0.99, progress=False)).fit(x, t)


def test_with_validation_the_best_weights_are_kept_without_early_stopping(rng):
    x, t = blobs(rng, n=300)
    t[::2] = rng.integers(0, 3, 150)
    net = MultiLayerNet(12, [64], 3, weight_init_std="he", seed=0)
    config = TrainConfig(iterations=1500, batch_size=8, lr=0.3, eval_every=25, val_split=0.3, progress=False)
    history = Trainer(net, config).fit(x, t)
    assert not history.stopped_early and history.best_step != history.evaluations[-1].step
    best = max(e.val_acc for e in history.evaluations)
    assert history.final.val_acc == best and history.final.step == history.best_step
    order = np.random.default_rng(0).permutation(300)[:90]
    assert net.accuracy(x[order], t[order]) == pytest.approx(best)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_resumed_run_continues_the_optimizer_and_the_step_count(backend, optimizer, rng):
    x, t = blobs(rng)
    kwargs = dict(weight_init_std=0.1, dtype=np.float64, backend=backend, seed=0)
    first = Trainer(MultiLayerNet(12, [10], 3, **kwargs),
                    TrainConfig(iterations=30, batch_size=16, optimizer=optimizer, eval_every=10, progress=False))
    first.fit(x, t)
    assert first.step == 30 and np.abs(first.state).sum() > 0
    results = {}
    for path in ("fused", "layers"):  # the layer path's optimizer reads the same restored state
        net = MultiLayerNet(12, [10], 3, **kwargs)
        net.flat_params[...] = first.net.flat_params
        again = Trainer(net, TrainConfig(iterations=15, batch_size=16, optimizer=optimizer, eval_every=10, path=path,
                                         progress=False), start_step=first.step, optimizer_state=first.state)
        results[path] = (again.fit(x, t), net.flat_params.copy())
        assert again.step == 45
    (fused, p_fused), (layers, p_layers) = results["fused"], results["layers"]
    assert [e.step for e in fused.evaluations] == [31, 41, 45] and fused.first_step == 30
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-10)
    np.testing.assert_allclose(p_fused, p_layers, rtol=1e-9, atol=1e-12)
    # from a zero state instead, the same steps give other weights: the state was used
    net = MultiLayerNet(12, [10], 3, **kwargs)
    net.flat_params[...] = first.net.flat_params
    Trainer(net, TrainConfig(iterations=15, batch_size=16, optimizer=optimizer, progress=False), start_step=30).fit(x, t)
    assert not np.allclose(net.flat_params, p_fused)


def test_fused_training_runs_in_blocks_and_stops_cleanly_on_ctrl_c(rng, monkeypatch):
    import fastbp.train as train

    monkeypatch.setattr(train, "BLOCK_SECONDS", 1e-9)  # one step per call
    x, t = blobs(rng)
    net = MultiLayerNet(12, [10], 3, seed=0)
    trainer = Trainer(net, TrainConfig(iterations=50, batch_size=16, eval_every=1000, progress=False))
    real = trainer._step_runner
    calls = []

    def runner(train_set):
        run = real(train_set)

        def counted(batches, done):
            calls.append(len(batches))
            if done == 20:
                raise KeyboardInterrupt
            return run(batches, done)
        return counted

    monkeypatch.setattr(trainer, "_step_runner", runner)
    history = trainer.fit(x, t)
    assert history.interrupted and trainer.step == 20 and len(history.losses) == 20
    assert set(calls) == {1}  # one evaluation stretch of 1000 steps, run a block at a time
    assert np.isfinite(net.flat_params).all()


def test_the_progress_bar_lets_tqdm_decide_about_terminals(monkeypatch):
    import fastbp.train as train

    bar = train._progress_bar(10, True)
    assert bar.disable  # pytest's stderr is no terminal: tqdm decided not to draw
    bar.close()
    quiet = train._progress_bar(10, False)
    quiet.update(3), quiet.set_postfix(loss="1.0"), quiet.close()  # the bar's interface, drawing nothing


def test_a_run_without_progress_imports_neither_tqdm_nor_urllib():
    """What a run does not use, it does not import (a short run's start is felt): no tqdm without
    a progress bar, no urllib.request (http, email, ssl) without a download."""
    code = ("import sys, numpy as np; from fastbp.nets import MultiLayerNet; from fastbp.train import TrainConfig, Trainer; "
            "import fastbp.data, fastbp.cli; "
            "x = np.random.default_rng(0).random((50, 8), np.float32); t = np.arange(50) % 3; "
            "Trainer(MultiLayerNet(8, [4], 3), TrainConfig(iterations=3, batch_size=10, progress=False)).fit(x, t, x, t); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tqdm' or m == 'urllib.request'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
