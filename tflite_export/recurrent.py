"""Recurrent layers (LSTM, GRU, SimpleRNN) exported with TFLite builtin ops only.

With an unknown batch size, TensorFlow lowers a Keras 3 recurrent layer to a
`while` loop over `TensorList` ops, which TFLite has no builtin kernel for
(`TensorListReserve`: the conversion fails, or needs TF Select ops that phones
lack). With a static batch size the same loop converts to TFLite's builtin
`WHILE` op with `FULLY_CONNECTED`/elementwise ops in its body, computing what
Keras computes. `with_static_batch` gives the converter such a model: the
caller's model called on batch-1 inputs (its layers shared, nothing copied or
changed), so the `.tflite` file takes one example per call, as phones run
keyword-spotting and sensor models. `tflite_export.convert` applies it to
every model with a recurrent layer and an unknown batch size.

Measured (docs/tflite.md, "Recurrent models"): the static-batch `WHILE` route
against `unroll=True` on the same LSTM, file size and latency.
"""

from __future__ import annotations

__all__ = ["recurrent_layers", "with_static_batch"]


def recurrent_layers(model):
    """The recurrent layers (`keras.layers.RNN` and subclasses) anywhere in `model`.

    Args:
        model: a Keras model.

    Returns:
        A list of layers, wrappers such as `Bidirectional` included (nested
        models are searched; the inside of a custom layer is not).

    Example:
    >>> [l.name for l in recurrent_layers(model)]
    ['lstm']
    """
    import keras

    found = []
    stack = [model]
    seen = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            found.append(layer)
            continue
        stack.extend(getattr(layer, "layers", []) or [])  # nested models
    return found


def with_static_batch(model, batch_size=1):
    """`model`, or a model calling it on inputs with a static batch size.

    Only models with a recurrent layer and an unknown batch size change; the
    returned model shares the caller's layers (weights are not copied).

    Args:
        model: a built functional or Sequential `keras.Model`.
        batch_size: the static batch size of the exported file (default 1).

    Returns:
        A `keras.Model` whose inputs have `batch_size` on axis 0, or `model`
        itself when it has no recurrent layer or a static batch already.

    Example:
    >>> tflite_export.convert(lstm_model)   # applies with_static_batch itself
    """
    import keras

    if not recurrent_layers(model):
        return model
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        return model
    if not inputs or all(t.shape[0] is not None for t in inputs):
        return model
    fresh = [
        keras.Input(shape=tuple(t.shape[1:]), batch_size=batch_size, dtype=t.dtype,
                    name=(getattr(t, "name", None) or f"input_{i}").split(":")[0])
        for i, t in enumerate(inputs)
    ]
    outputs = model(fresh[0] if len(fresh) == 1 else fresh, training=False)
    return keras.Model(fresh, outputs, name=model.name)
