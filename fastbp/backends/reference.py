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

from .. import engine
from ..util import col2im, im2col


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


# ---- exp (the compiled backends' own, which softmax and sigmoid use; tested against this) -----

def exp(x):
    return np.exp(x)


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


# ---- Dropout ---------------------------------------------------------------------------------

def dropout_forward(x, draw, ratio):
    """mask = draw > ratio (draw: the uniform numbers of np.random.rand, as the book draws them);
    out = x * mask (a product, as the book's: NaN * 0 stays NaN)."""
    mask = draw > ratio
    return x * mask, mask


def dropout_forward_numpy(x, ratio):
    """dropout_forward with the book's own draw: np.random.rand(*x.shape) from NumPy's global
    generator, which it advances as that call does (so the book's np.random.seed gives its masks)."""
    return dropout_forward(x, np.random.rand(*x.shape), ratio)


def dropout_backward(dout, mask):
    return dout * mask


# ---- Batch normalization of the columns of x (N, D), as the book writes it -------------------

def batchnorm_forward(x, gamma, beta, eps):
    """Training: each column normalised by its batch mean and variance; returns (out, xn, mean, var, std)."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    std = np.sqrt(var + eps)
    xn = xc / std
    return gamma * xn + beta, xn, mu, var, std


def batchnorm_infer(x, gamma, beta, mean, var, eps):
    """Inference: normalised by the running statistics."""
    return gamma * ((x - mean) / np.sqrt(var + eps)) + beta


def batchnorm_backward(dout, xn, std, gamma):
    """Returns (dx, dgamma, dbeta), by the book's steps (xc = xn * std)."""
    n = dout.shape[0]
    xc = xn * std
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    return dxc - dmu / n, dgamma, dbeta


# ---- Convolution: im2col and one matrix product, as the book ---------------------------------

def conv_forward(x, W, b, stride, pad):
    """x (N, C, H, W), W (FN, C, FH, FW) -> (out (N, FN, OH, OW), col: what backward reads)."""
    FN, _, FH, FW = W.shape
    N, _, H, Wd = x.shape
    out_h, out_w = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    col = im2col(x, FH, FW, stride, pad)
    out = np.dot(col, W.reshape(FN, -1).T) + b
    return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2)), col


def conv_backward(dout, x, col, W, stride, pad, need_dx=True):
    """Returns (dx or None, dW, db)."""
    FN, C, FH, FW = W.shape
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    db = np.sum(dout, axis=0)
    dW = np.dot(col.T, dout).T.reshape(FN, C, FH, FW)
    dx = col2im(np.dot(dout, W.reshape(FN, -1)), x.shape, FH, FW, stride, pad) if need_dx else None
    return dx, np.ascontiguousarray(dW), db


# ---- Max pooling, the gradient to each window's first maximum (the book's tie rule) -----------

def pool_forward(x, pool_h, pool_w, stride, pad):
    """x (N, C, H, W) -> (out, arg_max), both (N, C, OH, OW): arg_max the place of each window's first
    maximum, row by row (padding counts as 0); the book keeps it in the order (n, oh, ow, c)."""
    N, C, H, W = x.shape
    out_h, out_w = (H + 2 * pad - pool_h) // stride + 1, (W + 2 * pad - pool_w) // stride + 1
    col = im2col(x, pool_h, pool_w, stride, pad).reshape(-1, pool_h * pool_w)
    arg_max = np.argmax(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
    out = np.max(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out), np.ascontiguousarray(arg_max)


def pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad):
    arg_max = arg_max.transpose(0, 2, 3, 1)  # the book's order again
    dout = dout.transpose(0, 2, 3, 1)
    dmax = np.zeros((dout.size, pool_h * pool_w), dtype=dout.dtype)
    dmax[np.arange(arg_max.size), arg_max.reshape(-1)] = dout.reshape(-1)
    # rows (n, oh, ow), columns (c, fh, fw): the layout col2im reads
    return col2im(dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1), x_shape, pool_h, pool_w, stride, pad)


# ---- Parameter update: every rule in place, on the parameter and its state m and v ---------

def optimizer_step(code, param, grad, m, v, hyper, t):
    """Step ``t`` (1-based) of update rule ``code`` (fastbp/engine.py), in place."""
    lr, beta1 = hyper[engine.HYPER_LR], hyper[engine.HYPER_BETA1]
    if code == engine.SGD:  # param -= lr * grad
        param -= lr * grad
    elif code == engine.MOMENTUM:  # v = momentum * v - lr * grad; param += v
        m *= beta1
        m -= lr * grad
        param += m
    elif code == engine.NESTEROV:  # the book's: param += mu^2 v - (1 + mu) lr grad; v = mu v - lr grad
        param += beta1 * beta1 * m
        param -= (1 + beta1) * lr * grad
        m *= beta1
        m -= lr * grad
    elif code == engine.ADAGRAD:  # h += grad^2; param -= lr grad / (sqrt(h) + eps)
        m += grad * grad
        param -= lr * grad / (np.sqrt(m) + hyper[engine.HYPER_EPS])
    elif code == engine.RMSPROP:  # h = decay h + (1 - decay) grad^2; param -= lr grad / (sqrt(h) + eps)
        m *= beta1
        m += (1 - beta1) * grad * grad
        param -= lr * grad / (np.sqrt(m) + hyper[engine.HYPER_EPS])
    elif code == engine.ADAM:  # the bias correction folded into the step size, as in the book
        beta2, eps = hyper[engine.HYPER_BETA2], hyper[engine.HYPER_EPS]
        lr_t = engine.adam_step_size(float(lr), float(beta1), float(beta2), t)  # in double, as the kernels
        m += (1 - beta1) * (grad - m)
        v += (1 - beta2) * (grad**2 - v)
        param -= lr_t * m / (np.sqrt(v) + eps)


# ---- The engine: a network as a sequence of ops (fastbp/engine.py) ---------------------------

def _window_fields(op):
    """A conv or pool record's (C, H, W, F, KH, KW, stride, pad, OH, OW)."""
    return tuple(int(v) for v in op[engine.FIELD_SHAPE:engine.FIELD_SHAPE + 10])


def _conv_params(params, op):
    c, _, _, f, kh, kw = _window_fields(op)[:6]
    at = int(op[engine.FIELD_PARAM_AT])
    return params[at:at + f * c * kh * kw].reshape(f, c, kh, kw), params[at + f * c * kh * kw:at + f * c * kh * kw + f]


def _forward_ops(program, params, x, last, stats, step=0):
    """Runs ops [0, last) on the rows of x; returns every op's output (rows flattened) and what its
    backward needs. ``step``: the training step (1-based) whose dropout masks to draw and whose
    batch statistics update the running ones in ``stats``; 0 predicts (with the running ones)."""
    outs, saved = [], []
    for i, op in enumerate(program[:last]):
        code, at, k, m = (int(op[f]) for f in (engine.FIELD_CODE, engine.FIELD_PARAM_AT, engine.FIELD_IN, engine.FIELD_OUT))
        if code == engine.AFFINE:
            x = affine_forward(x, params[at:at + k * m].reshape(k, m), params[at + k * m:at + k * m + m])
            keep = None
        elif code == engine.RELU:
            x, keep = relu_forward(x)
        elif code == engine.SIGMOID:
            x = keep = sigmoid_forward(x)
        elif code == engine.DROPOUT:
            ratio = engine.dropout_ratio(op)
            if step:
                draw = engine.dropout_draws(engine.dropout_keys(program, step - 1, 1)[0, i], x.size).reshape(x.shape)
                x, keep = dropout_forward(x, draw, ratio)
            else:
                x, keep = x * x.dtype.type(1.0 - ratio), None
        elif code == engine.BATCHNORM:
            gamma, beta = params[at:at + k], params[at + k:at + 2 * k]
            momentum, eps = engine.read_float(op, engine.FIELD_MOMENTUM), engine.read_float(op, engine.FIELD_EPS)
            s = int(op[engine.FIELD_STATS_AT])
            mean, var = stats[s:s + k], stats[s + k:s + 2 * k]
            if step:  # the layer's: the batch's statistics, and the running ones updated in float64
                x, xn, mu, batch_var, std = batchnorm_forward(x, gamma, beta, eps)
                mean[...] = momentum * mean + (1 - momentum) * mu
                var[...] = momentum * var + (1 - momentum) * batch_var
                keep = (xn, std)
            else:
                x, keep = batchnorm_infer(x, gamma, beta, mean.astype(x.dtype), var.astype(x.dtype), eps), None
        else:  # a window op, on the rows as images
            c, h, w, _, kh, kw, stride, pad, _, _ = _window_fields(op)
            images = x.reshape(x.shape[0], c, h, w)
            if code == engine.CONV:
                W, b = _conv_params(params, op)
                x, keep = conv_forward(images, W, b, stride, pad)
            else:
                x, keep = pool_forward(images, kh, kw, stride, pad)
            x = x.reshape(x.shape[0], -1)
        outs.append(x)
        saved.append(keep)
    return outs, saved


def _backward_ops(program, params, grads, x, outs, saved, dout):
    """From d loss / d (the last op's output) down to op 0, whose input (the data) gets no gradient."""
    for i in range(len(outs) - 1, -1, -1):
        op = program[i]
        code, at, k, m = (int(op[f]) for f in (engine.FIELD_CODE, engine.FIELD_PARAM_AT, engine.FIELD_IN, engine.FIELD_OUT))
        inp = outs[i - 1] if i > 0 else x
        if code == engine.AFFINE:
            dout, dW, db = affine_backward(dout, inp, params[at:at + k * m].reshape(k, m), need_dx=i > 0)
            grads[at:at + k * m] = dW.reshape(-1)
            grads[at + k * m:at + k * m + m] = db
        elif code == engine.RELU:
            dout = relu_backward(dout, saved[i])
        elif code == engine.SIGMOID:
            dout = sigmoid_backward(dout, saved[i])
        elif code == engine.DROPOUT:
            dout = dropout_backward(dout, saved[i])
        elif code == engine.BATCHNORM:
            dout, grads[at:at + k], grads[at + k:at + 2 * k] = batchnorm_backward(dout, *saved[i], params[at:at + k])
        else:
            c, h, w, f, kh, kw, stride, pad, oh, ow = _window_fields(op)
            images, d4 = inp.reshape(inp.shape[0], c, h, w), dout.reshape(dout.shape[0], f, oh, ow)
            if code == engine.CONV:
                W, _ = _conv_params(params, op)
                dx, dW, db = conv_backward(d4, images, saved[i], W, stride, pad, need_dx=i > 0)
                grads[at:at + W.size] = dW.reshape(-1)
                grads[at + W.size:at + W.size + f] = db
            else:
                dx = pool_backward(d4, saved[i], images.shape, kh, kw, stride, pad)
            dout = None if dx is None else dx.reshape(dx.shape[0], -1)


def prepare_rows(x, program):
    """A data set as this backend's train_steps and predict_labels read it fastest for ``program``:
    here, as it is.

    (The native backend keeps a mostly-zero set as its nonzeros; see native.prepare_rows.)
    """
    return x


def train_steps(x, labels, batches, params, grads, program, optimizer, hyper, state, step0, losses, stats=None):
    """Mini-batch training: one step per row of ``batches`` (indices into x and labels).

    ``x`` is a data set as prepare_rows returned it; ``program`` the network (fastbp/engine.py).
    Each step runs forward, softmax-with-loss, backward (no gradient for the data) and update rule
    ``optimizer`` on the flat buffers ``params``/``grads``/``state``. ``losses[s]`` gets the loss
    of step s's forward pass. Returns the number of steps done: fewer than asked when a loss is
    not finite, in which case that step's update is not applied. ``stats``: the running statistics
    of the program's batch normalization ops (engine.stats_size entries), updated every step.
    """
    stats = engine.check_runs(program, stats)
    decay, spans = hyper[engine.HYPER_DECAY], engine.weight_spans(program)
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite loss is detected and reported below
        for s, batch in enumerate(batches):
            x_batch, t_batch = x[batch].reshape(len(batch), -1), labels[batch]
            outs, saved = _forward_ops(program, params, x_batch, len(program) - 1, stats, step0 + s + 1)
            loss, y = softmax_cross_entropy_forward(outs[-1], t_batch)
            if decay:  # the book's weight decay: lambda/2 sum W^2 on the loss, lambda W on dW
                loss += 0.5 * float(decay) * sum(float(np.sum(params[a:b].astype(np.float64) ** 2)) for a, b in spans)
            if not np.isfinite(loss):
                return s
            losses[s] = loss
            _backward_ops(program, params, grads, x_batch, outs, saved, softmax_cross_entropy_backward(y, t_batch, 1.0))
            for a, b in spans if decay else ():
                grads[a:b] += decay * params[a:b]
            optimizer_step(optimizer, params, grads, state[0], state[1], hyper, step0 + s + 1)
    return len(batches)


def predict_labels(x, params, program, stats=None):
    """Predicted class (argmax of the ops before the loss) for every row of x; batch normalization
    with the running statistics ``stats``."""
    stats = engine.check_runs(program, stats)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], engine.PREDICT_ROWS):
        rows = x[start:start + engine.PREDICT_ROWS]
        outs, _ = _forward_ops(program, params, rows.reshape(rows.shape[0], -1), len(program) - 1, stats)
        labels[start:start + engine.PREDICT_ROWS] = np.argmax(outs[-1], axis=1)
    return labels
