"""2-D views of kernels and their inputs: the `[in, out]` matrix every one-shot
method works on (Dense `[in, out]`; Conv1D/2D `[k... * c_in, c_out]`, the
im2col view; EinsumDense `[contracted axes, produced axes]` read from its
equation), and the matching `[rows, in]` view of the layer's inputs.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["KernelView", "kernel_view", "to_numpy", "to_float64"]


class KernelView:
    """How a layer's kernel and inputs map to the `[in, out]` / `[rows, in]` views.

    Attributes:
        kernel_shape: the kernel's shape.
        perm: kernel axes in view order (input axes first, then outputs).
        n_in, n_out: the 2-D view's size.
        in_length: length of the kernel's input axis (`Layout.in_axis`), the
            last of the input axes: N:M groups are runs of `m` consecutive
            view rows inside each segment of `in_length` rows.
        engine_view: whether the view equals the mask engine's Block view
            `[prod(shape[:-1]), shape[-1]]`.
        inputs_2d: `fn(x) -> [rows, n_in]` float64 array.
    """

    def __init__(self, kernel_shape, perm, n_in_axes, in_length, inputs_2d):
        self.kernel_shape = tuple(int(d) for d in kernel_shape)
        self.perm = tuple(perm)
        permuted = [self.kernel_shape[a] for a in self.perm]
        self.n_in = int(np.prod(permuted[:n_in_axes]))
        self.n_out = int(np.prod(permuted[n_in_axes:]))
        self.in_length = int(in_length)
        self.engine_view = self.perm == tuple(range(len(kernel_shape))) and (
            len(kernel_shape) - n_in_axes == 1
        )
        self.inputs_2d = inputs_2d
        self._permuted = tuple(permuted)

    def to_2d(self, kernel):
        return np.transpose(np.asarray(kernel), self.perm).reshape(self.n_in, self.n_out)

    def from_2d(self, matrix):
        return np.transpose(np.asarray(matrix).reshape(self._permuted), np.argsort(self.perm))


def kernel_view(layer):
    """The `KernelView` of a Dense, EinsumDense, Conv1D or Conv2D layer.

    Raises:
        ValueError: the layer is of another type, grouped, or an EinsumDense
            whose equation is not a plain contraction.
    """
    shape = tuple(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return KernelView(shape, (0, 1), 1, shape[0],
                          lambda x: to_float64(x).reshape(-1, shape[0]))
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_view(layer, shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"Layer '{layer.path}': grouped convolutions (groups={layer.groups}) are not supported.")
        rank = len(shape) - 2
        return KernelView(shape, tuple(range(len(shape))), rank + 1, shape[-2],
                          lambda x: _im2col(layer, x, rank))
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) is not a Dense, "
        f"EinsumDense, Conv1D or Conv2D layer."
    )


def _einsum_view(layer, shape):
    inputs, output = layer.equation.replace(" ", "").split("->")
    lhs, kernel = inputs.split(",")
    if "..." in kernel or len(kernel) != len(shape):
        raise ValueError(f"EinsumDense '{layer.path}': equation {layer.equation!r} is not supported.")
    contracted = [i for i, c in enumerate(kernel) if c in lhs and c not in output]
    produced = [i for i, c in enumerate(kernel) if c in output and c not in lhs]
    if not contracted or not produced or len(contracted) + len(produced) != len(kernel):
        raise ValueError(
            f"EinsumDense '{layer.path}': equation {layer.equation!r} is not a "
            f"contraction of input axes into output axes (it has shared or "
            f"summed-out kernel axes)."
        )
    letters = [kernel[i] for i in contracted]
    n_in = int(np.prod([shape[i] for i in contracted]))

    def inputs_2d(x):
        x = to_float64(x)
        labels = list(lhs)
        if "..." in lhs:
            before, after = lhs.split("...")
            extra = x.ndim - len(before) - len(after)
            labels = list(before) + [None] * extra + list(after)
        axes = [labels.index(c) for c in letters]
        rest = [a for a in range(x.ndim) if a not in axes]
        return np.transpose(x, rest + axes).reshape(-1, n_in)

    return KernelView(shape, contracted + produced, len(contracted), shape[contracted[-1]], inputs_2d)


def _im2col(layer, x, rank):
    """Patches `[rows, k... * c_in]` in the kernel's `(k..., c_in)` order."""
    x = to_float64(x)
    if layer.data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    dilation = tuple(layer.dilation_rate)
    padding = layer.padding
    pads = [(0, 0)]
    for d in range(rank):
        size, k, s, r = x.shape[1 + d], kernel[d], strides[d], dilation[d]
        span = (k - 1) * r + 1
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal":
            pads.append((span - 1, 0))
        else:  # "same", as TF: the extra pixel goes after
            out = -(-size // s)
            total = max((out - 1) * s + span - size, 0)
            pads.append((total // 2, total - total // 2))
    pads.append((0, 0))
    x = np.pad(x, pads)
    spans = tuple((kernel[d] - 1) * dilation[d] + 1 for d in range(rank))
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(1, 1 + rank)))
    # windows: [batch, out..., c_in, span...]; take strides and dilations.
    index = (slice(None),) + tuple(slice(None, None, s) for s in strides) + (slice(None),)
    index += tuple(slice(None, None, r) for r in dilation)
    windows = windows[index]
    # -> [batch, out..., k..., c_in]
    windows = np.moveaxis(windows, 1 + rank, -1)
    return windows.reshape(-1, int(np.prod(kernel)) * x.shape[-1])


def to_float64(x):
    """A backend tensor (or array) as a float64 numpy array."""
    return np.asarray(to_numpy(x), dtype=np.float64)


def to_numpy(x):
    """A backend tensor (or array) as a numpy array."""
    return np.asarray(keras.ops.convert_to_numpy(x))
