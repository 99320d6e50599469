"""The seed's worked examples (chapter 5), with fastbp's layers."""

import numpy as np
import pytest

from fastbp import AddLayer, MulLayer


def test_apple_shopping():
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple, mul_tax = MulLayer(), MulLayer()

    apple_price = mul_apple.forward(apple, apple_num)
    price = mul_tax.forward(apple_price, tax)

    dapple_price, dtax = mul_tax.backward(1)
    dapple, dapple_num = mul_apple.backward(dapple_price)

    assert price == pytest.approx(220)
    assert (dapple, dapple_num, dtax) == pytest.approx((2.2, 110, 200))


def test_apple_orange_shopping():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add_fruit, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()

    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    all_price = add_fruit.forward(apple_price, orange_price)
    price = mul_tax.forward(all_price, tax)

    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add_fruit.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)

    assert price == pytest.approx(715)
    assert (dapple, dapple_num, dorange, dorange_num, dtax) == pytest.approx((2.2, 110, 3.3, 165, 650))


def test_f_equals_x_plus_y_times_z():
    # f(x, y, z) = (x + y) * z; df/dx = df/dy = z, df/dz = x + y
    x, y, z = -2.0, 5.0, -4.0
    add, mul = AddLayer(), MulLayer()
    q = add.forward(x, y)
    f = mul.forward(q, z)
    dq, dz = mul.backward(1.0)
    dx, dy = add.backward(dq)
    assert f == -12.0
    assert (dx, dy, dz) == (-4.0, -4.0, 3.0)


def test_mul_and_add_sum_gradients_back_to_broadcast_shapes(rng):
    x = rng.standard_normal((4, 3))
    bias = rng.standard_normal(3)
    scale = rng.standard_normal((4, 1))
    dout = rng.standard_normal((4, 3))

    add = AddLayer()
    add.forward(x, bias)
    dx, dbias = add.backward(dout)
    np.testing.assert_allclose(dx, dout, rtol=1e-15)
    np.testing.assert_allclose(dbias, dout.sum(axis=0), rtol=1e-14)

    mul = MulLayer()
    mul.forward(x, scale)
    dx, dscale = mul.backward(dout)
    np.testing.assert_allclose(dx, dout * scale, rtol=1e-15)
    np.testing.assert_allclose(dscale, (dout * x).sum(axis=1, keepdims=True), rtol=1e-14)
