"""Lottery tickets: IMP removes the stated fraction per round and rewinds exactly."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kprune
from kprune.core import masking
from kprune.methods.lottery import IterativeMagnitudePruning


def _mlp():
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="d1"),
        keras.layers.Dense(3, name="out"),
    ])


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


def _train(model, callbacks=(), epochs=1):
    x, y = _data()
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=list(callbacks))


def _kept(imp):
    return {k: int(m.sum()) for k, m in imp.masks.items()}


def test_global_round_removes_fraction_of_remaining():
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.2)
    remaining = sum(_kept(imp).values())
    for _ in range(3):
        _train(imp.model, [imp.callback()])
        imp.prune()
        now = sum(_kept(imp).values())
        assert now == masking.kept_count(remaining, 0.2)
        remaining = now
    assert imp.round == 3


def test_layer_scope_removes_fraction_per_tensor():
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.5, scope="layer")
    before = _kept(imp)
    _train(imp.model, [imp.callback()])
    imp.prune()
    after = _kept(imp)
    assert after == {k: masking.kept_count(v, 0.5) for k, v in before.items()}


def test_global_round_keeps_the_largest_surviving_magnitudes():
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.3)
    _train(imp.model, [imp.callback()])
    trained = {w.layer.name: np.abs(keras.ops.convert_to_numpy(w.prunable_weights[0]))
               for w in imp.wrappers}
    imp.prune(rewind=False)
    kept = np.concatenate([trained[k[0]][m] for k, m in imp.masks.items()])
    dropped = np.concatenate([trained[k[0]][~m] for k, m in imp.masks.items()])
    assert kept.min() >= dropped.max()


def test_rewind_to_init_restores_the_saved_weights_exactly():
    imp = IterativeMagnitudePruning(_mlp())
    init = [w.copy() for w in imp.rewind_weights]
    _train(imp.model, [imp.callback()], epochs=2)
    imp.prune()
    masks = {w.layer.name: keras.ops.convert_to_numpy(w.masks[0]).astype(bool) for w in imp.wrappers}
    for var, saved in zip(imp._rewound_variables(), init):
        value = keras.ops.convert_to_numpy(var)
        layer = var.path.split("/")[-2]
        if var.name == "kernel":
            mask = masks[layer]
            np.testing.assert_array_equal(value[mask], saved[mask])
            assert not value[~mask].any()
        else:
            np.testing.assert_array_equal(value, saved)


def test_pruned_weights_are_never_revived():
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.4)
    _train(imp.model, [imp.callback()])
    imp.prune()
    first = imp.masks
    _train(imp.model, [imp.callback()])
    imp.prune()
    for k, m in imp.masks.items():
        assert not (m & ~first[k]).any()


def test_late_rewinding_records_the_weights_after_step_k():
    imp = IterativeMagnitudePruning(_mlp(), rewind_step=2)
    assert imp.rewind_weights is None
    seen = {}

    def record(batch, logs):
        if batch == 1:  # after the 2nd step
            seen["w"] = [np.array(keras.ops.convert_to_numpy(v)) for v in imp._rewound_variables()]

    _train(imp.model, [imp.callback(), keras.callbacks.LambdaCallback(on_train_batch_end=record)])
    assert imp.steps_trained == 4
    for a, b in zip(imp.rewind_weights, seen["w"]):
        np.testing.assert_array_equal(a, b)


def test_prune_before_the_rewind_point_says_how_to_fix():
    imp = IterativeMagnitudePruning(_mlp(), rewind_step=100)
    _train(imp.model, [imp.callback()])
    with pytest.raises(ValueError, match="callbacks=\\[imp.callback\\(\\)\\]"):
        imp.prune()
    assert imp.round == 0 and imp.sparsity == 0.0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 2])
def test_bad_fraction(fraction):
    with pytest.raises((ValueError, TypeError), match="fraction"):
        IterativeMagnitudePruning(_mlp(), fraction=fraction)


def test_caller_model_unchanged():
    model = _mlp()
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]
    imp = IterativeMagnitudePruning(model)
    _train(imp.model, [imp.callback()])
    imp.prune()
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), b)
    assert not any(isinstance(l, kprune.PruneWrapper) for l in model.layers)


def test_save_and_resume(tmp_path):
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.3, rewind_step=1)
    _train(imp.model, [imp.callback()])
    imp.prune()
    path = tmp_path / "imp.keras"
    imp.save(path)
    back = IterativeMagnitudePruning.load(path)
    assert back.get_config() == imp.get_config()
    for k, m in imp.masks.items():
        np.testing.assert_array_equal(back.masks[k], m)
    for a, b in zip(back.rewind_weights, imp.rewind_weights):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.model.weights, imp.model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The resumed run continues exactly like the original.
    imp.prune()
    back.prune()
    for k, m in imp.masks.items():
        np.testing.assert_array_equal(back.masks[k], m)
    assert back.round == 2
    # Still a plain .keras model file.
    plain = keras.saving.load_model(path)
    assert any(isinstance(l, kprune.PruneWrapper) for l in plain.layers)


def test_load_rejects_a_plain_keras_file(tmp_path):
    path = tmp_path / "plain.keras"
    _mlp().save(path)
    with pytest.raises(ValueError, match="without IMP state"):
        IterativeMagnitudePruning.load(path)


def test_reinitialized_keeps_masks_and_draws_new_weights():
    imp = IterativeMagnitudePruning(_mlp())
    _train(imp.model, [imp.callback()])
    imp.prune()
    fresh = imp.reinitialized(seed=3)
    for old, new in zip(imp.wrappers, kprune.core.model_tree.find_wrappers(fresh)):
        mask = keras.ops.convert_to_numpy(old.masks[0]).astype(bool)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new.masks[0]).astype(bool), mask)
        w_new = keras.ops.convert_to_numpy(new.prunable_weights[0])
        w_old = keras.ops.convert_to_numpy(old.prunable_weights[0])
        assert not w_new[~mask].any()
        assert not np.allclose(w_new[mask], w_old[mask])


def test_run_loop_reaches_the_compound_density():
    imp = IterativeMagnitudePruning(_mlp(), fraction=0.5)
    history = imp.run(lambda model, cbs: _train(model, cbs), rounds=2, verbose=0)
    assert [h[0] for h in history] == [0, 1, 2]
    total = sum(m.size for m in imp.masks.values())
    assert sum(_kept(imp).values()) == masking.kept_count(masking.kept_count(total, 0.5), 0.5)


@settings(max_examples=5, deadline=None)
@given(st.floats(0.05, 0.95))
def test_any_fraction_keeps_round_of_remaining(fraction):
    imp = IterativeMagnitudePruning(_mlp(), fraction=fraction)
    total = sum(m.size for m in imp.masks.values())
    imp.prune(rewind=False)
    assert sum(_kept(imp).values()) == masking.kept_count(total, fraction)
