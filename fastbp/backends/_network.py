"""Conventions shared by the backends' whole-network operations (train_steps, predict_labels).

A network of ``len(sizes) - 1`` affine layers keeps all its parameters in one flat buffer, in
the order W1, b1, W2, b2, ...; W_l has shape (sizes[l], sizes[l + 1]). Gradients and optimizer
state use the same layout, so an optimizer step is one elementwise pass over the buffer.
Hidden layers share one activation; the last layer feeds softmax with cross-entropy.
"""

import numpy as np

RELU, SIGMOID = 0, 1
ACTIVATIONS = {"relu": RELU, "sigmoid": SIGMOID}

SGD, MOMENTUM, ADAM = 0, 1, 2
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}

# hyper-parameter vector handed to train_steps: [lr, momentum or beta1, beta2, eps]
HYPER_LENGTH = 4


def adam_step_size(lr, beta1, beta2, t):
    """Adam's step size at step t (1-based), with the bias corrections of m and v folded in, as the
    book does (plain arithmetic: numba compiles it too; kernels/ops_impl.h repeats it in C)."""
    return lr * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)


def layer_offsets(sizes, layer):
    """Offsets of W_layer and b_layer in the flat buffer (plain arithmetic: numba compiles it too)."""
    offset = 0
    for k in range(layer):
        offset += sizes[k] * sizes[k + 1] + sizes[k + 1]
    return offset, offset + sizes[layer] * sizes[layer + 1]


def parameter_count(sizes) -> int:
    return int(sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(len(sizes) - 1)))


def layer_views(flat: np.ndarray, sizes) -> list:
    """[(W1, b1), (W2, b2), ...] as views into ``flat``: writing to them writes to the buffer."""
    views = []
    for layer in range(len(sizes) - 1):
        w_at, b_at = layer_offsets(sizes, layer)
        n_in, n_out = int(sizes[layer]), int(sizes[layer + 1])
        views.append((flat[w_at:b_at].reshape(n_in, n_out), flat[b_at:b_at + n_out]))
    return views
