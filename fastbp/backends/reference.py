"""The reference backend: plain NumPy, written to read like the textbook (chapter 5).

This module is the specification. Any other backend is correct exactly when it agrees with
it, and it is correct when it agrees with finite differences (tests/test_gradcheck.py).

Where it departs from the seed's code, it is to fix a known defect:
- relu_backward returns a new array instead of overwriting the caller's ``dout``;
- the cross-entropy is computed from log-softmax, exact and stable for any finite logits,
  instead of ``-sum(t * log(y + 1e-7))``, which caps the loss at 16.1 and biases it;
- the softmax backward multiplies by the incoming ``dout`` instead of ignoring it.

Contract (the layers guarantee it): arrays are C-contiguous and share one float dtype;
``labels`` are int64 class indices in range; ``dout`` for the losses is a Python float.
"""

import numpy as np


# ---- Affine: out = x W + b -------------------------------------------------------------

def affine_forward(x, W, b):
    return np.dot(x, W) + b


def affine_backward(dout, x, W, need_dx=True):
    """Gradients of an affine layer: dx = dout W^T, dW = x^T dout, db = column sums of dout.

    ``need_dx=False`` skips dx, which the first layer of a network never uses.
    """
    dx = np.dot(dout, W.T) if need_dx else None
    dW = np.dot(x.T, dout)
    db = np.sum(dout, axis=0)
    return dx, dW, db


# ---- ReLU --------------------------------------------------------------------------------

def relu_forward(x):
    mask = (x <= 0)
    out = x.copy()
    out[mask] = 0
    return out, mask


def relu_backward(dout, mask):
    dx = dout.copy()
    dx[mask] = 0
    return dx


# ---- Sigmoid -----------------------------------------------------------------------------

def sigmoid_forward(x):
    # 1 / (1 + exp(-x)), evaluated through exp(-|x|) so that exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dout, out):
    return dout * (1.0 - out) * out


# ---- Softmax with cross-entropy ----------------------------------------------------------

def softmax_cross_entropy_forward(x, labels):
    """Mean cross-entropy of softmax(x) against integer ``labels``; returns (loss, y)."""
    n = x.shape[0]
    shifted = x - np.max(x, axis=1, keepdims=True)  # largest logit becomes 0: exp cannot overflow
    exp = np.exp(shifted)
    sum_exp = np.sum(exp, axis=1, keepdims=True)
    y = exp / sum_exp
    # -log y[label] = log(sum exp) - shifted[label]: exact, never log(0)
    log_prob = shifted[np.arange(n), labels] - np.log(sum_exp[:, 0])
    loss = -np.sum(log_prob) / n
    return x.dtype.type(loss), y


def softmax_cross_entropy_backward(y, labels, dout):
    """dx = dout * (y - t) / N, with t the one-hot form of ``labels``."""
    n = y.shape[0]
    dx = y.copy()
    dx[np.arange(n), labels] -= 1
    return dx * (dout / n)


# ---- Identity output with mean squared error ---------------------------------------------

def mse_forward(y, t):
    """Half the squared error, summed over outputs and averaged over the batch."""
    n = y.shape[0]
    return y.dtype.type(0.5 * np.sum((y - t) ** 2) / n)


def mse_backward(y, t, dout):
    n = y.shape[0]
    return (y - t) * (dout / n)


# ---- Parameter update --------------------------------------------------------------------

def sgd_update(param, grad, lr):
    """Plain gradient descent, in place: param -= lr * grad."""
    param -= lr * grad
