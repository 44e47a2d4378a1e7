"""`PruneWrapper`: the Keras layer that holds masks around a prunable layer.

The wrapper owns, per prunable weight of the wrapped layer, a non-trainable
mask variable (same shape and dtype as the weight), plus one step counter.

* **Stored pruned weights are exactly zero, always.** Every mask update
  assigns `where(mask, w, 0)` together with the mask, and the wrapper sets a
  `MaskConstraint` on each pruned variable. Keras optimizers apply variable
  constraints right after each update, inside the compiled train step, on
  every backend, so momentum, Adam moments or weight decay can never revive a
  pruned weight in the stored variable, not even for one batch.
* **So the forward pass needs no mask.** `call` runs the wrapped layer on its
  stored weights, which already are the masked weights: no `w * mask` in the
  forward pass, no masked gradient. The only per-step cost of pruning is the
  constraint, one elementwise `where` per pruned weight after the optimizer
  update. (Pruned weights do get a gradient; the optimizer's update to them is
  discarded by the constraint in the same step.)
* **Mask updates** come from outside: `PruningCallback` during `fit`, or
  `kprune.Pruner` in a custom loop. They call the model's `MaskAssigner`,
  which updates every due wrapper in one call (compiled once per model,
  where the backend compiles).
* **Backends.** What differs per backend (compiled assigns, how a constraint
  sees the mask inside JAX's stateless train step) sits behind
  `kprune.backend`; this module uses `keras.ops` only.

Which weights are prunable is decided by a registry keyed by layer type
(`register_prunable`). A custom layer opts in by defining
`get_prunable_weights()` (the `PrunableLayer` protocol).
"""

from __future__ import annotations

import inspect

import numpy as np
import keras
from keras import ops

from kprune import backend
from kprune.core import checks, masking
from kprune.core import schedules as schedules_lib

__all__ = [
    "PruneWrapper",
    "PrunableLayer",
    "MaskConstraint",
    "MaskedWeights",
    "check_trainable",
    "register_prunable",
    "prunable_weights",
    "is_prunable",
    "weight_path",
    "MaskAssigner",
    "model_assigner",
]


# --------------------------------------------------------------------------
# What is prunable
# --------------------------------------------------------------------------


class PrunableLayer:
    """Protocol for custom layers that want to be pruned.

    A layer opts in by defining `get_prunable_weights()`, returning the
    variables to prune (subclassing this class is optional: kprune only checks
    for the method). Masks are laid out as for a Dense kernel: the input axis
    is `-2`, the output axis `-1`.

    Example:
    ```python
    class MyDense(keras.layers.Layer, kprune.PrunableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 8))
        def call(self, x):
            return x @ self.w
        def get_prunable_weights(self):
            return [self.w]
    ```
    """

    def get_prunable_weights(self):
        raise NotImplementedError


_CONV_LAYOUT = masking.Layout(in_axis=-2, out_axis=-1)
_TRANSPOSE_LAYOUT = masking.Layout(in_axis=-1, out_axis=-2)
_DEPTHWISE_LAYOUT = masking.Layout(in_axis=-2, out_axis=-2)
_NO_CHANNEL_LAYOUT = masking.Layout(in_axis=None, out_axis=None)
_BIAS_LAYOUT = masking.Layout(in_axis=None, out_axis=-1)

# Ordered: the first matching class wins, so subclasses come first.
_REGISTRY = []


def register_prunable(layer_cls, getter):
    """Registers which weights of `layer_cls` are pruned.

    Args:
        layer_cls: a Keras layer class (subclasses match too).
        getter: `getter(layer) -> list of (variable, masking.Layout)`.

    Example:
    >>> kprune.register_prunable(
    ...     MyLayer, lambda l: [(l.w, kprune.core.masking.Layout(0, -1))])
    """
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, keras.layers.Layer)):
        raise TypeError(f"layer_cls must be a Keras Layer class, got {layer_cls!r}.")
    if not callable(getter):
        raise TypeError(f"getter must be callable, got {getter!r}.")
    _REGISTRY.insert(0, (layer_cls, getter))


def _attr(name, layout):
    return lambda layer: [(getattr(layer, name), layout)]


L = keras.layers
for _cls, _getter in [
    (L.Dense, _attr("kernel", masking.DENSE_LAYOUT)),
    (L.Conv1DTranspose, _attr("kernel", _TRANSPOSE_LAYOUT)),
    (L.Conv2DTranspose, _attr("kernel", _TRANSPOSE_LAYOUT)),
    (L.Conv3DTranspose, _attr("kernel", _TRANSPOSE_LAYOUT)),
    (L.SeparableConv1D, _attr("pointwise_kernel", _CONV_LAYOUT)),
    (L.SeparableConv2D, _attr("pointwise_kernel", _CONV_LAYOUT)),
    (L.DepthwiseConv1D, _attr("kernel", _DEPTHWISE_LAYOUT)),
    (L.DepthwiseConv2D, _attr("kernel", _DEPTHWISE_LAYOUT)),
    (L.Conv1D, _attr("kernel", _CONV_LAYOUT)),
    (L.Conv2D, _attr("kernel", _CONV_LAYOUT)),
    (L.Conv3D, _attr("kernel", _CONV_LAYOUT)),
    (L.Embedding, _attr("embeddings", _NO_CHANNEL_LAYOUT)),
]:
    _REGISTRY.append((_cls, _getter))
del _cls, _getter


# -- Attention, EinsumDense, recurrent and container layers ------------------
#
# Layouts of EinsumDense kernels come from the equation: the input axis is the
# last kernel axis that is contracted (in the input, not in the output), the
# output axis the last kernel axis that appears in the output. For a kernel
# `[d_in, units]` this is the Dense layout. When a contracted group of axes is
# flattened into TFLite's `[out, in]` FullyConnected weight, the last
# contracted axis is the contiguous one, which is where NM groups belong.
#
# MultiHeadAttention overrides the query/key/value output axis: their kernels
# are `[d_model, heads, head_dim]`, and `Layout(in_axis=0, out_axis=1)` makes
# `Channel` granularity remove whole heads of each projection (each projection
# picks its own heads), instead of one `head_dim` index in every head. The
# output kernel `[heads, head_dim, d_model]` uses `Layout(in_axis=1,
# out_axis=2)`: NM groups run along `head_dim`, channels are output features.
#
# Recurrent layers prune `kernel` and `recurrent_kernel` of their cell, both
# `[in or units, gates * units]` (Dense layout: a `Channel` is one unit of one
# gate). The bias is never pruned, as for every other layer.


def _einsum_layout(equation, rank):
    """`masking.Layout` of an EinsumDense kernel, read from its equation."""
    inputs, output = equation.replace(" ", "").split("->")
    lhs, kernel = inputs.split(",")
    kernel = kernel.replace("...", "")
    if len(kernel) != rank:
        return _NO_CHANNEL_LAYOUT
    contracted = [i for i, c in enumerate(kernel) if c in lhs and c not in output]
    produced = [i for i, c in enumerate(kernel) if c in output]
    return masking.Layout(
        in_axis=contracted[-1] if contracted else None,
        out_axis=produced[-1] if produced else None,
    )


def _einsum_getter(layer):
    kernel = layer.kernel
    return [(kernel, _einsum_layout(layer.equation, len(kernel.shape)))]


_HEADS_LAYOUT = masking.Layout(in_axis=0, out_axis=1)


def _attention_getter(layer):
    pairs = []
    for dense in (layer._query_dense, layer._key_dense, layer._value_dense):
        (kernel, layout), = _einsum_getter(dense)
        if len(kernel.shape) == 3:
            layout = _HEADS_LAYOUT
        pairs.append((kernel, layout))
    pairs.extend(_einsum_getter(layer._output_dense))
    return pairs


def _cell_getter(layer):
    return [
        (layer.kernel, masking.DENSE_LAYOUT),
        (layer.recurrent_kernel, masking.DENSE_LAYOUT),
    ]


def _delegating(inner):
    """A getter for a layer that holds other layers (`inner(layer)` lists them).

    It prunes what the prunable inner layers prune, and applies only when at
    least one inner layer is prunable (so `TimeDistributed(Dropout)` is not).
    """

    def getter(layer):
        return [pair for sub in inner(layer) if is_prunable(sub) for pair in prunable_weights(sub)]

    getter.applies = lambda layer: any(is_prunable(sub) for sub in inner(layer))
    return getter


for _cls, _getter in [
    (L.MultiHeadAttention, _attention_getter),
    (L.EinsumDense, _einsum_getter),
    (L.SimpleRNNCell, _cell_getter),
    (L.LSTMCell, _cell_getter),
    (L.GRUCell, _cell_getter),
    (L.StackedRNNCells, _delegating(lambda l: list(l.cells))),
    (L.RNN, _delegating(lambda l: [l.cell])),
    (L.Bidirectional, _delegating(lambda l: [l.forward_layer, l.backward_layer])),
    (L.TimeDistributed, _delegating(lambda l: [l.layer])),
]:
    _REGISTRY.append((_cls, _getter))
del L, _cls, _getter


def _custom_getter(layer):
    return [
        (w, masking.Layout(in_axis=-2, out_axis=-1) if len(w.shape) >= 2 else
         masking.Layout(in_axis=None, out_axis=None))
        for w in layer.get_prunable_weights()
    ]


def _find_getter(layer):
    if callable(getattr(layer, "get_prunable_weights", None)):
        return _custom_getter
    for cls, getter in _REGISTRY:
        if isinstance(layer, cls):
            applies = getattr(getter, "applies", None)
            return getter if applies is None or applies(layer) else None
    return None


def _first_call_argument(layer):
    for p in inspect.signature(layer.call).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return p.name
    return None


def _shapes(value):
    return keras.tree.map_structure(lambda t: tuple(t.shape), value)


def weight_path(layer_name, variable):
    """The variable's path below its layer: `'kernel'`, `'query/kernel'`, ...

    Unique within a layer (the four kernels of a MultiHeadAttention all have
    the *name* `kernel`), and the same for a layer, its clone and the layer
    inside a `PruneWrapper`: the key kprune uses for per-weight results.
    """
    parts = variable.path.split("/")
    owners = [i for i, part in enumerate(parts[:-1]) if part == layer_name]
    if owners:
        parts = parts[owners[-1] + 1:]
    return "/".join(parts)


def is_prunable(layer):
    """Whether kprune knows which weights of `layer` to prune."""
    return not isinstance(layer, PruneWrapper) and _find_getter(layer) is not None


def prunable_weights(layer, include_bias=False):
    """The `(variable, Layout)` pairs kprune prunes in a built `layer`.

    Args:
        layer: a built Keras layer.
        include_bias: also return the layer's `bias`, if it has one.
    """
    getter = _find_getter(layer)
    if getter is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not prunable: "
            f"kprune prunes Dense, Conv*, SeparableConv*, DepthwiseConv*, "
            f"Embedding, EinsumDense, MultiHeadAttention, SimpleRNN/LSTM/GRU "
            f"(and Bidirectional or TimeDistributed around a prunable layer), "
            f"layers registered with "
            f"kprune.register_prunable, and layers defining "
            f"get_prunable_weights()."
        )
    pairs = list(getter(layer))
    if include_bias and getattr(layer, "bias", None) is not None:
        pairs.append((layer.bias, _BIAS_LAYOUT))
    return pairs


# --------------------------------------------------------------------------
# The constraint that keeps pruned weights at exactly zero
# --------------------------------------------------------------------------


class MaskConstraint(keras.constraints.Constraint):
    """Sets a weight to exactly zero where its mask is zero, after every update.

    Keras optimizers call `variable.constraint(variable)` right after applying
    each update, inside the compiled step. This keeps stored pruned weights at
    exactly zero whatever the optimizer's momentum or weight decay do, and
    `where` semantics keep them zero even when the update is not finite (a
    NaN loss gives NaN only in the kept weights). A constraint the layer
    already had runs first.

    Args:
        mask: the mask variable.
        inner: the variable's previous constraint, or None.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        w = ops.convert_to_tensor(w)
        keep = ops.not_equal(backend.read_mask(self.mask), 0)
        return ops.where(keep, w, ops.zeros((), w.dtype))


# --------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------

#: dtype of the stored pruning step: int64, except on JAX without x64 mode,
#: where Keras stores int64 variables as int32 (with a warning).
STEP_DTYPE = "int32" if backend.name == "jax" else "int64"

NO_CALLBACK_MESSAGE = (
    "kprune: layer '{name}' is being trained without kprune.PruningCallback. "
    "Pass callbacks=[kprune.PruningCallback()] to model.fit(...), or call "
    "kprune.Pruner(model).start() before a custom training loop."
)


_JAX_TRAIN_STEP_MESSAGE = (
    "kprune: layer '{name}' is being trained on JAX by a custom train_step, "
    "whose optimizer constraints cannot see the masks, so pruned weights "
    "would not stay zero. Use Keras' own train_step (do not override it), or "
    "in a custom JAX loop apply `where(mask, w, 0)` with the masks from the "
    "state after `optimizer.stateless_apply` (see kprune.Pruner)."
)


class MaskedWeights:
    """The masks of one pruned layer: what every mask update works on.

    Shared by `PruneWrapper` (a layer around the pruned layer) and the groups
    of `kprune.PrunedModel` (layers anywhere inside a model, held by the
    model): `Pruner`, `PruningCallback`, `strip_pruning` and the reports see
    the same interface, whoever owns the variables.

    Attributes:
        layer: the pruned Keras layer.
        pruning_schedule: its schedule, or None for fixed masks.
        granularity: a `kprune.core.masking.Granularity`.
        scope: `"layer"` or `"global"`.
    """

    def _create_mask_state(self, owner, layer, granularity, prune_bias, prefix=""):
        """Creates, as variables of `owner` (a Keras layer), one mask per
        pruned weight of `layer` and the step counter, and puts a
        `MaskConstraint` on each pruned weight."""
        self._pruned = []  # list of (variable, mask variable, Layout)
        self.armed = getattr(self, "armed", False)
        self._assign_fns = getattr(self, "_assign_fns", {})
        # A layer kprune cannot prune (wrapped with allow_no_masks=True) gets no masks.
        pairs = prunable_weights(layer, include_bias=prune_bias) if is_prunable(layer) else []
        for index, (weight, layout) in enumerate(pairs):
            granularity.validate(
                tuple(weight.shape), layout, name=f"layer '{layer.name}' weight '{weight.name}'"
            )
            mask = owner.add_weight(
                name=f"{prefix}{weight.name}_mask_{index}",
                shape=weight.shape,
                dtype=weight.dtype,
                initializer="ones",
                trainable=False,
                aggregation="only_first_replica",
            )
            if not isinstance(weight.constraint, MaskConstraint):
                weight.constraint = MaskConstraint(mask, weight.constraint)
            self._pruned.append((weight, mask, layout))
        self.pruning_step = owner.add_weight(
            name=f"{prefix}pruning_step",
            shape=(),
            dtype=STEP_DTYPE,
            initializer=keras.initializers.Constant(-1),
            trainable=False,
            aggregation="only_first_replica",
        )

    @property
    def label(self):
        """The pruned layer's key in results: its name (a `PruneWrapper`),
        or its path in the model (a `PrunedModel` group)."""
        return self.layer.name

    @property
    def prunable_weights(self):
        """The pruned variables of the wrapped layer."""
        return [w for w, _, _ in self._pruned]

    @property
    def masks(self):
        """The mask variables, in the order of `prunable_weights`."""
        return [m for _, m, _ in self._pruned]

    @property
    def layouts(self):
        """The `masking.Layout` of each pruned variable."""
        return [layout for _, _, layout in self._pruned]

    @property
    def step(self):
        """The pruning step stored in the layer (-1 before training)."""
        return int(keras.ops.convert_to_numpy(self.pruning_step))

    def magnitude_scores(self):
        """`|w|` per pruned weight, as numpy arrays: the magnitude scores."""
        return [np.abs(keras.ops.convert_to_numpy(w)) for w in self.prunable_weights]

    def assign_masks(self, masks, step=None):
        """Sets the masks and zeroes the pruned weights at once.

        Args:
            masks: one boolean or 0/1 array per pruned weight, in the order of
                `prunable_weights`.
            step: if given, also stored as the layer's `pruning_step` (the
                step of this mask update), in the same compiled call.
        """
        masks = list(masks)
        if len(masks) != len(self._pruned):
            raise ValueError(
                f"Layer '{self.layer.name}' has {len(self._pruned)} pruned "
                f"weights, got {len(masks)} masks."
            )
        assign_masks([self], [masks], step)

    def _mask_tensors(self, masks):
        """Validated bool tensors, one per pruned weight."""
        tensors = []
        for (weight, _, _), mask in zip(self._pruned, masks):
            mask = np.asarray(mask)
            if mask.shape != tuple(weight.shape):
                raise ValueError(
                    f"Mask for '{weight.path}' must have shape "
                    f"{tuple(weight.shape)}, got {mask.shape}."
                )
            tensors.append(ops.convert_to_tensor(mask.astype(bool, copy=False)))
        return tensors

    def _assign_masks_graph(self, masks, step):
        if step is not None:
            self.pruning_step.assign(step)
        for (weight, mask_var, _), mask in zip(self._pruned, masks):
            mask_var.assign(ops.cast(mask, mask_var.dtype))
            weight.assign(ops.where(mask, weight.value, ops.zeros((), weight.dtype)))

    def set_step(self, step):
        """Stores the pruning step (used by the callback for save/resume)."""
        self.pruning_step.assign(np.asarray(int(step), STEP_DTYPE))



def check_trainable(masked):
    """Raises if `masked` (a `MaskedWeights`) is being trained without what
    keeps its masks right: the callback (for a schedule), or on JAX a train
    step whose constraints see the masks. Checked in Python, when the train
    step is traced or run eagerly."""
    if masked.pruning_schedule is not None and not masked.armed:
        raise ValueError(NO_CALLBACK_MESSAGE.format(name=masked.layer.name))
    if not backend.masks_visible():
        raise ValueError(_JAX_TRAIN_STEP_MESSAGE.format(name=masked.layer.name))


@keras.saving.register_keras_serializable(package="kprune")
class PruneWrapper(MaskedWeights, keras.layers.Wrapper):
    """Wraps a prunable layer and computes with its weights times a mask.

    Args:
        layer: the Keras layer to prune (Dense, Conv*, SeparableConv*,
            DepthwiseConv*, Embedding, EinsumDense, MultiHeadAttention,
            SimpleRNN/LSTM/GRU, Bidirectional or TimeDistributed around one of
            these, a registered type, or a layer defining
            `get_prunable_weights()`).
        pruning_schedule: a `kprune.ConstantSparsity` or
            `kprune.PolynomialDecay`, or `None` for **fixed masks** (the masks
            never change and no callback is needed; pruning at
            initialisation uses this).
        granularity: `"unstructured"` (default), `kprune.Block((r, c))`,
            `kprune.NM(n, m)` or `kprune.Channel(norm)`.
        scope: `"layer"` (own threshold) or `"global"` (one threshold shared
            with every other global-scope wrapper of the model).
        prune_bias: also mask the wrapped layer's `bias` (if it has one).
            Used by `kprune.prune_at_init(..., include_bias=True)`.
        allow_no_masks: wrap a layer kprune cannot prune (Flatten, Dropout,
            BatchNormalization, ...) with no masks: it computes exactly as
            the bare layer (tfmot's behaviour, used by `kprune.tfmot`).
            Default False: such a layer raises `ValueError`.
        **kwargs: standard layer arguments (`name`, ...). `input_shape=`
            (or the wrapped layer's own `input_shape=`) makes the wrapper
            usable as the first layer of a `keras.Sequential`.

    Returns:
        A layer that behaves like `layer`, with masked weights.

    Example:
    ```python
    model = keras.Sequential([
        keras.Input((784,)),
        kprune.PruneWrapper(keras.layers.Dense(10), kprune.ConstantSparsity(0.8)),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, callbacks=[kprune.PruningCallback()])
    ```
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        granularity=None,
        scope="layer",
        prune_bias=False,
        allow_no_masks=False,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"PruneWrapper wraps a Keras layer, got {type(layer).__name__}."
            )
        if isinstance(layer, PruneWrapper):
            raise ValueError(f"Layer '{layer.name}' is already a PruneWrapper.")
        checks.check_bool("allow_no_masks", allow_no_masks)
        if not is_prunable(layer) and not allow_no_masks:
            prunable_weights(layer)  # raises the descriptive error
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
        checks.check_bool("prune_bias", prune_bias)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        # `input_shape=` of the wrapper, or of the wrapped layer
        # (`PruneWrapper(Dense(2, input_shape=(3,)))`): a Sequential model
        # whose first layer this is then starts with that InputLayer, as
        # Keras does for the bare layer (Keras already warned about the
        # argument when the layer was made, so it is not passed on again).
        input_shape = kwargs.pop("input_shape", None)
        if input_shape is None:
            input_shape = getattr(layer, "_input_shape_arg", None)
        super().__init__(layer, **kwargs)
        if input_shape is not None:
            self._input_shape_arg = tuple(input_shape)
        self.pruning_schedule = schedules_lib.get_schedule(pruning_schedule)
        self.granularity = masking.get_granularity(granularity)
        self.scope = scope
        self.prune_bias = bool(prune_bias)
        self.allow_no_masks = bool(allow_no_masks)
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._pruned = []  # list of (variable, mask variable, Layout)
        # Set by Pruner.start() (PruningCallback.on_train_begin): training a
        # scheduled wrapper before that raises an error naming the callback.
        self.armed = False
        # The model's `MaskAssigner`, keyed by the wrappers it updates (see
        # `model_assigner`); held here, so it dies with the model.
        self._assign_fns = {}

    # -- build / call / config, in Keras' shape ---------------------------

    def build(self, input_shape=None):
        super().build(input_shape)
        self._create_mask_state(self, self.layer, self.granularity, self.prune_bias)
        self.built = True

    def __call__(self, *args, **kwargs):
        if not self.layer.built:
            self._build_layer(args, kwargs)
        return super().__call__(*args, **kwargs)

    def _build_layer(self, args, kwargs):
        """Builds the wrapped layer from the shapes of the call arguments.

        `keras.layers.Wrapper.build` only sees the first input's shape.
        Shapes are matched to the wrapped layer's `build` arguments by name,
        as Keras itself does, so MultiHeadAttention's
        `build(query_shape, value_shape, key_shape=None)` gets every shape,
        also when it is called by keyword (`mha(query=q, value=v)`).
        """
        try:
            bound = inspect.signature(self.layer.call).bind_partial(*args, **kwargs).arguments
        except TypeError:
            return  # Keras raises its own error on the call itself.
        params = [
            p for p in inspect.signature(self.layer.build).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if len(params) > 1:
            shapes = {}
            for p in params:
                name = p.name[: -len("_shape")] if p.name.endswith("_shape") else p.name
                if bound.get(name) is not None:
                    shapes[p.name] = _shapes(bound[name])
            self.layer.build(**shapes)
        elif bound:
            # The first call argument, whatever its name, like Keras does.
            self.layer.build(_shapes(next(iter(bound.values()))))

    def call(self, inputs=None, *args, training=None, **kwargs):
        if inputs is None:
            # Called by keyword, e.g. `mha(query=q, value=v)`.
            inputs = kwargs.pop(_first_call_argument(self.layer))
        if training:
            check_trainable(self)
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        # The stored weights are the masked weights (see the module
        # docstring): no masking in the forward pass.
        return self.layer(inputs, *args, **kwargs)

    def get_build_config(self):
        # The wrapped layer's own build config too: MultiHeadAttention needs
        # every input shape to rebuild when a saved model is loaded.
        config = super().get_build_config()
        inner = self.layer.get_build_config() if self.layer.built else None
        if inner:
            config = {**(config or {}), "layer_build_config": inner}
        return config

    def build_from_config(self, config):
        config = dict(config or {})
        # Without the wrapped layer's own config, the wrapper's applies to it
        # (the shapes the wrapper is called with are the layer's).
        inner = config.pop("layer_build_config", None) or config
        if inner and not self.layer.built:
            self.layer.build_from_config(inner)
        if "input_shape" in config or "shapes_dict" in config:
            shapes = config.get("shapes_dict") or {}
            self.build(config.get("input_shape", next(iter(shapes.values()), None)))
        elif self.layer.built and not self.built:
            self.build(None)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        # Masking changes values, not shapes: the wrapped layer knows its
        # output spec (MultiHeadAttention's needs every input, not the first).
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = {
            "pruning_schedule": None
            if self.pruning_schedule is None
            else keras.saving.serialize_keras_object(self.pruning_schedule),
            "granularity": masking.serialize_granularity(self.granularity),
            "scope": self.scope,
        }
        if self.prune_bias:
            config["prune_bias"] = True
        if self.allow_no_masks:
            config["allow_no_masks"] = True
        return {**super().get_config(), **config}

def assign_masks(wrappers, masks, step=None):
    """Sets the masks of several wrappers, and zeroes their pruned weights.

    For one-off assignments (pruning at initialisation, one-shot pruning,
    lottery-ticket rewinds): it runs eagerly and traces nothing. Repeated
    updates during training go through the model's `MaskAssigner` (see
    `model_assigner`), compiled once per model.

    Args:
        wrappers: `PruneWrapper`s (or other `MaskedWeights`).
        masks: per wrapper, one boolean or 0/1 array per pruned weight.
        step: if given, stored as every wrapper's `pruning_step`.
    """
    wrappers = list(wrappers)
    tensors = [w._mask_tensors(ms) for w, ms in zip(wrappers, masks)]  # noqa: SLF001 - same module
    value = None if step is None else np.asarray(int(step), STEP_DTYPE)
    for w, ms in zip(wrappers, tensors):
        w._assign_masks_graph(ms, value)  # noqa: SLF001 - same module


class MaskAssigner:
    """Assigns the masks of a fixed list of `MaskedWeights` in one call.

    The mask update of a training loop: every mask and its zeroed weight are
    written once per update, in one call that is compiled where the backend
    compiles (`tf.function` on TensorFlow, traced ONCE for the life of the
    model: the structure of its inputs never changes, the step is a tensor);
    on JAX and torch the assigns run eagerly (they run between compiled or
    eager steps, on the synced variables). Get the model's one assigner with
    `model_assigner(wrappers)`.

    Args:
        wrappers: the `MaskedWeights` it assigns, in a fixed order.

    Example:
    >>> assigner = model_assigner(pruner.wrappers)
    >>> assigner([[mask] for mask in masks], step=10)
    """

    def __init__(self, wrappers):
        self.wrappers = tuple(wrappers)
        # The thresholds of the last update, where the next one looks first
        # (kept here, with the one compiled assign, so every Pruner of the
        # model shares them).
        self.memo = masking.SelectionMemo()
        self.compiled = backend.compiles_assign
        self._fn = backend.compile_assign(self._assign) if self.compiled else self._assign

    def _assign(self, all_masks, step):
        for w, ms in zip(self.wrappers, all_masks):
            if ms is not None:
                w._assign_masks_graph(ms, step)  # noqa: SLF001 - same module

    def __call__(self, masks, step):
        """Assigns `masks[i]` (one array per pruned weight, or None: unchanged)
        to `self.wrappers[i]`, and stores `step` in every wrapper."""
        tensors = []
        for w, ms in zip(self.wrappers, masks):
            if ms is not None:
                tensors.append(w._mask_tensors(ms))  # noqa: SLF001 - same module
            elif self.compiled:
                # The compiled function always gets every mask (one trace):
                # an unchanged one is its current value, read on the device.
                tensors.append([ops.not_equal(m.value, 0) for m in w.masks])
            else:
                tensors.append(None)
                w.set_step(step)
        self._fn(tensors, np.asarray(int(step), STEP_DTYPE))

    @property
    def tracing_count(self):
        """How many times the compiled function was traced (0 when eager)."""
        count = getattr(self._fn, "experimental_get_tracing_count", None)
        return count() if count is not None else 0


def model_assigner(wrappers):
    """The one `MaskAssigner` of this list of wrappers (a model's scheduled
    wrappers), built on first use and kept with the wrappers, so every
    `Pruner`, `PruningCallback` and `kprune.update_masks` call on the model
    reuses it (and its one trace).

    Args:
        wrappers: `MaskedWeights`, in the order the masks will be given.

    Returns:
        A `MaskAssigner`.
    """
    wrappers = tuple(wrappers)
    key = tuple(id(w) for w in wrappers)
    cache = wrappers[0]._assign_fns  # noqa: SLF001 - same module
    assigner = cache.get(key)
    if assigner is None:
        assigner = cache[key] = MaskAssigner(wrappers)
    return assigner
