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

from ._network import ADAM, MOMENTUM, RELU, SGD, adam_step_size, layer_views


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


def momentum_update(param, grad, velocity, lr, momentum):
    """v = momentum * v - lr * grad; param += v (both in place)."""
    velocity *= momentum
    velocity -= lr * grad
    param += velocity


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, t):
    """Adam step ``t`` (1-based), in place, with the bias correction folded into the step size."""
    lr_t = adam_step_size(lr, beta1, beta2, t)
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad**2 - v)
    param -= lr_t * m / (np.sqrt(v) + eps)


# ---- Whole-network operations (layout: backends/_network.py) ------------------------------

def _optimizer_step(optimizer, params, grads, state, hyper, t):
    lr, beta1, beta2, eps = (float(h) for h in hyper)
    if optimizer == SGD:
        sgd_update(params, grads, lr)
    elif optimizer == MOMENTUM:
        momentum_update(params, grads, state[0], lr, beta1)
    elif optimizer == ADAM:
        adam_update(params, grads, state[0], state[1], lr, beta1, beta2, eps, t)


def _hidden_forward(activation, z):
    """Activation of a hidden layer; returns (output, what its backward needs)."""
    if activation == RELU:
        return relu_forward(z)
    out = sigmoid_forward(z)
    return out, out


def _hidden_backward(activation, dout, saved):
    return relu_backward(dout, saved) if activation == RELU else sigmoid_backward(dout, saved)


def prepare_rows(x):
    """A data set as this backend's train_steps and predict_labels read it fastest: here, as it is.

    (The native backend keeps a mostly-zero set as its nonzeros; see native.prepare_rows.)
    """
    return x


def train_steps(x, labels, batches, params, grads, sizes, activation, optimizer, hyper, state, step0, losses):
    """Mini-batch training: one step per row of ``batches`` (indices into x and labels).

    ``x`` is a data set as prepare_rows returned it. Each step runs forward, softmax-with-loss,
    backward (no dx for the first layer) and the optimizer update on the flat buffers
    ``params``/``grads``/``state``. ``losses[s]`` gets the loss of step s's forward pass. Returns
    the number of steps done: fewer than asked when a loss is not finite, in which case that
    step's update is not applied.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite loss is detected and reported below
        return _train_steps(x, labels, batches, params, grads, sizes, activation, optimizer, hyper, state, step0, losses)


def _train_steps(x, labels, batches, params, grads, sizes, activation, optimizer, hyper, state, step0, losses):
    layers = layer_views(params, sizes)
    layer_grads = layer_views(grads, sizes)
    last = len(layers) - 1
    for s, batch in enumerate(batches):
        x_batch, t_batch = x[batch], labels[batch]
        inputs, saved = [], []
        out = x_batch
        for i, (W, b) in enumerate(layers):
            inputs.append(out)
            out = affine_forward(out, W, b)
            if i < last:
                out, keep = _hidden_forward(activation, out)
                saved.append(keep)
        loss, y = softmax_cross_entropy_forward(out, t_batch)
        if not np.isfinite(loss):
            return s
        losses[s] = loss
        dout = softmax_cross_entropy_backward(y, t_batch, 1.0)
        for i in range(last, -1, -1):
            dx, dW, db = affine_backward(dout, inputs[i], layers[i][0], need_dx=i > 0)
            layer_grads[i][0][...] = dW
            layer_grads[i][1][...] = db
            if i > 0:
                dout = _hidden_backward(activation, dx, saved[i - 1])
        _optimizer_step(optimizer, params, grads, state, hyper, step0 + s + 1)
    return len(batches)


def predict_labels(x, params, sizes, activation):
    """Predicted class (argmax of the last layer) for every row of x."""
    layers = layer_views(params, sizes)
    labels = np.empty(x.shape[0], dtype=np.int64)
    chunk = 10000  # bounds the memory of the hidden activations
    for start in range(0, x.shape[0], chunk):
        out = x[start:start + chunk]
        for i, (W, b) in enumerate(layers):
            out = affine_forward(out, W, b)
            if i < len(layers) - 1:
                out, _ = _hidden_forward(activation, out)
        labels[start:start + chunk] = np.argmax(out, axis=1)
    return labels
