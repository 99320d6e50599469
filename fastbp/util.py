"""The book's convolution helpers (chapter 7, common/util.py): im2col, col2im, conv_output_size,
with its shapes and column order, in plain NumPy. The reference backend's Convolution and Pooling
are written with them; the compiled backends compute the same sums without the big col array.

im2col turns every filter-sized window of a padded (N, C, H, W) batch into one row: rows in the
order (n, out_y, out_x), columns in the order (c, filter_y, filter_x), so that a convolution is
one matrix product ``col @ W.reshape(FN, -1).T``. col2im adds such rows back into an image,
summing where windows overlap: the transpose of im2col, which is what backward needs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """(input_size + 2 pad - filter_size) / stride + 1, as the book computes it (a float when the
    division is not exact: such a size does not fit, and Convolution says so)."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def _out_size(size: int, filter_size: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filter_size) // stride + 1


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N * out_h * out_w, C * filter_h * filter_w), padding with zeros."""
    N, C, H, W = input_data.shape
    out_h, out_w = _out_size(H, filter_h, stride, pad), _out_size(W, filter_w, stride, pad)
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    # every window, then every stride-th one: (N, C, out_h, out_w, filter_h, filter_w)
    windows = sliding_window_view(img, (filter_h, filter_w), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :out_h, :out_w]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The transpose of im2col: each row's entries added back at their window's places."""
    N, C, H, W = input_shape
    out_h, out_w = _out_size(H, filter_h, stride, pad), _out_size(W, filter_w, stride, pad)
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        for x in range(filter_w):  # the (y, x) entry of every window at once
            img[:, :, y:y + stride * out_h:stride, x:x + stride * out_w:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]
