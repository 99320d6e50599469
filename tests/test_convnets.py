"""The book's convnets (SimpleConvNet, DeepConvNet) as fastbp networks: the book's weights from
the same seed, its predictions and gradients, its .pkl files; the engine's labels against the
layers'; weights files."""

import pickle

import numpy as np
import pytest

import fastbp
from fastbp.nets import DeepConvNet, MultiLayerNet, SimpleConvNet
from fastbp.sequential import SequentialNet

from book import BOOK, book_network, requires_book

SMALL = dict(input_dim=(1, 10, 10), conv_param={"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
             hidden_size=10, output_size=10, weight_init_std=0.01)


def test_simple_convnet_has_the_books_structure():
    net = SimpleConvNet()
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    assert net.params["W1"].dtype == np.float64 and net.layers["Conv1"].W is net.params["W1"]
    assert np.shares_memory(net.flat_params, net.layers["Affine2"].W)
    pool = net.layers["Pool1"]
    assert (pool.pool_h, pool.pool_w, pool.stride) == (2, 2, 2)


@requires_book
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_simple_convnet_is_the_books_from_the_same_seed(backend, rng):
    """The same draws give the same weights; predictions and gradients agree to float64 rounding
    (the same sums in another order: 1e-9 of values near 1e-2 is hundreds of ulps of room)."""
    Book = book_network("simple_convnet", fastbp_layers=False).SimpleConvNet
    np.random.seed(5)
    book = Book(**SMALL)
    np.random.seed(5)
    ours = SimpleConvNet(**SMALL, backend=backend)
    for key, value in book.params.items():
        np.testing.assert_array_equal(ours.params[key], value)
    x, t = rng.random((6, 1, 10, 10)), np.array([1, 0, 2, 1, 9, 3])
    np.testing.assert_allclose(ours.predict(x), book.predict(x), rtol=1e-9, atol=1e-15)
    grads, expected = ours.gradient(x, t), book.gradient(x, t)
    for key in expected:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-9, atol=1e-15, err_msg=key)
    assert ours.accuracy(x, t, batch_size=4) == book.accuracy(x, t, batch_size=4)


@requires_book
def test_deep_convnet_is_the_books_from_the_same_seed(rng):
    """Weights, dropout masks (the same draws of np.random) and gradients as the book's DeepConvNet."""
    Book = book_network("deep_convnet", fastbp_layers=False).DeepConvNet
    np.random.seed(7)
    book = Book()
    np.random.seed(7)
    ours = DeepConvNet()
    assert isinstance(ours.layers, list) and len(ours.layers) == len(book.layers) == 20
    for key, value in book.params.items():
        np.testing.assert_array_equal(ours.params[key], value)
    x, t = rng.random((3, 1, 28, 28)), np.array([4, 0, 9])
    np.testing.assert_allclose(ours.predict(x), book.predict(x), rtol=1e-9, atol=1e-15)
    np.random.seed(8)
    expected = book.gradient(x, t)
    np.random.seed(8)
    grads = ours.gradient(x, t)
    for key in expected:
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-9, atol=1e-15, err_msg=key)


@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_convnet_gradients_match_finite_differences(backend, rng):
    net = SimpleConvNet(**dict(SMALL, weight_init_std=0.3), backend=backend, seed=2)
    x, t = rng.standard_normal((3, 1, 10, 10)), np.array([1, 7, 2])
    report = fastbp.compare_gradients(net.gradient(x, t), net.numerical_gradient(x, t))
    # central differences of a float64 loss near 2.3 with h = 1e-4: about 1e-11 of rounding, and a
    # ReLU or pooling kink within h of a sample is the rare larger error; the seed avoids one
    assert report.passed(rtol=1e-6), str(report)


@pytest.mark.parametrize("backend", fastbp.available_backends())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_engines_labels_are_the_layers(backend, dtype, rng):
    net = SimpleConvNet(**dict(SMALL, weight_init_std=0.3), backend=backend, dtype=dtype, seed=3)
    x = rng.standard_normal((700, 1, 10, 10))
    expected = np.argmax(net.predict(x.astype(dtype)), axis=1)
    labels = net.predict_labels(x)
    assert np.mean(labels != expected) <= (0 if dtype == np.float64 else 0.01)  # float32: a near tie may flip
    np.testing.assert_array_equal(net.predict_labels(x.reshape(700, -1)), labels)  # flattened images
    assert net.predict_labels(x[0]) == labels[0]  # one image
    prepared = net.prepare(x)
    np.testing.assert_array_equal(net.predict_labels(prepared), labels)
    t = rng.integers(0, 10, 700)
    assert net.accuracy(prepared, t) == net.accuracy(x, t) == np.mean(labels == t)


def test_a_network_with_dropout_predicts_on_the_engine_as_its_layers_do(rng):
    net = DeepConvNet(hidden_size=8, seed=0)
    assert net.engine_runs_it
    x = rng.random((5, 1, 28, 28))
    np.testing.assert_array_equal(net.predict_labels(x), np.argmax(net.predict(x, train_flg=False), axis=1))


@pytest.mark.parametrize("backend", ["reference", "numba", "native"])
def test_the_deep_convnets_labels_on_every_engine_are_its_layers(backend, rng):
    """DeepConvNet's conv - relu - conv - relu - pool blocks (each convolution widening its input
    up to 16-fold) on the engines' prediction buffers: labels that differ from image to image, so
    that a wrong pass shows."""
    if backend not in fastbp.available_backends():
        pytest.skip(f"the {backend} backend is not available here")
    net = DeepConvNet(hidden_size=20, seed=1, backend=backend)
    last = f"W{len(net.param_layers)}"
    net.params[last] *= 30  # scores far apart: dropout's 1 - ratio scaling and rounding cannot tie them
    x = rng.standard_normal((60, 1, 28, 28))  # zero-mean images: their directions differ (the biases start at 0)
    expected = np.argmax(net.predict(x, train_flg=False), axis=1)
    assert len(set(expected.tolist())) >= 2
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    np.testing.assert_array_equal(net.predict_labels(x), np.argmax(net.predict(x, train_flg=False), axis=1))


def test_convnets_save_and_load_their_weights(tmp_path, rng):
    net = SimpleConvNet(**SMALL, seed=4)
    x = rng.random((4, 1, 10, 10))
    net.save(tmp_path / "w.npz")
    copy = SequentialNet.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(copy.predict(x), net.predict(x))
    assert list(copy.layers) == list(net.layers)
    again = SimpleConvNet(**SMALL, seed=9)
    again.load_params(tmp_path / "w.npz")
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    net.save_params(tmp_path / "params.pkl")  # the book's format: a pickled dict of arrays
    with open(tmp_path / "params.pkl", "rb") as f:
        assert sorted(pickle.load(f)) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    again = SimpleConvNet(**SMALL, seed=9)
    again.load_params(tmp_path / "params.pkl")
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    with pytest.raises(ValueError, match="saved for a 1x10x10-conv4-pool-10-10 network, not a 1x28x28-conv30"):
        SimpleConvNet().load_params(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"holds a 1x10x10-conv4-pool-10-10 network, not an MLP"):
        MultiLayerNet.load(tmp_path / "w.npz")


@requires_book
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_float32_images_into_a_float64_convnet_are_labelled_as_its_layers_do(backend, rng):
    """(native: the engine reads the float32 images as they are, converting a chunk at a time in C)"""
    net = SimpleConvNet(**dict(SMALL, weight_init_std=0.3), backend=backend, dtype=np.float64, seed=3)
    x = rng.standard_normal((700, 1, 10, 10)).astype(np.float32)
    expected = np.argmax(net.predict(x.astype(np.float64)), axis=1)
    np.testing.assert_array_equal(net.predict_labels(x), expected)
    np.testing.assert_array_equal(net.predict_labels(x.reshape(700, -1)), expected)


def test_the_books_trained_params_give_the_books_predictions(rng):
    Book = book_network("simple_convnet", fastbp_layers=False).SimpleConvNet
    book, ours = Book(), SimpleConvNet()
    book.load_params(str(BOOK / "ch07" / "params.pkl"))
    ours.load_params(BOOK / "ch07" / "params.pkl")
    x = rng.random((50, 1, 28, 28))
    np.testing.assert_allclose(ours.predict(x), book.predict(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.predict_labels(x), np.argmax(book.predict(x), axis=1))


class Boom:
    def __reduce__(self):
        return (print, ("ran code from a params file",))


def test_a_params_file_is_read_without_running_its_code(tmp_path, capsys):
    net = SimpleConvNet(**SMALL)
    bad = {"W1": Boom()}
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        net.load_params(tmp_path / "evil.pkl")
    assert "ran code" not in capsys.readouterr().out
    cases = [({k: v.copy() for k, v in net.params.items() if k != "b3"}, "'b3' is missing"),
             (dict(net.params, W2=np.ones((3, 3))), r"'W2' is float64 of shape \(3, 3\), expected a float array of shape \(64, 10\)"),
             (dict(net.params, W3=np.full((10, 10), np.nan)), "'W3' has 100 non-finite values"),
             (dict(net.params, extra=np.ones(2)), "'extra' is not a parameter of this network"),
             ([1, 2], "holds a list, expected a dict of parameters")]
    for i, (content, match) in enumerate(cases):
        with open(tmp_path / f"p{i}.pkl", "wb") as f:
            pickle.dump(content, f)
        with pytest.raises(ValueError, match=match):
            net.load_params(tmp_path / f"p{i}.pkl")
    (tmp_path / "text.pkl").write_text("hello")
    with pytest.raises(ValueError, match="not a pickled dict of parameters"):
        net.load_params(tmp_path / "text.pkl")


def test_bad_convnet_arguments_are_named():
    with pytest.raises(ValueError, match=r"input_dim must be \(channels, height, width\)"):
        SimpleConvNet(input_dim=(28, 28))
    with pytest.raises(ValueError, match="conv_param: unknown key 'filters'"):
        SimpleConvNet(conv_param={"filters": 3})
    with pytest.raises(ValueError, match="Pooling: the output height"):
        SimpleConvNet(input_dim=(1, 27, 27))  # 23 x 23 convolved: 2 x 2 pooling does not tile it
    with pytest.raises(ValueError, match=r"x of shape \(2, 1, 28, 28\) does not fit a network with 100 inputs \(images"):
        SimpleConvNet(**SMALL).predict_labels(np.zeros((2, 1, 28, 28)))
