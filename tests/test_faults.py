"""Faults during training: NaN losses, callback order, fits without the
callback, interrupted runs. Each keeps the pruned weights exactly zero and the
schedule at the right step."""

import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kprune
from conftest import ExactZeros, small_mlp, toy_data
from kprune.core.model_tree import find_wrappers


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _pruned(schedule=None):
    pruned = kprune.prune_low_magnitude(
        small_mlp(), schedule or kprune.PolynomialDecay(0.0, 0.75, 0, 12, frequency=1))
    pruned.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned


def test_a_nan_loss_leaves_pruned_weights_exactly_zero_not_nan():
    pruned = kprune.prune_low_magnitude(small_mlp(), kprune.ConstantSparsity(0.5, frequency=1))
    # A learning rate that blows the weights up: inf, then NaN losses and updates.
    pruned.compile(keras.optimizers.SGD(1e30),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = toy_data(64)
    history = pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                         callbacks=[kprune.PruningCallback()])
    assert not np.isfinite(history.history["loss"][-1])  # the fault did happen
    for w in find_wrappers(pruned):
        kernel, mask = _np(w.prunable_weights[0]), _np(w.masks[0])
        assert np.all(kernel[mask == 0] == 0)  # exactly zero, not NaN
        assert int(mask.sum()) == round(mask.size * 0.5)  # exact kept count despite NaN scores


@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_model_checkpoint_before_or_after_the_callback_resumes_at_the_right_step(
        tmp_path, checkpoint_first):
    x, y = toy_data(64)
    path = str(tmp_path / "ckpt.keras")
    pruned = _pruned()
    checkpoint = keras.callbacks.ModelCheckpoint(path)
    callbacks = [kprune.PruningCallback()]
    callbacks = [checkpoint] + callbacks if checkpoint_first else callbacks + [checkpoint]
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
    loaded = keras.models.load_model(path)
    assert int(_np(loaded.optimizer.iterations)) == 8
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False,
               callbacks=[kprune.PruningCallback(), ExactZeros()])
    assert {w.step for w in find_wrappers(loaded)} == {12}
    for w in find_wrappers(loaded):
        mask = _np(w.masks[0])
        assert int(mask.sum()) == round(mask.size * 0.25)  # the schedule's end: 75%


def test_a_second_fit_without_the_callback_raises_and_changes_nothing():
    pruned = _pruned()
    x, y = toy_data(32)
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.PruningCallback()])
    before = [np.array(_np(v)) for v in pruned.weights]
    with pytest.raises(ValueError, match="PruningCallback"):
        pruned.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(before, pruned.weights):
        np.testing.assert_array_equal(a, _np(b))
    # ... and a third fit with the callback trains again.
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kprune.PruningCallback()])


_TRAIN = textwrap.dedent("""
    import os, sys, time
    import keras, numpy as np
    import kprune
    sys.path.insert(0, {tests!r})
    from conftest import small_mlp, toy_data
    keras.utils.set_random_seed(0)
    x, y = toy_data(256)
    path = {path!r}
    if os.path.exists(path):
        model = keras.models.load_model(path)
        epochs, initial = 6, int(keras.ops.convert_to_numpy(model.optimizer.iterations)) // 16
    else:
        model = kprune.prune_low_magnitude(
            small_mlp(), kprune.PolynomialDecay(0.0, 0.8, 0, 60, frequency=4))
        model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        epochs, initial = 6, 0

    class Stall(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if {stall} and epoch == 2:
                print("READY", flush=True)
                time.sleep(600)

    model.fit(x, y, batch_size=16, epochs=epochs, initial_epoch=initial, verbose=0, shuffle=False,
              callbacks=[kprune.PruningCallback(), keras.callbacks.ModelCheckpoint(path), Stall()])
    np.savez({out!r}, *[keras.ops.convert_to_numpy(v) for v in model.weights])
""")


@pytest.mark.tensorflow
def test_kill_9_during_fit_and_resume_equals_an_uninterrupted_run(tmp_path):
    tests = os.path.dirname(__file__)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def script(path, out, stall):
        return _TRAIN.format(tests=tests, path=str(path), out=str(out), stall=stall)

    straight = tmp_path / "straight.npz"
    subprocess.run([sys.executable, "-c", script(tmp_path / "a.keras", straight, False)],
                   check=True, env=env, timeout=300)
    ckpt, resumed = tmp_path / "b.keras", tmp_path / "resumed.npz"
    proc = subprocess.Popen([sys.executable, "-c", script(ckpt, resumed, True)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "READY"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    subprocess.run([sys.executable, "-c", script(ckpt, resumed, False)],
                   check=True, env=env, timeout=300)
    a, b = np.load(straight), np.load(resumed)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
