"""Networks (the seed's API), the whole-network backend ops, and the optimizers."""

import numpy as np
import pytest

import fastbp
from fastbp import backends, engine
from fastbp.nets import MultiLayerNet, TwoLayerNet, init_std
from fastbp.testing import default_rtol


def test_two_layer_net_has_the_seeds_api():
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert [net.params[k].shape for k in net.params] == [(784, 50), (50,), (50, 10), (10,)]
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert isinstance(net.last_layer, fastbp.SoftmaxWithLoss)
    assert net.params["W1"].dtype == np.float64
    assert net.layers["Affine1"].W is net.params["W1"]
    assert np.all(net.params["b1"] == 0)
    assert np.std(net.params["W1"]) == pytest.approx(0.01, rel=0.05)


def test_in_place_updates_reach_the_layers_and_the_flat_buffer(rng):
    net = TwoLayerNet(4, 3, 2, seed=0)
    x = rng.standard_normal((5, 4))
    net.params["W1"] -= 0.5
    np.testing.assert_array_equal(net.layers["Affine1"].W, net.params["W1"])
    assert np.shares_memory(net.flat_params, net.params["W1"])
    before = net.predict(x)
    net.params["b2"] += 1.0
    np.testing.assert_allclose(net.predict(x), before + 1.0)
    net.params["W1"] = np.zeros((4, 3))  # rebinding cuts the link: the trainer refuses it
    with pytest.raises(RuntimeError, match=r"params\['W1'\] was replaced"):
        net.check_params_in_place()


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_backprop_matches_numerical_gradient(backend, activation, rng):
    net = MultiLayerNet(6, [5, 4], 3, activation=activation, weight_init_std=0.5, dtype=np.float64,
                        backend=backend, seed=1)
    x, t = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])
    report = fastbp.compare_gradients(net.gradient(x, t), net.numerical_gradient(x, t))
    assert report.passed(rtol=1e-6), str(report)


def test_gradient_skips_the_input_gradient_of_the_first_layer(backend, rng, monkeypatch):
    """The seed's gradient() threw the first layer's dx away; fastbp's never computes it."""
    ops = backends.get(backend)
    asked = []
    real_affine_backward = ops.affine_backward

    def recording_affine_backward(dout, x, W, need_dx=True):
        asked.append((W.shape, need_dx))
        return real_affine_backward(dout, x, W, need_dx)

    monkeypatch.setattr(ops, "affine_backward", recording_affine_backward)
    net = MultiLayerNet(6, [5, 4], 3, dtype=np.float64, backend=backend, seed=1)
    net.gradient(rng.standard_normal((4, 6)), np.array([0, 2, 1, 2]))
    assert asked == [((4, 3), True), ((5, 4), True), ((6, 5), False)]


def test_predict_labels_converts_other_dtypes_a_chunk_at_a_time(backend, rng, monkeypatch):
    net = TwoLayerNet(12, 9, 4, weight_init_std=0.5, backend=backend, seed=3)  # float64, as the seed
    monkeypatch.setattr(engine, "CONVERT_ROWS", 7)  # 20 rows: two whole chunks and a partial one
    x = rng.standard_normal((20, 12)).astype(np.float32)
    expected = np.argmax(net.predict(x.astype(np.float64)), axis=1)
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    np.testing.assert_array_equal(net.predict_labels(np.asfortranarray(x)), expected)  # not C-contiguous either


def test_weight_init_schemes():
    assert init_std("he", 50, "relu") == pytest.approx(np.sqrt(2 / 50))
    assert init_std("xavier", 50, "sigmoid") == pytest.approx(np.sqrt(1 / 50))
    assert init_std("auto", 50, "sigmoid") == init_std("xavier", 50, "sigmoid")
    assert init_std(0.01, 50, "relu") == 0.01
    with pytest.raises(ValueError, match="'he', 'xavier'"):
        init_std("lecun", 50, "relu")
    with pytest.raises(ValueError, match="positive"):
        init_std(-1.0, 50, "relu")
    net = MultiLayerNet(1000, [500], 10, weight_init_std="he", seed=0)
    assert np.std(net.params["W1"]) == pytest.approx(np.sqrt(2 / 1000), rel=0.02)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="positive integers"):
        MultiLayerNet(784, [0], 10)
    with pytest.raises(ValueError, match="activation must be one of"):
        MultiLayerNet(784, [50], 10, activation="tanh")
    with pytest.raises(TypeError, match="float32 or float64"):
        MultiLayerNet(784, [50], 10, dtype=np.int32)
    net = MultiLayerNet(4, [3], 2)
    with pytest.raises(ValueError, match=r"x of shape \(2, 5\) does not fit a network with 4 inputs"):
        net.accuracy(np.zeros((2, 5), np.float32), np.array([0, 1]))


def test_accuracy_and_predict_labels_agree_with_predict(backend, dtype, rng):
    net = MultiLayerNet(8, [6, 5], 4, dtype=dtype, backend=backend, seed=3, weight_init_std=1.0)
    x = rng.standard_normal((3000, 8)).astype(dtype)  # more rows than one predict chunk
    expected = np.argmax(net.predict(x), axis=1)
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    t = rng.integers(0, 4, 3000)
    assert net.accuracy(x, t) == pytest.approx(np.mean(expected == t))
    assert net.accuracy(x, np.eye(4)[t]) == net.accuracy(x, t)


def test_save_and_load(tmp_path, rng):
    net = MultiLayerNet(5, [4, 3], 2, activation="sigmoid", dtype=np.float64, seed=0)
    net.save(tmp_path / "w.npz")
    copy = MultiLayerNet.load(tmp_path / "w.npz")
    assert copy.activation == "sigmoid" and copy.dtype == np.float64
    x = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(copy.predict(x), net.predict(x))
    with pytest.raises(ValueError, match="saved for a 5-4-3-2 sigmoid network, not a 5-4-2 network"):
        MultiLayerNet(5, [4], 2).load_params(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="saved for a 5-4-3-2 sigmoid network, not a 5-4-3-2 network"):
        MultiLayerNet(5, [4, 3], 2).load_params(tmp_path / "w.npz")


# ---- using a trained network: loading, predicting, refusing bad files and inputs ---------------

def test_two_layer_net_loads_what_it_saved(tmp_path, rng):
    net = TwoLayerNet(6, 4, 3, seed=1)
    net.save(tmp_path / "w.npz")
    again = TwoLayerNet.load(tmp_path / "w.npz")
    assert isinstance(again, TwoLayerNet) and again.dtype == np.float64
    x = rng.standard_normal((2, 6))
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    MultiLayerNet(6, [4, 4], 3).save(tmp_path / "deep.npz")
    with pytest.raises(ValueError, match="is not a TwoLayerNet.*MultiLayerNet.load"):
        TwoLayerNet.load(tmp_path / "deep.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prediction_refuses_non_finite_input(backend, bad):
    net = MultiLayerNet(4, [3], 2, backend=backend, seed=0)
    x = np.full((3, 4), bad, np.float32)  # all-NaN input gave accuracy 1.0
    for call in (lambda: net.accuracy(x, np.array([0, 0, 0])), lambda: net.predict_labels(x), lambda: net.predict_proba(x)):
        with pytest.raises(ValueError, match=r"x has 12 non-finite value"):
            call()


def test_one_sample_is_predicted(backend, rng):
    net = MultiLayerNet(784, [5], 10, backend=backend, seed=0)
    images = rng.random((3, 784), dtype=np.float32)
    labels, probs = net.predict_labels(images), net.predict_proba(images)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probs, axis=1), labels)
    for i in range(3):
        assert net.predict_labels(images[i]) == labels[i]
        assert net.predict_labels(images[i].reshape(1, 28, 28)) == labels[i:i + 1]
        # one row's logits come from BLAS's one-row kernel, the batch's from its product: 784-long
        # float32 sums in two orders (1.5e-6 apart on an AVX-512 OpenBLAS), within the sqrt(n) rule
        np.testing.assert_allclose(net.predict_proba(images[i]), probs[i], rtol=default_rtol(np.float32, 784))
        assert net.accuracy(images[i], labels[i]) == 1.0
        assert net.accuracy(images[i], np.eye(10)[labels[i]]) == 1.0


def test_a_network_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(MemoryError, match=r"a 784-1000000000-10 network \(795,000,000,010 float32 parameters\) needs"):
        MultiLayerNet(784, [10**9], 10)


def crafted(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_checks_every_array_of_the_file_before_building(tmp_path):
    good = dict(sizes=np.array([3, 2, 2]), activation=np.array("relu"), W1=np.ones((3, 2)), b1=np.zeros(2),
                W2=np.ones((2, 2)), b2=np.zeros(2))
    cases = [
        (dict(good, W1=np.float64(1.0)), r"'W1' has shape \(\), expected \(3, 2\)"),  # was broadcast into the net
        (dict(good, W2=np.full((2, 2), np.nan)), r"'W2' has 4 non-finite values"),
        (dict(good, sizes=np.array([20000, 20000, 10])), r"'W1' has shape \(3, 2\), expected \(20000, 20000\)"),
        ({k: v for k, v in good.items() if k != "b2"}, r"'b2' is missing"),
        ({k: v for k, v in good.items() if k != "sizes"}, r"'sizes' is missing"),
        (dict(good, activation=np.array("tanh")), r"'activation' must be one of"),
        (dict(good, W2=np.ones((2, 2), np.float32)), r"'W2' has dtype float32, expected float64"),
        (dict(good, W1=np.ones((3, 2), np.int64)), r"'W1' has dtype int64, expected float32 or float64"),
        (dict(good, sizes=np.array([3, -2, 2])), r"'sizes' must be positive"),
        (dict(good, extra=np.ones(3)), r"'extra' is not a key of a weights file"),
    ]
    for i, (arrays, match) in enumerate(cases):
        path = crafted(tmp_path / f"w{i}.npz", **arrays)
        with pytest.raises(ValueError, match=rf"{path}: {match}"):
            MultiLayerNet.load(path)
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match=rf"{not_npz}: not a weights file written by fastbp"):
        MultiLayerNet.load(not_npz)
    MultiLayerNet.load(crafted(tmp_path / "good.npz", **good))


def test_a_huge_declared_array_is_refused_from_its_header(tmp_path):
    """A 1.5 KB file whose W1 header declares 20000 x 20000: refused before any array is read."""
    path = tmp_path / "w.npz"
    MultiLayerNet(3, [2], 2).save(path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.ones((3, 2), np.float32))
    header["shape"] = (20000, 20000)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["W1.npy"] = buf.getvalue() + b"\0" * 24
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    assert path.stat().st_size < 4096
    with pytest.raises(ValueError, match=r"'W1' has shape \(20000, 20000\), expected \(3, 2\)"):
        MultiLayerNet.load(path)


@pytest.mark.parametrize("use_dropout, use_batchnorm", [(False, False), (True, False), (False, True), (True, True)])
def test_the_books_weight_decay_dropout_and_batchnorm_options_give_the_books_loss_and_gradients(
        backend, use_dropout, use_batchnorm, rng):
    """MultiLayerNet(weight_decay_lambda, use_dropout, dropout_ration, use_batchnorm) against the
    book's MultiLayerNetExtend from the same np.random seeds: the same weights, masks, loss,
    gradients and, after training steps, running statistics and predictions."""
    from book import book_network

    Extend = book_network("common.multi_layer_net_extend", fastbp_layers=False).MultiLayerNetExtend
    options = dict(weight_decay_lambda=0.3, use_dropout=use_dropout, dropout_ration=0.3, use_batchnorm=use_batchnorm)
    np.random.seed(4)
    book = Extend(12, [9, 7], 4, weight_init_std="relu", **options)
    np.random.seed(4)
    ours = MultiLayerNet(12, [9, 7], 4, weight_init_std="relu", dtype=np.float64, backend=backend, **options)
    x, t = rng.standard_normal((6, 12)), rng.integers(0, 4, 6)
    np.random.seed(5)
    expected_loss = book.loss(x, t, train_flg=True)
    np.random.seed(5)
    loss = ours.loss(x, t)
    # the decay terms agree to rounding (the data terms differ by the book's 1e-7 inside its log)
    assert loss - ours.last_layer.loss == pytest.approx(expected_loss - book.last_layer.loss, rel=1e-13)
    assert ours.decay_loss() == pytest.approx(expected_loss - book.last_layer.loss, rel=1e-13)
    np.random.seed(6)
    expected = book.gradient(x, t)
    np.random.seed(6)
    got = ours.gradient(x, t)
    assert set(got) == set(expected)
    # float64, batch normalization's sums in another order: rounding of the terms' scale (about 1e-16
    # of the largest gradient, summed over a few terms); a bias before a batchnorm has a gradient of
    # exactly 0 analytically, so its computed one is all rounding of that scale
    scale = max(np.abs(g).max() for g in expected.values())
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-14 * scale, err_msg=name)
    for layer, book_layer in zip(ours.norm_layers, [v for k, v in book.layers.items() if k.startswith("BatchNorm")]):
        np.testing.assert_allclose(layer.running_mean, book_layer.running_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(layer.running_var, book_layer.running_var, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours.predict(x), book.predict(x, train_flg=False), rtol=1e-10, atol=1e-12)


def test_weight_decay_trains_the_same_on_both_paths(backend):
    from fastbp.train import TrainConfig, Trainer

    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((120, 10)), rng.integers(0, 3, 120)
    x[rng.random(x.shape) < 0.6] = 0  # mostly zeros: the native engine's compact rows
    results = {}
    for path in ("fused", "layers"):
        net = MultiLayerNet(10, [8], 3, dtype=np.float64, backend=backend, seed=1, weight_decay_lambda=0.05)
        config = TrainConfig(iterations=20, batch_size=10, lr=0.05, optimizer="momentum", path=path, progress=False)
        results[path] = (net, Trainer(net, config).fit(x, t))
    (net_f, fused), (net_l, layers) = results["fused"], results["layers"]
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-12)  # float64: rounding of 20 steps
    np.testing.assert_allclose(net_f.flat_params, net_l.flat_params, rtol=1e-11, atol=1e-13)
    undecayed = MultiLayerNet(10, [8], 3, dtype=np.float64, backend=backend, seed=1)
    Trainer(undecayed, TrainConfig(iterations=20, batch_size=10, lr=0.05, optimizer="momentum", progress=False)).fit(x, t)
    assert np.sum(net_f.params["W1"] ** 2) < np.sum(undecayed.params["W1"] ** 2)  # the decay shrinks the weights


def test_bad_book_options_are_refused():
    with pytest.raises(ValueError, match="weight_decay_lambda must be a non-negative"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=-1)
    with pytest.raises(ValueError, match="use_dropout must be True or False"):
        MultiLayerNet(4, [3], 2, use_dropout="yes")
    with pytest.raises(ValueError, match="use_batchnorm must be True or False"):
        MultiLayerNet(4, [3], 2, use_batchnorm=1)
    with pytest.raises(ValueError, match="dropout ratio must lie in"):
        MultiLayerNet(4, [3], 2, use_dropout=True, dropout_ration=1.5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_a_batch_normalized_network_trains_the_same_on_both_paths(tmp_path, backend, optimizer, rng):
    """The fused engine's batch normalization: the layer path's losses, weights and running
    statistics (float64: the same sums in another order; plain rules, whose steps do not divide
    by the gradients' size, see tests/test_engine_windows.py), on dense and mostly-zero rows."""
    from fastbp.sequential import SequentialNet
    from fastbp.train import TrainConfig, Trainer

    x, t = rng.standard_normal((200, 8)), rng.integers(0, 3, 200)
    x[t == 1, :3] += 2
    x[rng.random(x.shape) < 0.6] = 0  # mostly zeros: the native engine's compact rows
    results = {}
    for path in ("fused", "layers"):
        net = MultiLayerNet(8, [16, 16], 3, use_batchnorm=True, dtype=np.float64,
                            backend=backend, seed=0)
        assert net.engine_runs_it and "batch-normalized" in net.describe()
        config = TrainConfig(iterations=60, batch_size=20, lr=0.1, optimizer=optimizer, path=path, progress=False)
        results[path] = net, Trainer(net, config).fit(x, t)
    (net, fused), (net_l, layers) = results["fused"], results["layers"]
    np.testing.assert_allclose(fused.losses, layers.losses, rtol=1e-10)
    assert fused.losses[-1] < fused.losses[0]
    np.testing.assert_allclose(net.flat_params, net_l.flat_params, rtol=1e-9, atol=1e-12)
    assert net.norm_layers[0].running_var.min() > 0  # the engine updated the running statistics, as the layers did
    np.testing.assert_allclose(net.running_stats(), net_l.running_stats(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(net.predict_labels(x), np.argmax(net.predict(x), axis=1))
    net.save(tmp_path / "bn.npz")
    again = SequentialNet.load(tmp_path / "bn.npz", backend=backend)  # the running statistics come back with the weights
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    with pytest.raises(ValueError, match="needs stats"):  # every engine asks for them by name
        backends.get(backend).predict_labels(x, net.flat_params, net.program)


def test_a_weights_files_running_statistics_are_checked(tmp_path):
    from fastbp.sequential import SequentialNet

    net = MultiLayerNet(4, [3], 2, use_batchnorm=True, seed=0)
    buffers = net.buffers()
    for key, value, message in (("running_var1", -np.ones(3), "negative variances"),
                                ("running_mean1", np.full(3, np.nan), "non-finite"),
                                ("running_mean1", np.zeros(4), "has shape"),
                                ("running_var1", np.ones(3, np.float32), "expected float64")):
        from fastbp import checkpoint

        checkpoint.save(tmp_path / "w.npz", net.architecture, net.params, buffers={**buffers, key: value})
        with pytest.raises(ValueError, match=message):
            SequentialNet.load(tmp_path / "w.npz")


def test_multilayernet_loads_what_it_saved_with_the_books_options(tmp_path, rng):
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, dropout_ration=0.25, seed=2)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    net.gradient(x, rng.integers(0, 3, 20))  # running statistics move off their start
    net.save(tmp_path / "w.npz")
    again = MultiLayerNet.load(tmp_path / "w.npz")
    assert again.use_batchnorm and again.use_dropout and again.architecture == net.architecture
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    from fastbp.nets import SimpleConvNet

    SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 2, "filter_size": 3}, hidden_size=4, seed=0).save(
        tmp_path / "conv.npz")
    with pytest.raises(ValueError, match="not an MLP"):
        MultiLayerNet.load(tmp_path / "conv.npz")
