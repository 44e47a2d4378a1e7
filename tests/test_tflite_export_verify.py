"""tflite_export.verify: a tolerance that scales with the outputs, real inputs, honest notes."""

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TFLite export needs TensorFlow")
pytestmark = pytest.mark.tensorflow

import keras  # noqa: E402

import tflite_export  # noqa: E402
from tflite_export.cli import export_main  # noqa: E402


def _large_logit_model():
    """An MLP whose logits reach tens: float32 rounding alone exceeds 1e-5 absolute."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((64,))
    x = keras.layers.Dense(256, activation="relu", name="hidden")(inp)
    x = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, x)
    for layer in model.layers[1:]:
        layer.kernel.assign(layer.kernel.numpy() * 6.0)
    return model


def test_float32_tolerance_is_absolute_within_1_and_relative_above():
    assert tflite_export.tolerance(None) == 1e-5
    assert tflite_export.tolerance(None, scale=0.3) == 1e-5
    assert tflite_export.tolerance(None, scale=44.0) == pytest.approx(4.4e-4)
    assert tflite_export.tolerance("int8", scale=2.0) == pytest.approx(0.2)


def test_a_model_with_large_logits_verifies(tmp_path):
    model = _large_logit_model()
    x = np.random.default_rng(0).normal(size=(32, 64)).astype("float32")
    assert np.abs(model.predict(x, verbose=0)).max() > 20
    data = tflite_export.convert(model, sparsity="dense")
    scale, diff = tflite_export.compare_outputs(model, data, samples=x)
    assert scale > 20
    assert diff <= tflite_export.tolerance(None, scale)


def test_cli_verify_uses_calibration_inputs_and_says_so(tmp_path, capsys):
    model = _large_logit_model()
    path = tmp_path / "big.keras"
    model.save(path)
    x = np.random.default_rng(1).normal(size=(40, 64)).astype("float32")
    np.savez(tmp_path / "calib.npz", x=x)
    out_file = tmp_path / "big.tflite"
    code = export_main([str(path), "-o", str(out_file), "--dense", "--verify",
                        "--calibration", str(tmp_path / "calib.npz")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ignored" not in captured.out + captured.err
    assert "the first 32 samples of" in captured.out and "calib.npz" in captured.out
    assert os.path.exists(out_file)


def test_cli_verify_without_calibration_names_the_random_inputs(tmp_path, capsys):
    model = _large_logit_model()
    path = tmp_path / "big.keras"
    model.save(path)
    assert export_main([str(path), "-o", str(tmp_path / "b.tflite"), "--sparse",
                        "--verify"]) == 0
    out = capsys.readouterr().out
    assert "8 random normal samples" in out and "--calibration" in out
