"""Fake quantizers of tfmot's default 8-bit scheme, on `keras.ops`.

Two quantizers, each a small Keras layer that owns its range variables:

* `WeightQuantizer` (tfmot's `LastValueQuantizer`): 8 bits, symmetric,
  narrow range (`[-127, 127]`), per output channel for convolutions and
  per tensor for Dense kernels (TFLite's int8 FULLY_CONNECTED takes one
  scale). In training the range is the weight's current `max |w|` (per
  channel), stored in `min`/`max` variables; in inference the stored range
  is used. A symmetric range quantizes 0.0 to exactly 0, so pruned weights
  stay exact zeros in the int8 file.
* `ActivationQuantizer` (tfmot's `MovingAverageQuantizer`): 8 bits,
  asymmetric, full range, per tensor. In training the range tracks the
  batch's `[min(x, 0), max(x, 0)]` with an exponential moving average
  (decay 0.999, as tfmot); unlike tfmot (which starts at `[-6, 6]`), the
  first training batch sets the range, so short fine-tuning gets useful
  ranges.

Both run `keras.quantizers.fake_quant_with_min_max_vars`, which on
TensorFlow is `tf.quantization.fake_quant_with_min_max_vars(_per_channel)`:
the op TFLite's converter reads the int8 scales and zero points from. The
gradient is the straight-through estimator inside the range, zero outside.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["WeightQuantizer", "ActivationQuantizer", "NUM_BITS", "EMA_DECAY"]

#: Bits of every quantizer (TFLite int8).
NUM_BITS = 8
#: Moving-average decay of the activation ranges (tfmot's default).
EMA_DECAY = 0.999
#: Smallest half-range of a weight channel: an all-zero (pruned) channel
#: still gets a valid, tiny scale.
MIN_WEIGHT_RANGE = 1e-5


@keras.saving.register_keras_serializable(package="kprune")
class WeightQuantizer(keras.layers.Layer):
    """Symmetric 8-bit fake quantization of a kernel, per channel or per tensor.

    Args:
        per_channel: one range per output channel (the last axis of the
            kernel as given to `call`), else one range for the tensor.
        preserve_sparsity: also hold a `mask` variable (the kernel's shape,
            1 = kept), which `QuantizeWrapper` turns into a
            `kprune.core.wrapper.MaskConstraint` on the kernel: pruned weights stay
            exactly zero after every optimizer step.
        **kwargs: standard layer arguments.

    Example:
    >>> q = WeightQuantizer(per_channel=True)
    >>> q.build((3, 3, 8, 16))
    >>> w_q = q(kernel, training=True)
    """

    def __init__(self, per_channel=False, preserve_sparsity=False, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.mask = None

    def build(self, shape, mask_shape=None):
        shape = tuple(shape)
        if self.preserve_sparsity:
            self.mask = self.add_weight(name="mask", shape=tuple(mask_shape or shape), initializer="ones",
                                        trainable=False, aggregation="only_first_replica")
        range_shape = (shape[-1],) if self.per_channel else ()
        self.min = self.add_weight(name="min", shape=range_shape, initializer=keras.initializers.Constant(-1.0),
                                   trainable=False)
        self.max = self.add_weight(name="max", shape=range_shape, initializer=keras.initializers.Constant(1.0),
                                   trainable=False)
        self.built = True

    def current_range(self, w):
        """`(min, max)` of the symmetric range of `w`'s current values."""
        axes = tuple(range(len(w.shape) - 1)) if self.per_channel else None
        m = ops.maximum(ops.max(ops.abs(w), axis=axes), MIN_WEIGHT_RANGE)
        return -m, m

    def reset(self, w):
        """Sets the stored range from the weight `w` (after its values change)."""
        lo, hi = self.current_range(ops.convert_to_tensor(w))
        self.min.assign(lo)
        self.max.assign(hi)

    def call(self, w, training=False):
        if training:
            lo, hi = self.current_range(w)
            self.min.assign(lo)
            self.max.assign(hi)
        else:
            lo, hi = self.min.value, self.max.value
        return keras.quantizers.fake_quant_with_min_max_vars(
            w, lo, hi, num_bits=NUM_BITS, narrow_range=True,
            axis=-1 if self.per_channel else None)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "per_channel": self.per_channel,
                "preserve_sparsity": self.preserve_sparsity}


@keras.saving.register_keras_serializable(package="kprune")
class ActivationQuantizer(keras.layers.Layer):
    """Asymmetric 8-bit fake quantization of a tensor, range tracked by EMA.

    Args:
        ema_decay: decay of the moving average of the batch ranges.
        **kwargs: standard layer arguments.

    Example:
    >>> q = ActivationQuantizer()
    >>> y = q(x, training=True)   # updates the range, then fake-quantizes
    """

    def __init__(self, ema_decay=EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, shape=None):
        self.min = self.add_weight(name="min", shape=(), initializer=keras.initializers.Constant(-6.0),
                                   trainable=False)
        self.max = self.add_weight(name="max", shape=(), initializer=keras.initializers.Constant(6.0),
                                   trainable=False)
        self.seen = self.add_weight(name="seen", shape=(), initializer="zeros", trainable=False)
        self.built = True

    def call(self, x, training=False):
        if training:
            xf = ops.cast(x, "float32")
            batch_lo = ops.minimum(ops.min(xf), 0.0)
            batch_hi = ops.maximum(ops.max(xf), 0.0)
            first = ops.equal(self.seen.value, 0.0)
            d = self.ema_decay
            lo = ops.where(first, batch_lo, d * self.min.value + (1.0 - d) * batch_lo)
            hi = ops.where(first, batch_hi, d * self.max.value + (1.0 - d) * batch_hi)
            self.min.assign(lo)
            self.max.assign(hi)
            self.seen.assign(1.0)
        else:
            lo, hi = self.min.value, self.max.value
        return keras.quantizers.fake_quant_with_min_max_vars(
            x, lo, hi, num_bits=NUM_BITS, narrow_range=False)

    def set_range(self, lo, hi):
        """Sets the range (and marks it as set), e.g. from calibration data."""
        self.min.assign(min(float(lo), 0.0))
        self.max.assign(max(float(hi), 0.0))
        self.seen.assign(1.0)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}
