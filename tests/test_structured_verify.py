"""Tests for kprune.structured.verify: prune() checks its own result."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from structured_models import L, randomize, resnet_block_model  # noqa: E402

from kprune.structured import (  # noqa: E402
    ChannelPruner,
    PassthroughHandler,
    PruningVerificationError,
    register_handler,
)
from kprune.structured.verify import random_inputs  # noqa: E402


class Reverse(keras.layers.Layer):
    """Reverses the channel order: NOT a passthrough, whatever a handler says."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)


def _reverse_model():
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 1, name="a")(x)
    h = Reverse(name="rev")(h)
    h = L.Conv2D(4, 1, name="b")(h)
    model = keras.Model(x, L.Dense(2, name="head")(L.Flatten()(h)))
    # Filters of `a` with growing L1 norms, so the 4 removed are 0..3: a set
    # that reversing does not map onto itself (a symmetric one, e.g. {0, 1,
    # 6, 7}, would make the mistake invisible, and random weights draw one
    # on some backends).
    kernel = np.random.default_rng(0).uniform(0.5, 1.0, (1, 1, 3, 8)) * np.arange(1, 9)
    model.get_layer("a").kernel.assign(kernel.astype("float32"))
    return model


def test_wrong_handler_is_caught_and_the_group_named():
    register_handler(Reverse, PassthroughHandler())  # a mistaken custom handler
    try:
        model = randomize(_reverse_model())
        pruner = ChannelPruner(model, pruning_ratio=0.5, custom_objects={"Reverse": Reverse})
        with pytest.raises(PruningVerificationError, match=r"group \d+ \(producers \['a'\]") as e:
            pruner.prune()
        assert e.value.difference > 1e-4 and e.value.groups
        thin = pruner.prune(verify=False)  # the check can be turned off
        assert thin.get_layer("a").filters == 4
    finally:
        register_handler(Reverse, None)


def test_verify_records_the_difference():
    pruner = ChannelPruner(randomize(resnet_block_model()), pruning_ratio=0.5)
    pruner.prune()
    assert 0.0 <= pruner.verified_difference <= 1e-5


def test_random_inputs_fill_unknown_dims():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, L.Conv2D(2, 1)(x))
    assert random_inputs(model).shape == (2, 32, 32, 3)
    assert random_inputs(model, input_shape=(5, 7, 3)).shape == (2, 5, 7, 3)
    tok = keras.Input((4,), dtype="int32")
    ids = random_inputs(keras.Model(tok, L.Embedding(3, 2)(tok)))
    assert ids.dtype == np.int32 and set(np.unique(ids)) <= {0, 1}


def test_unknown_spatial_model_prunes_and_verifies():
    x = keras.Input((None, None, 3))
    h = L.Conv2D(8, 3, padding="same", name="a")(x)
    h = L.Conv2D(6, 3, padding="same", name="b")(h)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h))
    pruner = ChannelPruner(randomize(keras.Model(x, out)), pruning_ratio=0.5)
    thin = pruner.prune(input_shape=(9, 9, 3))
    assert thin.get_layer("a").filters == 4 and pruner.verified_difference <= 1e-5
