"""The layers pinned to the pure-NumPy reference backend, whatever the global choice.

``from fastbp.reference import Affine`` gives the textbook implementation; differential tests
compare every other backend with these.
"""

from . import layers as _layers

Relu = _layers.with_backend(_layers.Relu, "reference")
Sigmoid = _layers.with_backend(_layers.Sigmoid, "reference")
Affine = _layers.with_backend(_layers.Affine, "reference")
SoftmaxWithLoss = _layers.with_backend(_layers.SoftmaxWithLoss, "reference")
IdentityWithLoss = _layers.with_backend(_layers.IdentityWithLoss, "reference")
Dropout = _layers.with_backend(_layers.Dropout, "reference")
BatchNormalization = _layers.with_backend(_layers.BatchNormalization, "reference")
Convolution = _layers.with_backend(_layers.Convolution, "reference")
Pooling = _layers.with_backend(_layers.Pooling, "reference")
MulLayer = _layers.MulLayer
AddLayer = _layers.AddLayer

__all__ = ["Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "IdentityWithLoss", "Dropout", "BatchNormalization",
           "Convolution", "Pooling", "MulLayer", "AddLayer"]
