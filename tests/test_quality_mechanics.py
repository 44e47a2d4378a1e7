"""The mechanics that decide pruned accuracy (benchmarks/quality.py).

benchmarks/quality.py --mechanics measured, with identical weights, data and
batch order, which of tfmot's mechanics move accuracy when switched on in
kprune one at a time:

* tfmot's weight update (re-mask before the forward pass, pruned weights get
  one optimizer step and may regrow at the next mask update) and a forward
  pass with the stored weights instead of `w * mask` gave bit-identical
  accuracies: pruned weights are exactly zero whenever a mask update reads
  them, so masks only grow and the gradients of kept weights do not depend
  on how pruned ones are handled;
* evaluating the schedule one step ahead (tfmot's `pruning_step` is
  incremented before its mask update) reproduced tfmot's accuracies exactly:
  it is the one difference between the libraries' trajectories.

These tests pin the kprune side of each finding: which schedule step a
training batch runs with, that masks only grow, and that the forward pass
with the stored weights trains bit-identically to the masked one.
"""

import keras
import numpy as np

import kprune
from kprune.core.model_tree import find_wrappers


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(10, name="fc"),
                             keras.layers.Dense(3, name="out")])


def _data(n=80):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 8)).astype("float32"), rng.integers(0, 3, n)


class _MaskRecorder(keras.callbacks.Callback):
    """Records the `fc` mask at the start of every training batch."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def on_train_batch_begin(self, batch, logs=None):
        wrapper = [w for w in find_wrappers(self.model) if w.layer.name == "fc"][0]
        self.masks.append(keras.ops.convert_to_numpy(wrapper.masks[0]).astype(bool))


def _fit_recording(schedule, lr=0.05, forward_stored=False, seed=0):
    x, y = _data()
    pruned = kprune.prune_low_magnitude(_model(seed), schedule)
    if forward_stored:
        for w in find_wrappers(pruned):
            def call(inputs, *args, training=None, _layer=w.layer, **kwargs):
                return _layer(inputs, *args, **kwargs)  # stored weights, no `w * mask`
            w.call = call
    pruned.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    recorder = _MaskRecorder()
    pruned.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
               callbacks=[kprune.PruningCallback(), recorder])
    return pruned, recorder.masks


def test_batch_k_trains_with_the_mask_of_schedule_step_k_plus_1():
    # As in tfmot: 0-based batch k trains with the mask of schedule step
    # k + 1 (tfmot increments pruning_step before its mask update). This is
    # what makes kprune's accuracy equal tfmot's with the same recipe
    # (benchmarks/quality.py, docs/quality.md).
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8, frequency=2)
    _, masks = _fit_recording(schedule)
    assert len(masks) == 10
    n = masks[0].size
    for k, mask in enumerate(masks):
        last_update = min(k + 1 - (k + 1) % 2, 8)
        expected_zeros = n - round(n * (1 - schedule.sparsity(last_update)))
        assert n - int(mask.sum()) == expected_zeros, f"batch {k}"


def test_masks_only_grow_pruned_weights_never_regrow():
    # Adam at a large learning rate would move pruned weights past the
    # threshold if they were not exactly zero when the next update reads them.
    schedule = kprune.PolynomialDecay(0.3, 0.9, begin_step=0, end_step=8, frequency=1)
    pruned, masks = _fit_recording(schedule, lr=0.5)
    for k in range(1, len(masks)):
        assert not np.any(masks[k] & ~masks[k - 1]), f"a weight pruned before batch {k} came back"
    fc = [w for w in find_wrappers(pruned) if w.layer.name == "fc"][0]
    kernel = keras.ops.convert_to_numpy(fc.prunable_weights[0])
    assert np.all(kernel[~masks[-1]] == 0.0)


def test_forward_with_stored_weights_trains_bit_identically():
    schedule = kprune.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=8, frequency=2)
    masked, masks_a = _fit_recording(schedule, lr=0.05)
    stored, masks_b = _fit_recording(schedule, lr=0.05, forward_stored=True)
    for a, b in zip(masks_a, masks_b):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(masked.get_weights(), stored.get_weights()):
        np.testing.assert_array_equal(a, b)
