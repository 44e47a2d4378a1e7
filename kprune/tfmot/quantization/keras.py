"""`tfmot.quantization.keras` on Keras 3: tfmot's QAT names, run by kprune.

`quantize_model`, `quantize_annotate_layer`, `quantize_annotate_model`,
`quantize_apply` and `quantize_scope` keep tfmot's signatures and defaults
and forward to `kprune.quantization` (no second implementation); the
differences are listed in docs/quantization.md, one line each.

Example (tfmot's QAT guide, with only the import changed):
```python
import kprune.tfmot as tfmot

q_aware_model = tfmot.quantization.keras.quantize_model(model)
q_aware_model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
q_aware_model.fit(train_images, train_labels, epochs=1)
converter = tf.lite.TFLiteConverter.from_keras_model(q_aware_model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
quantized_tflite_model = converter.convert()
```
"""

from __future__ import annotations

import types

import keras

from kprune import quantization as _quantization

__all__ = [
    "quantize_model",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_scope",
    "QuantizeScheme",
    "default_8bit",
]


class QuantizeScheme:
    """A quantization scheme for `quantize_apply` (tfmot's base class).

    kprune runs tfmot's default 8-bit scheme; `preserve_sparsity` says
    whether the zeros of pruned kernels are kept (PQAT).
    """

    preserve_sparsity = False


class Default8BitQuantizeScheme(QuantizeScheme):
    """tfmot's default scheme: 8-bit weights (per channel for convolutions,
    per tensor for Dense) and activations, batch norm folded."""


default_8bit = types.SimpleNamespace(Default8BitQuantizeScheme=Default8BitQuantizeScheme)


def _prefix(value):
    if not isinstance(value, str):
        raise TypeError(f"quantized_layer_name_prefix must be a string, got {type(value).__name__}.")
    return value


def quantize_model(to_quantize, quantized_layer_name_prefix="quant_"):
    """tfmot's `quantize_model`: every layer quantization-aware (zeros not kept).

    Args:
        to_quantize: a built Sequential or functional model (not modified).
        quantized_layer_name_prefix: prefix of the quantized layers' names.

    Returns:
        The quantization-aware model.

    Example:
    >>> q_aware = tfmot.quantization.keras.quantize_model(model)
    """
    return _quantization.quantize_model(to_quantize, preserve_sparsity=False,
                                        name_prefix=_prefix(quantized_layer_name_prefix))


def quantize_annotate_layer(to_annotate, quantize_config=None):
    """tfmot's `quantize_annotate_layer` (default 8-bit config only).

    Args:
        to_annotate: a Keras layer.
        quantize_config: must be None (custom `QuantizeConfig`s are not
            supported by kprune).

    Returns:
        The annotated layer.

    Example:
    >>> layer = tfmot.quantization.keras.quantize_annotate_layer(keras.layers.Dense(10))
    """
    if quantize_config is not None:
        raise ValueError(
            "quantize_annotate_layer: kprune runs tfmot's default 8-bit scheme only; a custom "
            "QuantizeConfig is not supported. Pass quantize_config=None, or leave the layer "
            "unannotated to keep it float.")
    return _quantization.quantize_annotate_layer(to_annotate)


def quantize_annotate_model(to_annotate):
    """tfmot's `quantize_annotate_model`: a copy with every layer annotated.

    Example:
    >>> annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    """
    return _quantization.quantize_annotate_model(to_annotate)


def quantize_apply(model, scheme=None, quantized_layer_name_prefix="quant_"):
    """tfmot's `quantize_apply`: quantizes the annotated layers.

    Args:
        model: a model with annotated layers (not modified).
        scheme: `default_8bit.Default8BitQuantizeScheme()` (the default) or
            `kprune.tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()`
            (keeps the zeros of pruned kernels: PQAT).
        quantized_layer_name_prefix: prefix of the quantized layers' names.

    Returns:
        The quantization-aware model.

    Example:
    >>> pqat = tfmot.quantization.keras.quantize_apply(
    ...     annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    """
    if scheme is None:
        scheme = Default8BitQuantizeScheme()
    if not isinstance(scheme, QuantizeScheme):
        raise TypeError(
            f"quantize_apply: scheme must be Default8BitQuantizeScheme() or "
            f"Default8BitPrunePreserveQuantizeScheme(), got {type(scheme).__name__}.")
    return _quantization.quantize_apply(model, preserve_sparsity=scheme.preserve_sparsity,
                                        name_prefix=_prefix(quantized_layer_name_prefix))


def quantize_scope(*args):
    """tfmot's `quantize_scope`: a scope in which saved QAT models load.

    kprune's layers are registered with Keras, so `keras.models.load_model`
    loads them without it; extra `{name: object}` dicts are added to the scope.

    Example:
    >>> with tfmot.quantization.keras.quantize_scope():
    ...     model = keras.models.load_model("qat.keras")
    """
    objects = {
        "QuantizeWrapper": _quantization.QuantizeWrapper,
        "QuantizeAnnotate": _quantization.QuantizeAnnotate,
        "WeightQuantizer": _quantization.WeightQuantizer,
        "ActivationQuantizer": _quantization.ActivationQuantizer,
        "FoldedBatchNorm": _quantization.FoldedBatchNorm,
    }
    for extra in args:
        objects.update(extra)
    return keras.saving.custom_object_scope(objects)
