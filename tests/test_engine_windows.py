"""The engine's window ops (convolution, max pooling) in programs built from an architecture
(fastbp/architecture.py): every backend against the reference, the reference against the layer
path (fastbp.layers, the book's classes), and the architecture's own checks."""

import numpy as np
import pytest

import fastbp
from fastbp import architecture, backends, engine
from fastbp.layers import Affine, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss

from test_engine import assert_same_training, run_both

# padding and a stride of 2, two convolutions, a pooling of overlapping oblong windows; the book's ch07 net, small
ARCHS = {
    "conv-pool-conv": {"input": [2, 10, 10], "layers": [
        {"op": "conv", "filters": 3, "size": [3, 3], "stride": 1, "pad": 1}, {"op": "relu"},
        {"op": "pool", "size": [2, 2], "stride": 2},
        {"op": "conv", "filters": 4, "size": [2, 3], "stride": 1, "pad": 0}, {"op": "sigmoid"},
        {"op": "affine", "out": 7}, {"op": "relu"}, {"op": "affine", "out": 5}]},
    "strided-padded": {"input": [1, 9, 9], "layers": [
        {"op": "conv", "filters": 5, "size": 3, "stride": 2, "pad": 2}, {"op": "relu"},
        {"op": "pool", "size": [3, 2], "stride": 1, "pad": 1}, {"op": "affine", "out": 4}]},
    "simple-convnet": {"input": [1, 12, 12], "layers": [
        {"op": "conv", "filters": 6, "size": 5}, {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
        {"op": "affine", "out": 10}, {"op": "relu"}, {"op": "affine", "out": 3}]},
    # DeepConvNet's tail: dropout after a hidden layer and after the scores
    "dropout": {"input": [1, 8, 8], "layers": [
        {"op": "conv", "filters": 4, "size": 3, "pad": 1}, {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
        {"op": "affine", "out": 12}, {"op": "relu"}, {"op": "dropout", "ratio": 0.5},
        {"op": "affine", "out": 4}, {"op": "dropout", "ratio": 0.3}]},
    # DeepConvNet's block: a conv - relu not followed by pooling (the native engine's conv_forward
    # with its ReLU), then one that is
    "conv-relu-conv": {"input": [2, 6, 6], "layers": [
        {"op": "conv", "filters": 3, "size": 3, "pad": 1}, {"op": "relu"},
        {"op": "conv", "filters": 4, "size": 3, "pad": 1}, {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
        {"op": "affine", "out": 5}]},
    # an MLP with dropout: the native engine's compact rows (half the inputs are zeros)
    "mlp-dropout": {"input": [30], "layers": [
        {"op": "affine", "out": 20}, {"op": "relu"}, {"op": "dropout", "ratio": 0.2}, {"op": "affine", "out": 4}]},
}


# An affine op too large for the engine's own row loops (k m > FASTBP_OWN_PRODUCT): its products
# split between the native engine's threads (affine_forward_team, affine_backward_team). Checked
# with Adam on any thread count below; not with every optimizer as ARCHS are: at 43883 parameters
# AdaGrad's and RMSprop's division by the root of a near-zero history turns the last bits of a
# gradient summed in another order into more than 1e-12 (numba, which has no team, too).
WIDE = {"input": [1, 12, 12], "layers": [
    {"op": "conv", "filters": 8, "size": 3, "pad": 1}, {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
    {"op": "affine", "out": 150}, {"op": "relu"}, {"op": "affine", "out": 3}]}


def n_params(arch):
    return sum(int(np.prod(s)) for s in architecture.param_shapes(arch).values())


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_window_programs_train_as_the_reference_does(backend, dtype, optimizer, name, rng):
    arch = ARCHS[name]
    x = rng.standard_normal((40, *arch["input"])).astype(dtype)
    x[rng.random(x.shape) < 0.5] = 0  # zeros, as in MNIST, and ties for the pooling's first maximum
    batches = rng.integers(0, 40, (6, 5))
    expected, actual = run_both(backend, x, architecture.program(arch), n_params(arch), batches, optimizer)
    assert_same_training(expected, actual, 6, dtype)
    flat = run_both(backend, x.reshape(40, -1), architecture.program(arch), n_params(arch), batches, optimizer)[1]
    assert_same_training(actual, flat, 6, dtype)  # images or their flattened rows: the same data


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["dropout", "mlp-dropout"])
def test_weight_decay_trains_as_the_reference_does(backend, dtype, optimizer, name, rng):
    """The engines' weight decay (loss + lambda/2 sum W^2, dW + lambda W) on convolution and affine
    weights, and on the native engine's compact first layer (mlp-dropout's mostly-zero rows)."""
    arch = ARCHS[name]
    x = rng.standard_normal((40, *arch["input"])).astype(dtype)
    x[rng.random(x.shape) < 0.6] = 0
    batches = rng.integers(0, 40, (6, 5))
    program = engine.seeded(architecture.program(arch), 3)
    expected, actual = run_both(backend, x, program, n_params(arch), batches, optimizer, decay=0.3)
    assert_same_training(expected, actual, 6, dtype)
    undecayed = run_both(backend, x, program, n_params(arch), batches, optimizer)[1]
    assert actual[2][0] > undecayed[2][0]  # the first loss carries the decay term
    assert np.sum(actual[1] ** 2) < np.sum(undecayed[1] ** 2)  # and the weights shrink


@pytest.mark.parametrize("name", ["conv-pool-conv", "wide-affine"])
@pytest.mark.parametrize("threads", [1, 3])
def test_native_window_programs_on_any_thread_count(threads, name, rng):
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    before = _native.openmp()
    if before == 0:
        pytest.skip("the native backend is built without OpenMP")
    _native.set_num_threads(threads)
    try:
        arch = WIDE if name == "wide-affine" else ARCHS[name]
        x = rng.standard_normal((300, *arch["input"]))
        expected, actual = run_both("native", x, architecture.program(arch), n_params(arch), rng.integers(0, 300, (3, 64)),
                                    "adam")
        assert_same_training(expected, actual, 3, np.float64)
    finally:
        _native.set_num_threads(before)


def book_layers(arch, params):
    """The book's layer objects for `arch` over the views of `params` (reference backend)."""
    layers, at = [], 0
    for layer in architecture.shapes(arch):
        sizes = [int(np.prod(s)) for s in layer["params"].values()]
        W, b = (params[at:at + sizes[0]].reshape(list(layer["params"].values())[0]),
                params[at + sizes[0]:at + sum(sizes)]) if sizes else (None, None)
        at += sum(sizes)
        op = layer["op"]
        if op == "affine":
            layers.append(Affine(W, b, backend="reference"))
        elif op == "conv":
            layers.append(Convolution(W, b, layer["stride"], layer["pad"], backend="reference"))
        elif op == "pool":
            layers.append(Pooling(*layer["size"], layer["stride"], layer["pad"], backend="reference"))
        elif op == "dropout":
            layers.append(Dropout(layer.get("ratio", 0.5), backend="reference"))
        else:
            layers.append({"relu": Relu, "sigmoid": Sigmoid}[op](backend="reference"))
    return layers


@pytest.mark.parametrize("name", list(ARCHS))
def test_the_reference_engine_computes_the_layer_paths_loss_and_gradients(name, rng, monkeypatch):
    """One SGD step: the loss and the gradients the engine leaves in `grads` are the book's layers'
    (their Dropout drawing, as the book's, from np.random.rand: here the engine's draws)."""
    arch = ARCHS[name]
    x = rng.standard_normal((12, *arch["input"]))
    labels = rng.integers(0, architecture.classes(arch), 12)
    params = rng.standard_normal(n_params(arch)) * 0.3
    layers, last = book_layers(arch, params.copy()), SoftmaxWithLoss(backend="reference")
    program = engine.seeded(architecture.program(arch), 5)
    keys = engine.dropout_keys(program, 0, 1)[0]
    h = x
    for i, layer in enumerate(layers):
        monkeypatch.setattr(np.random, "rand", lambda *shape: engine.dropout_draws(keys[i], np.prod(shape)).reshape(shape))
        h = layer.forward(h)
    loss = last.forward(h, labels)
    dout = last.backward(1)
    for layer in reversed(layers):
        dout = layer.backward(dout)
    expected = np.concatenate([g.reshape(-1) for layer in layers if hasattr(layer, "dW") for g in (layer.dW, layer.db)])

    ops = backends.get("reference")
    grads, losses = np.zeros_like(params), np.zeros(1)
    ops.train_steps(x, labels, np.arange(12)[None], params, grads, program, engine.SGD,
                    engine.hyper_vector(np.float64, 0.1), np.zeros((2, params.size)), 0, losses)
    # the same float64 operations in the same order
    np.testing.assert_allclose(losses[0], loss, rtol=1e-14)
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())


def test_an_architectures_program_and_parameters_agree():
    arch = ARCHS["conv-pool-conv"]
    shapes = architecture.shapes(arch)
    assert [s["out"] for s in shapes] == [(3, 10, 10), (3, 10, 10), (3, 5, 5), (4, 4, 3), (4, 4, 3), (7,), (7,), (5,)]
    assert architecture.param_shapes(arch) == {"W1": (3, 2, 3, 3), "b1": (3,), "W2": (4, 3, 2, 3), "b2": (4,),
                                               "W3": (48, 7), "b3": (7,), "W4": (7, 5), "b4": (5,)}
    program = architecture.program(arch)
    conv2 = program[3]
    assert conv2[engine.FIELD_CODE] == engine.CONV and conv2[engine.FIELD_PARAM_AT] == 3 * 2 * 9 + 3
    assert conv2[engine.FIELD_SHAPE:engine.FIELD_SHAPE + 10].tolist() == [3, 5, 5, 4, 2, 3, 1, 0, 4, 3]
    assert program[-1, engine.FIELD_CODE] == engine.SOFTMAX_LOSS and program[-1, engine.FIELD_IN] == 5
    mlp = architecture.program(architecture.mlp([784, 50, 10], "relu"))
    np.testing.assert_array_equal(mlp, engine.mlp_program([784, 50, 10], "relu"))


@pytest.mark.parametrize("arch, message", [
    ({"input": [1, 9, 9], "layers": [{"op": "pool", "size": 2, "stride": 2}, {"op": "affine", "out": 2}]},
     "output height .* is not whole"),
    ({"input": [4], "layers": [{"op": "conv", "filters": 2, "size": 1}]}, r"needs images \(C, H, W\)"),
    ({"input": [1, 4, 4], "layers": [{"op": "conv", "filters": 2, "size": 3}]}, "must give class scores"),
    ({"input": [4], "layers": [{"op": "softmax"}]}, "layer 0 has op 'softmax'"),
    ({"input": [4], "layers": [{"op": "affine", "out": 0}]}, "affine out must be a positive integer"),
    ({"input": [4], "layers": [{"op": "dropout", "ratio": 1.0}, {"op": "affine", "out": 2}]}, r"ratio must lie in \[0, 1\)"),
    ({"input": [1, 4, 4], "layers": [{"op": "conv", "filters": 2, "size": 3, "pad": -1}]}, "pad must be a non-negative"),
    ({"layers": []}, "non-empty list of 'layers'"),
])
def test_an_architecture_that_does_not_fit_is_refused_by_name(arch, message):
    with pytest.raises(ValueError, match=message):
        architecture.shapes(arch)


def test_the_native_engine_refuses_a_malformed_window_op():
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    arch = ARCHS["conv-pool-conv"]
    good, params = architecture.program(arch), np.zeros(n_params(arch))

    def predict(program):
        _native.predict_labels(np.zeros((2, 200)), 2, params, program, 16, np.zeros(2, np.int64))

    predict(good)
    shape = engine.FIELD_SHAPE
    for op, field, value, match in (
            (0, shape + 8, 9, "windows do not end at the edges"),  # OH of a 3x3 pad-1 conv over 10 rows is 10
            (2, shape + 6, 3, "windows do not end at the edges"),  # stride 3 over 10 - 2 rows
            (2, shape + 3, 4, "changes channels"),
            (0, shape + 7, -1, "size out of range"),
            (0, shape + 0, 1, "not the product of its shapes"),  # in = C H W no more
            (3, engine.FIELD_PARAM_AT, params.size - 10, "parameters outside")):
        bad = good.copy()
        bad[op, field] = value
        with pytest.raises(ValueError, match=match):
            predict(bad)


def test_the_engines_generator_is_splitmix64():
    # SplitMix64 from state 0: its first output is 0xE220A8397B1DCDAF (Vigna's reference code)
    assert engine.mix64(np.array([engine.GOLDEN]))[0] == 0xE220A8397B1DCDAF
    program = engine.seeded(architecture.program(ARCHS["dropout"]), 9)
    keys = engine.dropout_keys(program, 0, 2)
    assert len(set(keys.reshape(-1).tolist())) == keys.size  # a key per step and op
    np.testing.assert_array_equal(keys[1], engine.dropout_keys(program, 1, 1)[0])  # step 2 in any block
    assert not np.array_equal(engine.dropout_keys(engine.seeded(program, 10), 0, 1), keys[:1])
    n = 200_000
    draws = engine.dropout_draws(keys[0, 5], n)
    assert 0 <= draws.min() and draws.max() < 1
    # the mean of n uniform draws has standard deviation 1 / sqrt(12 n): 5 of them
    assert abs(draws.mean() - 0.5) < 5 / np.sqrt(12 * n)
    assert abs(np.mean(draws > 0.3) - 0.7) < 5 * np.sqrt(0.21 / n)  # the kept share, binomial


@pytest.mark.parametrize("name", ["reference", "numba", "native"])
def test_every_engine_predicts_with_dropout_scaled_as_the_book(name, rng):
    if name not in fastbp.available_backends():
        pytest.skip(f"the {name} backend is not available here")
    arch = {"input": [6], "layers": [{"op": "affine", "out": 4}, {"op": "dropout", "ratio": 0.4},
                                     {"op": "affine", "out": 3}, {"op": "dropout", "ratio": 0.9}]}
    params, x = rng.standard_normal(n_params(arch)), rng.standard_normal((50, 6))
    layers = book_layers(arch, params)
    h = x
    for layer in layers:
        h = layer.forward(h, train_flg=False) if isinstance(layer, Dropout) else layer.forward(h)
    labels = backends.get(name).predict_labels(x, params, architecture.program(arch))
    np.testing.assert_array_equal(labels, np.argmax(h, axis=1))


def test_the_native_engine_refuses_a_dropout_ratio_outside_0_1():
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    arch = {"input": [6], "layers": [{"op": "affine", "out": 4}, {"op": "dropout"}, {"op": "affine", "out": 2}]}
    for ratio in (-1, engine.RATIO_SCALE):
        program = architecture.program(arch)
        program[1, engine.FIELD_RATIO] = ratio
        with pytest.raises(ValueError, match="dropout ratio outside"):
            _native.predict_labels(np.zeros((3, 6)), 3, np.zeros(n_params(arch)), program, 16, np.zeros(3, np.int64))
