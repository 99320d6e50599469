"""Bad input gets a ValueError or TypeError that names what was wrong, before any kernel runs."""

import numpy as np
import pytest

import fastbp


def affine(backend, d_in=4, d_out=3, dtype=np.float64):
    return fastbp.Affine(np.ones((d_in, d_out), dtype), np.zeros(d_out, dtype), backend=backend)


def test_affine_width_mismatch_names_both_shapes(backend):
    with pytest.raises(ValueError, match=r"x of shape \(2, 5\) has 5 features.*W of shape \(4, 3\) expects 4"):
        affine(backend).forward(np.ones((2, 5)))


def test_affine_rejects_a_bare_sample_with_a_hint(backend):
    with pytest.raises(ValueError, match=r"reshape\(1, -1\)"):
        affine(backend).forward(np.ones(4))


def test_affine_rejects_bias_of_wrong_length(backend):
    layer = fastbp.Affine(np.ones((4, 3)), np.zeros(2), backend=backend)
    with pytest.raises(ValueError, match=r"b has shape \(2,\), expected \(3,\)"):
        layer.forward(np.ones((2, 4)))


def test_affine_backward_checks_dout_shape(backend):
    layer = affine(backend)
    layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"dout has shape \(3, 3\), expected \(2, 3\)"):
        layer.backward(np.ones((3, 3)))


# float16 is no longer refused: it runs on the reference backend (tests/test_layers_ch6_7.py)
@pytest.mark.parametrize("bad", [np.ones((2, 4), dtype=np.int64), np.ones((2, 4), dtype=bool), [["a"] * 4] * 2])
def test_non_float_input_is_a_type_error(backend, bad):
    with pytest.raises(TypeError, match="float32 or float64"):
        affine(backend).forward(bad)
    with pytest.raises(TypeError, match="float32 or float64"):
        fastbp.Relu(backend=backend).forward(bad)


def test_backward_before_forward(backend):
    for layer in (affine(backend), fastbp.Relu(backend=backend), fastbp.SoftmaxWithLoss(backend=backend)):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.ones((2, 3)) if not isinstance(layer, fastbp.SoftmaxWithLoss) else 1.0)


def test_relu_backward_checks_shape(backend):
    layer = fastbp.Relu(backend=backend)
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout has shape \(3, 2\), expected \(2, 3\)"):
        layer.backward(np.ones((3, 2)))


def softmax(backend):
    return fastbp.SoftmaxWithLoss(backend=backend)


def test_labels_of_wrong_length(backend):
    with pytest.raises(ValueError, match="t has 3 labels but x has 2 rows"):
        softmax(backend).forward(np.zeros((2, 4)), np.array([0, 1, 2]))


@pytest.mark.parametrize("labels", [[0, 4], [-1, 0]])
def test_labels_out_of_range(backend, labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        softmax(backend).forward(np.zeros((2, 4)), np.array(labels))


def test_one_hot_of_wrong_width(backend):
    with pytest.raises(ValueError, match=r"one-hot t has shape \(2, 5\), expected \(2, 4\)"):
        softmax(backend).forward(np.zeros((2, 4)), np.eye(5)[:2])


def test_soft_labels_are_refused_not_rounded(backend):
    t = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="not one-hot: row 0"):
        softmax(backend).forward(np.zeros((2, 3)), t)


@pytest.mark.parametrize("rows", [1, 3, 6, 40])  # checked as lists up to SMALL_ONE_HOT entries, by NumPy above
@pytest.mark.parametrize("native", [True, False], ids=["native-first", "python-only"])
def test_one_hot_rows_give_their_labels_and_anything_else_is_refused(rows, native, monkeypatch):
    """Every way of checking one-hot t (float rows: the native module's pass first; Python lists for
    a few entries, NumPy above) accepts exactly the rows with one 1 and zeros (any numeric dtype,
    -0.0 a zero) and gives the 1's column; anything else is refused, naming the row."""
    from fastbp import _validate as check

    if not native:
        monkeypatch.setattr(check, "_native", None)

    rng = np.random.default_rng(rows)
    labels = rng.integers(0, 10, rows)
    for dtype in (np.float64, np.float32, np.int8, np.bool_):
        t = np.eye(10, dtype=dtype)[labels]
        np.testing.assert_array_equal(check.class_labels(t, rows, 10), labels)
    t = -0.0 * np.ones((rows, 10))
    t[np.arange(rows), labels] = 1
    np.testing.assert_array_equal(check.class_labels(t, rows, 10), labels)
    for bad in (0.5, 2.0, -1.0, np.nan, np.inf):
        for where in ("the one", "another"):
            t = np.eye(10)[labels]
            column = labels[-1] if where == "the one" else (labels[-1] + 1) % 10
            t[rows - 1, column] = bad
            with pytest.raises(ValueError, match=f"not one-hot: row {rows - 1} "):
                check.class_labels(t, rows, 10)
    t = np.eye(10)[labels]
    t[0] = 0  # a row of zeros
    with pytest.raises(ValueError, match="not one-hot: row 0 "):
        check.class_labels(t, rows, 10)


def test_float_labels_are_a_type_error(backend):
    with pytest.raises(TypeError, match=r"integer class labels.*astype\(np.int64\)"):
        softmax(backend).forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


@pytest.mark.parametrize("bad, label", [(np.nan, 1), (np.inf, 1), (-np.inf, 2)], ids=["nan", "inf", "-inf-at-label"])
def test_non_finite_logits_are_said_aloud_and_give_numpys_loss(backend, bad, label):
    """The book's code lets networks diverge and carries on (ch06 batch_norm_test.py): no exception,
    a warning that counts and locates the bad values, and the loss NumPy computes (NaN or inf)."""
    from fastbp.layers import NonFiniteWarning

    x = np.zeros((3, 4))
    x[1, 2] = bad
    layer = softmax(backend)
    with pytest.warns(NonFiniteWarning, match=r"1 non-finite value.*index \(1, 2\)"):
        loss = layer.forward(x, np.array([0, label, 2]))
    from fastbp import reference

    expected = reference.SoftmaxWithLoss()
    with pytest.warns(NonFiniteWarning):
        np.testing.assert_array_equal(loss, expected.forward(x, np.array([0, label, 2])))
    assert not np.isfinite(loss)
    np.testing.assert_array_equal(layer.backward(), expected.backward())


def test_minus_inf_at_another_class_is_probability_zero_without_a_warning(backend):
    """-inf at a class other than the label: softmax gives it probability exactly 0, the loss and
    gradient are finite and exactly NumPy's, so nothing is said (the logits are searched only when
    the loss is not finite)."""
    import warnings

    from fastbp import reference

    x = np.zeros((3, 4))
    x[1, 2] = -np.inf
    labels = np.array([0, 1, 2])
    layer = softmax(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = layer.forward(x, labels)
        dx = layer.backward()
    expected = reference.SoftmaxWithLoss()
    np.testing.assert_allclose(loss, expected.forward(x, labels), rtol=4 * np.finfo(np.float64).eps)  # log-sum-exp of 4 terms
    np.testing.assert_allclose(dx, expected.backward(), rtol=4 * np.finfo(np.float64).eps, atol=0)
    assert dx[1, 2] == 0


@pytest.mark.parametrize("rows", [2, 7000], ids=["small", "checked-by-sum"])
def test_huge_finite_logits_are_not_mistaken_for_inf(backend, rows):
    x = np.full((rows, 10), 3e38, dtype=np.float32)  # their sum overflows float32; each is finite
    loss = softmax(backend).forward(x, np.arange(rows) % 10)
    assert np.isclose(loss, np.log(10))


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [np.inf, -np.inf]], ids=["nan", "inf", "both-infs"])
def test_non_finite_logits_in_a_large_batch(backend, bad):
    x = np.zeros((7000, 10))
    x[4321, 3:3 + len(bad)] = bad
    from fastbp.layers import NonFiniteWarning

    with pytest.warns(NonFiniteWarning, match=rf"{len(bad)} non-finite value.*index \(4321, 3\)"):
        softmax(backend).forward(x, np.arange(7000) % 10)


def test_empty_batch(backend):
    with pytest.raises(ValueError, match="at least one sample"):
        softmax(backend).forward(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="at least one sample"):
        fastbp.IdentityWithLoss(backend=backend).forward(np.zeros((0, 4)), np.zeros((0, 4)))


@pytest.mark.parametrize("dout", ["x", [1.0, 2.0], np.nan])
def test_loss_dout_must_be_a_finite_scalar(backend, dout):
    layer = softmax(backend)
    layer.forward(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises((TypeError, ValueError), match="dout must be"):
        layer.backward(dout)


def test_identity_with_loss_checks_target(backend):
    layer = fastbp.IdentityWithLoss(backend=backend)
    with pytest.raises(ValueError, match=r"t has shape \(2, 2\), expected \(2, 3\)"):
        layer.forward(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        layer.forward(np.zeros((2, 3)), np.full((2, 3), np.nan))
    with pytest.raises(TypeError, match="numeric"):
        layer.forward(np.zeros((2, 3)), np.full((2, 3), "a"))


def test_unknown_backend_name_fails_at_construction():
    with pytest.raises(ValueError, match="unknown backend 'numpy'; choose one of"):
        fastbp.Relu(backend="numpy")


@pytest.mark.parametrize("layer_class", [fastbp.MulLayer, fastbp.AddLayer])
def test_mul_and_add_refuse_a_dout_of_another_shape(layer_class):
    layer = layer_class()
    layer.forward(np.ones(3), np.full(3, 2.0))
    with pytest.raises(ValueError, match=r"dout has shape \(2, 3\), expected \(3,\)"):
        layer.backward(np.ones((2, 3)))  # would broadcast and be summed away
    with pytest.raises(RuntimeError, match="before forward"):
        layer_class().backward(np.ones(3))


def test_affine_refuses_an_empty_batch_by_name(backend):
    with pytest.raises(ValueError, match=r"Affine needs at least one sample, got x of shape \(0, 4\)"):
        affine(backend).forward(np.ones((0, 4)))


@pytest.mark.parametrize("W, match", [
    (np.ones(4), r"W must be 2-D \(in_features, out_features\), got shape \(4,\)"),
    (np.ones((5, 3)), r"W of shape \(5, 3\) expects 5 input features, but the input has 4"),
    (np.ones((4, 2)), r"b has shape \(3,\), expected \(2,\) to match W of shape \(4, 2\)"),
    ("W", "W must be a float32 or float64 array"),
])
def test_affine_weights_rebound_after_forward_get_the_same_error_on_every_backend(backend, W, match):
    layer = affine(backend)
    layer.forward(np.ones((2, 4)))
    layer.W = W
    with pytest.raises((ValueError, TypeError), match=match):
        layer.backward(np.ones((2, 3)))


def test_sigmoid_of_a_scalar_keeps_its_shape(backend):
    layer = fastbp.Sigmoid(backend=backend)
    out = layer.forward(np.float64(0.5))
    dx = layer.backward(np.float64(1.0))
    assert out.shape == () and dx.shape == ()
    assert float(dx) == pytest.approx(float(out) * (1 - float(out)))
