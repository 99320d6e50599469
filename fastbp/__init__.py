"""fastbp: the layers and optimizers of "Deep Learning from Scratch" (chapters 5-8), with compiled kernels.

    from fastbp import Affine, Relu, SoftmaxWithLoss      # drop-in for the book's layers
    from fastbp.layers import *                            # every layer, as the book's common/layers.py
    from fastbp.optim import *                             # the six optimizers, as common/optimizer.py
    fastbp.set_backend("reference")                        # or "numba", "native"
    from fastbp.reference import Affine                    # pure NumPy, whatever the global choice
"""

from ._malloc import configure_malloc
from .threads import configure_openmp

configure_openmp()  # before any compiled module loads the OpenMP runtime
configure_malloc()  # large layer outputs reused without page faults (fastbp/_malloc.py)

from .backends import BackendUnavailable, available as available_backends, current as get_backend  # noqa: E402
from .backends import set_backend, use_backend  # noqa: E402
from .gradcheck import GradientCheckReport, compare_gradients, gradient_check, numerical_gradient  # noqa: E402
from .layers import (AddLayer, Affine, BatchNormalization, Convolution, Dropout, IdentityWithLoss, Layer,  # noqa: E402
                     MulLayer, Pooling, Relu, Sigmoid, SoftmaxWithLoss)
from .nets import MultiLayerNet, TwoLayerNet  # noqa: E402
from .optim import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AdaGrad",
    "Adam",
    "AddLayer",
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "Nesterov",
    "Pooling",
    "RMSprop",
    "BackendUnavailable",
    "GradientCheckReport",
    "IdentityWithLoss",
    "Layer",
    "Momentum",
    "MulLayer",
    "MultiLayerNet",
    "Relu",
    "SGD",
    "Sigmoid",
    "SoftmaxWithLoss",
    "TwoLayerNet",
    "available_backends",
    "compare_gradients",
    "get_backend",
    "gradient_check",
    "numerical_gradient",
    "set_backend",
    "use_backend",
]
