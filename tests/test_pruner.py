"""Tests of the mask-update path of `kprune.Pruner` (kprune/pruner.py) and
the model's one `MaskAssigner` (kprune/wrapper.py):

* one compiled assign per model, traced once however often masks update,
  with no TensorFlow retracing warning;
* incremental updates (each selection starts at the last threshold) give
  exactly the masks of a fresh `compute_masks`, for every granularity and
  global scope, as the weights drift and the sparsity grows;
* the stored weights stay exactly zero where the masks are zero.
"""

import contextlib
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kprune  # noqa: E402
from kprune import backend  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.wrapping import find_wrappers  # noqa: E402
from kprune.core.wrapper import model_assigner  # noqa: E402


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6, 6, 4)),
        keras.layers.Conv2D(8, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(16),
        keras.layers.Dense(8),
    ])


def _numpy(v):
    return keras.ops.convert_to_numpy(v)


@contextlib.contextmanager
def _tensorflow_logs_visible():
    """TensorFlow's Python logger at WARNING and propagating to the root
    (where caplog listens), whatever earlier tests or imports set."""
    tf_logger = logging.getLogger("tensorflow")
    level, propagate = tf_logger.level, tf_logger.propagate
    tf_logger.setLevel(logging.WARNING)
    tf_logger.propagate = True
    try:
        yield
    finally:
        tf_logger.setLevel(level)
        tf_logger.propagate = propagate


def test_repeated_updates_trace_the_assign_once(caplog):
    pruned = kprune.prune_low_magnitude(
        _model(), kprune.PolynomialDecay(0.0, 0.8, 0, 20, frequency=1), scope="global")
    wrappers = find_wrappers(pruned)
    with caplog.at_level(logging.WARNING), _tensorflow_logs_visible():
        for step in range(12):
            kprune.update_masks(pruned, step)
        pruner = kprune.Pruner(pruned).start()
        for _ in range(8):
            pruner.step()
        for _ in range(3):
            pruner.update_masks()
        # One-off assignments (lottery rewinds, pruning at init) trace nothing.
        for _ in range(8):
            for w in wrappers:
                w.assign_masks([_numpy(m) for m in w.masks])
    assigner = model_assigner(wrappers)
    assert assigner is model_assigner(kprune.Pruner(pruned).wrappers)  # one per model
    assert assigner.tracing_count == (1 if backend.compiles_assign else 0)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    if backend.name == "tensorflow":
        # The log does show the warning when a function is retraced often
        # (what the old per-call assign functions did): the check can fail.
        import tensorflow as tf  # noqa: PLC0415  (TensorFlow leg only)

        def identity(x):
            return x

        with caplog.at_level(logging.WARNING), _tensorflow_logs_visible():
            for i in range(8):
                tf.function(identity)(tf.constant(i))
        if not [r for r in caplog.records if "retracing" in r.getMessage()]:
            # Seen once in a full-suite run: some earlier state keeps
            # TensorFlow's warning out of the log; the trace count asserted
            # above is the check that does not depend on logging.
            pytest.skip("TensorFlow's retracing warning does not reach the log in this "
                        "process (positive control); the trace count above is asserted")


def test_one_wrapper_due_of_several_keeps_the_others_and_the_single_trace():
    # Two schedules: most updates touch one wrapper; the compiled assign gets
    # every mask anyway (the others unchanged), so its one trace serves all.
    model = keras.Sequential([
        keras.Input((10,)),
        kprune.PruneWrapper(keras.layers.Dense(12), kprune.ConstantSparsity(0.5, frequency=1)),
        kprune.PruneWrapper(keras.layers.Dense(6), kprune.ConstantSparsity(0.5, frequency=4)),
    ])
    wrappers = find_wrappers(model)
    pruner = kprune.Pruner(model).start()
    rng = np.random.default_rng(0)
    for _ in range(11):
        frozen = _numpy(wrappers[1].masks[0]).copy()
        due = pruner.is_due()
        # step() applies the masks of schedule step current_step + 2.
        target = pruner.current_step + 2
        slow_due = wrappers[1].pruning_schedule.next_update(target) == target
        for w in wrappers:
            v = w.prunable_weights[0]
            v.assign(_numpy(v) + rng.normal(size=v.shape).astype("float32"))
        pruner.step()
        assert due
        if not slow_due:
            np.testing.assert_array_equal(_numpy(wrappers[1].masks[0]), frozen)
        for w in wrappers:
            assert int(_numpy(w.masks[0]).sum()) == masking.kept_count(int(np.prod(w.masks[0].shape)), 0.5)
    assert model_assigner(wrappers).tracing_count == (1 if backend.compiles_assign else 0)


@pytest.mark.parametrize(
    "granularity", [masking.Unstructured(), masking.Block((2, 2)), masking.NM(2, 4),
                    masking.Channel("l2")], ids=repr)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_incremental_updates_equal_fresh_masks(granularity, scope):
    if scope == "global" and not granularity.supports_global:
        pytest.skip("NM is layer-local: global scope applies it per layer")
    final = 0.5 if isinstance(granularity, masking.NM) else 0.8
    schedule = kprune.PolynomialDecay(0.2, final, 0, 10, frequency=1)
    pruned = kprune.prune_low_magnitude(_model(1), schedule, granularity=granularity, scope=scope)
    pruner = kprune.Pruner(pruned).start()
    wrappers = pruner.wrappers
    rng = np.random.default_rng(0)
    for step in range(1, 12):
        # An optimizer step: the kept weights drift, the pruned ones stay 0.
        for w in wrappers:
            for v, m in zip(w.prunable_weights, w.masks):
                drift = 0.02 * rng.standard_normal(v.shape).astype("float32")
                v.assign((_numpy(v) + drift) * _numpy(m))
        before = {(i, j): np.abs(_numpy(v)) for i, w in enumerate(wrappers)
                  for j, v in enumerate(w.prunable_weights)}
        pruner.step()  # the masks of schedule step `step + 1`, from `before`
        want = masking.compute_masks(
            before, float(schedule.sparsity(step + 1)), granularity=granularity,
            layouts={(i, j): w.layouts[j] for i, w in enumerate(wrappers)
                     for j in range(len(w.prunable_weights))},
            scope=scope)
        for (i, j), mask in want.items():
            got = _numpy(wrappers[i].masks[j]) != 0
            np.testing.assert_array_equal(got, mask)
            # Exact zeros where the mask is zero.
            assert not np.any(_numpy(wrappers[i].prunable_weights[j])[~mask])
