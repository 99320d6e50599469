"""The engine's window ops (convolution, max pooling) in programs built from an architecture
(fastbp/architecture.py): every backend against the reference, the reference against the layer
path (fastbp.layers, the book's classes), and the architecture's own checks."""

import numpy as np
import pytest

import fastbp
from fastbp import architecture, backends, engine
from fastbp.layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss

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
    # outputs 24 wide: the native backward reads each padded input in place, its gradients on the
    # windows' grid (copied there after a ReLU, unpooled there before a pooling; the second's dx
    # a flipped convolution over that grid)
    "grid-rows": {"input": [2, 6, 24], "layers": [
        {"op": "conv", "filters": 3, "size": 3, "pad": 1}, {"op": "relu"},
        {"op": "conv", "filters": 4, "size": 3, "pad": 1}, {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
        {"op": "affine", "out": 5}]},
    # an MLP with dropout: the native engine's compact rows (half the inputs are zeros)
    "mlp-dropout": {"input": [30], "layers": [
        {"op": "affine", "out": 20}, {"op": "relu"}, {"op": "dropout", "ratio": 0.2}, {"op": "affine", "out": 4}]},
    # the book's MultiLayerNetExtend: batch normalization before each activation (compact rows on native)
    "mlp-batchnorm": {"input": [30], "layers": [
        {"op": "affine", "out": 20}, {"op": "batchnorm"}, {"op": "relu"}, {"op": "dropout", "ratio": 0.2},
        {"op": "affine", "out": 9}, {"op": "batchnorm", "momentum": 0.7}, {"op": "sigmoid"}, {"op": "affine", "out": 4}]},
    # batch normalization of images (each (c, h, w) one feature, as the book's), and as the first op
    "conv-batchnorm": {"input": [2, 6, 6], "layers": [
        {"op": "batchnorm", "momentum": 0.5}, {"op": "conv", "filters": 3, "size": 3, "pad": 1}, {"op": "batchnorm"},
        {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2}, {"op": "affine", "out": 5}]},
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
    # Batch normalization's backward sums to zero over the batch, so the gradients of the weights
    # before it are sums that cancel, and a bias before it has a gradient of exactly 0: computed,
    # such a gradient g is rounding alone, |g| ~ dtype eps times its terms (of order 1 here). An
    # adaptive rule steps lr g / (sqrt(v) + eps_rule), so two correct sums of that rounding step
    # apart by up to lr eps_dtype / eps_rule each step: 6 steps x 0.05 x 2.2e-16 / 1e-7 = 6.7e-10 in
    # float64 (observed: at most 7e-12 on the weights, 3e-10 on such biases); in float32 the same
    # bound is 0.36, no test at all, so float32 is checked with the plain rules (the kernels are
    # one source for both dtypes).
    adaptive = optimizer in ("adagrad", "rmsprop", "adam") and "batchnorm" in name
    if adaptive and dtype == np.float32:
        pytest.skip("adaptive rules over batch normalization: checked in float64 (the bound above)")
    x = rng.standard_normal((40, *arch["input"])).astype(dtype)
    x[rng.random(x.shape) < 0.5] = 0  # zeros, as in MNIST, and ties for the pooling's first maximum
    batches = rng.integers(0, 40, (6, 5))
    expected, actual = run_both(backend, x, architecture.program(arch), n_params(arch), batches, optimizer)
    assert_same_training(expected, actual, 6, dtype, 6 * 0.05 * np.finfo(dtype).eps / 1e-7 if adaptive else 0.0)
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
        elif op == "batchnorm":
            d = sizes[0]
            layers.append(BatchNormalization(W, b, layer.get("momentum", 0.9), np.zeros(d), np.zeros(d), backend="reference"))
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
    expected = np.concatenate([g.reshape(-1) for layer in layers for g in
                               ((layer.dW, layer.db) if hasattr(layer, "dW") else
                                (layer.dgamma, layer.dbeta) if isinstance(layer, BatchNormalization) else ())])
    norms = [layer for layer in layers if isinstance(layer, BatchNormalization)]
    running = np.concatenate([np.zeros(0)] + [s for layer in norms for s in (layer.running_mean, layer.running_var)])

    ops = backends.get("reference")
    grads, losses, stats = np.zeros_like(params), np.zeros(1), np.zeros(engine.stats_size(program))
    ops.train_steps(x, labels, np.arange(12)[None], params, grads, program, engine.SGD,
                    engine.hyper_vector(np.float64, 0.1), np.zeros((2, params.size)), 0, losses, stats)
    # the same float64 operations in the same order
    np.testing.assert_allclose(losses[0], loss, rtol=1e-14)
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())
    np.testing.assert_array_equal(stats, running)


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
        _native.predict_labels(np.zeros((2, 200)), 2, params, program, np.empty(0), 16, np.zeros(2, np.int64))

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
            _native.predict_labels(np.zeros((3, 6)), 3, np.zeros(n_params(arch)), program, np.empty(0), 16, np.zeros(3, np.int64))


@pytest.mark.parametrize("name", ["reference", "numba", "native"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_engine_predicts_with_the_running_statistics_as_the_book(name, dtype, rng):
    """Prediction normalizes by the running statistics (float64, rounded to the network's dtype
    first, as the layer does), for a 2-D and a 4-D batch normalization."""
    if name not in fastbp.available_backends():
        pytest.skip(f"the {name} backend is not available here")
    arch = ARCHS["conv-batchnorm"]
    params = (rng.standard_normal(n_params(arch)) * 0.5).astype(dtype)
    program = architecture.program(arch)
    stats = np.concatenate([np.concatenate([rng.standard_normal(d), rng.random(d) + 0.1])
                            for d in program[program[:, engine.FIELD_CODE] == engine.BATCHNORM, engine.FIELD_IN]])
    layers = book_layers(arch, params)
    at = 0
    for layer in layers:
        if isinstance(layer, BatchNormalization):
            d = layer.gamma.size
            layer.running_mean, layer.running_var = stats[at:at + d], stats[at + d:at + 2 * d]
            at += 2 * d
    x = rng.standard_normal((50, *arch["input"])).astype(dtype)
    h = x
    for layer in layers:
        h = layer.forward(h, train_flg=False) if isinstance(layer, BatchNormalization) else layer.forward(h)
    labels = backends.get(name).predict_labels(x, params, program, stats)
    assert np.mean(labels != np.argmax(h, axis=1)) <= (0 if dtype == np.float64 else 0.02)  # float32: near ties


@pytest.mark.parametrize("name", ["reference", "numba", "native"])
def test_every_engine_refuses_batch_normalization_without_its_statistics(name):
    if name not in fastbp.available_backends():
        pytest.skip(f"the {name} backend is not available here")
    arch = ARCHS["mlp-batchnorm"]
    ops, program, params = backends.get(name), architecture.program(arch), np.zeros(n_params(arch))
    for stats in (None, np.zeros(3), np.zeros(engine.stats_size(program), np.float32)):
        with pytest.raises(ValueError, match=f"needs stats, a writable contiguous float64 vector of "
                                             f"{engine.stats_size(program)} running"):
            ops.predict_labels(np.zeros((2, 30)), params, program, stats)
    wrong = program.copy()
    wrong[1, engine.FIELD_MOMENTUM] = engine.float_field(1.5)
    with pytest.raises(ValueError, match="momentum 1.5"):
        ops.predict_labels(np.zeros((2, 30)), params, wrong, np.zeros(engine.stats_size(program)))


def test_the_native_engine_checks_a_batch_normalization_record():
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    program = architecture.program(ARCHS["mlp-batchnorm"])
    params, stats = np.zeros(n_params(ARCHS["mlp-batchnorm"])), np.zeros(engine.stats_size(program))
    for field, value, message in ((engine.FIELD_MOMENTUM, engine.float_field(-0.1), "momentum outside"),
                                  (engine.FIELD_EPS, engine.float_field(0.0), "eps that is not positive"),
                                  (engine.FIELD_STATS_AT, stats.size - 10, "running statistics lie outside stats"),
                                  (engine.FIELD_PARAM_AT, params.size - 10, "parameters outside")):
        wrong = program.copy()
        wrong[1, field] = value
        with pytest.raises(ValueError, match=message):
            _native.predict_labels(np.zeros((2, 30)), 2, params, wrong, stats, 16, np.zeros(2, np.int64))
