"""The native backend: a thin wrapper over the ahead-of-time compiled C kernels (fastbp._native).

It grows kernel by kernel; fastbp.backends offers it as a backend only once it implements
every operation in ``backends.OPS``. Until then its functions are tested one by one against
the reference (tests/test_native.py). Same contract and signatures as reference.py.
"""

import numpy as np

from .. import _native


def relu_forward(x):
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    _native.relu_forward(x, out, mask)
    return out, mask


def relu_backward(dout, mask):
    dx = np.empty_like(dout)
    _native.relu_backward(dout, mask, dx)
    return dx


def sgd_update(param, grad, lr):
    _native.sgd_update(param, grad, lr)
