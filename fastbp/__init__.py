"""fastbp: the backpropagation layers of "Deep Learning from Scratch" chapter 5, with compiled kernels.

    from fastbp import Affine, Relu, SoftmaxWithLoss      # drop-in for the seed's layers
    fastbp.set_backend("reference")                        # or "numba", "native"
    from fastbp.reference import Affine                    # pure NumPy, whatever the global choice
"""

from .backends import BackendUnavailable, available as available_backends, current as get_backend
from .backends import set_backend, use_backend
from .gradcheck import GradientCheckReport, compare_gradients, gradient_check, numerical_gradient
from .layers import AddLayer, Affine, IdentityWithLoss, Layer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from .nets import MultiLayerNet, TwoLayerNet
from .optim import SGD, Adam, Momentum

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AddLayer",
    "Affine",
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
