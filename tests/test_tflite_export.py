"""Tests for tflite_export: convert, inspect, verify, benchmark, xnnpack, CLI.

Sparse models are plain Keras models whose kernels were masked with
kprune.core.masking: exactly what `kprune.strip_pruning` produces. No timing
thresholds here: speed and size targets live in benchmarks/tflite_sparse.py.
"""

import os
import subprocess
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tflite_export  # noqa: E402
from kprune.core import masking  # noqa: E402
from tflite_export.cli import export_main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlp(sizes=(64, 128, 10), seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((sizes[0],))
    x = inp
    for i, n in enumerate(sizes[1:]):
        act = "relu" if i < len(sizes) - 2 else None
        x = keras.layers.Dense(n, activation=act, bias_initializer="random_normal",
                               name=f"dense_{i}")(x)
    return keras.Model(inp, x)


def _mask(model, granularity, sparsity=0.9, types=(keras.layers.Dense,)):
    for layer in model.layers:
        if isinstance(layer, types):
            k = layer.kernel.numpy()
            layer.kernel.assign(k * masking.compute_mask(np.abs(k), sparsity, granularity))
    return model


def _convnet():
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inp, x)
    return _mask(model, masking.Unstructured(), 0.9,
                 (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))


@pytest.fixture(scope="module")
def block4():
    model = _mask(_mlp(), masking.Block((4, 1)))
    return model, tflite_export.convert(model, sparsity="sparse")


@pytest.fixture(scope="module")
def dense_bytes(block4):
    return tflite_export.convert(block4[0], sparsity="dense")


# ---------------------------------------------------------------- convert


def test_block4_dense_layers_take_the_sparse_kernel(block4):
    model, data = block4
    report = tflite_export.inspect(data)
    fc = [o for o in report.ops if o.op == "FULLY_CONNECTED"]
    assert len(fc) == 2 and all(o.sparse_kernel for o in fc)
    assert "DENSIFY" not in report.op_counts
    for t in report.sparse_tensors:
        assert t.format == "block" and t.block == (1, 4) and t.dtype == "float32"
        assert t.zeros == pytest.approx(0.9, abs=0.02)


def test_sparse_file_is_smaller_and_matches_keras(block4, dense_bytes):
    model, data = block4
    assert len(data) < 0.3 * len(dense_bytes)
    assert tflite_export.verify(model, data) <= tflite_export.tolerance(None)
    assert tflite_export.verify(model, data, xnnpack=False) <= 1e-5
    assert tflite_export.verify(model, dense_bytes) <= 1e-5


def test_auto_picks_sparse_only_when_it_matters(block4):
    sparse_model = block4[0]
    assert tflite_export.inspect(tflite_export.convert(sparse_model)).sparse_tensors
    light = _mask(_mlp(seed=3), masking.Block((4, 1)), 0.35)  # < 50%: auto stays dense
    assert not tflite_export.inspect(tflite_export.convert(light)).sparse_tensors
    # ... while "sparse" lets TFLite encode it (>= 30% zeros).
    assert tflite_export.inspect(tflite_export.convert(light, "sparse")).sparse_tensors


def test_conv_and_unstructured_go_through_densify():
    model = _convnet()
    data = tflite_export.convert(model, sparsity="sparse")
    report = tflite_export.inspect(data)
    assert report.op_counts.get("DENSIFY", 0) >= 2
    csr = [t for t in report.sparse_tensors if t.format == "csr"]
    assert len(csr) >= 2 and all(t.densified and not t.sparse_kernel for t in csr)
    assert not report.sparse_kernel_ops
    assert tflite_export.verify(model, data) <= 1e-5


def test_int8_with_block16_is_block_sparse_and_within_tolerance():
    model = _mask(_mlp(), masking.Block((16, 1)))
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    data = tflite_export.convert(model, quantize="int8", representative_data=x)
    report = tflite_export.inspect(data)
    assert report.sparse_kernel_ops
    assert all(t.block == (1, 16) and t.dtype == "int8" for t in report.sparse_tensors)
    scale = float(np.abs(model(x[:16])).max())
    assert tflite_export.verify(model, data, samples=x[:16]) <= tflite_export.tolerance("int8", scale)


def test_int8_block4_auto_falls_back_to_dense_and_sparse_refuses():
    model = _mask(_mlp(), masking.Block((4, 1)))
    x = np.random.default_rng(0).random((32, 64), dtype=np.float32)
    with pytest.warns(UserWarning, match="Block\\(\\(16, 1\\)\\)"):
        data = tflite_export.convert(model, quantize="int8", representative_data=x)
    assert not tflite_export.inspect(data).sparse_tensors
    with pytest.raises(ValueError, match="XNNPACK"):
        tflite_export.convert(model, "sparse", quantize="int8", representative_data=x)


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_broken_quantize_sparse_pairs(block4, quantize):
    model = block4[0]
    with pytest.raises(ValueError, match=quantize):
        tflite_export.convert(model, "sparse", quantize=quantize)
    with pytest.warns(UserWarning, match="dense"):
        data = tflite_export.convert(model, "auto", quantize=quantize)
    assert not tflite_export.inspect(data).sparse_tensors
    scale = float(np.abs(model(np.ones((1, 64)))).max())
    diff = tflite_export.verify(model, data, samples=np.ones((1, 64), np.float32))
    assert diff <= tflite_export.tolerance(quantize, scale)


def test_convert_does_not_modify_model(block4):
    model = block4[0]
    before = [w.numpy().copy() for w in model.weights]
    config = model.get_config()
    tflite_export.convert(model, sparsity="sparse")
    assert model.get_config() == config
    for a, w in zip(before, model.weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_strips_prune_wrappers_by_class_name(monkeypatch, block4):
    """A layer named PruneWrapper triggers kprune.core.wrapping.strip_pruning."""
    import types

    calls = []
    plain = block4[0]

    def strip_pruning(model):
        calls.append(model)
        return plain

    fake = types.ModuleType("kprune.core.wrapping")
    fake.strip_pruning = strip_pruning
    monkeypatch.setitem(sys.modules, "kprune.core.wrapping", fake)

    class PruneWrapper(keras.layers.Wrapper):
        def call(self, x):
            return self.layer(x)

    inp = keras.Input((64,))
    wrapped = keras.Model(inp, PruneWrapper(keras.layers.Dense(10))(inp))
    data = tflite_export.convert(wrapped, sparsity="sparse")
    assert calls == [wrapped]
    assert tflite_export.inspect(data).sparse_kernel_ops  # converted the stripped one


def test_save_writes_bytes(tmp_path, block4):
    path = tflite_export.save(block4[1], tmp_path / "sub" / "m.tflite")
    with open(path, "rb") as f:
        assert f.read() == block4[1]
    assert tflite_export.inspect(path).size == len(block4[1])


# ---------------------------------------------------------------- bad input


class _Inverse(keras.layers.Layer):
    def call(self, x):
        return tf.linalg.inv(x)  # MatrixInverse: no TFLite builtin


def test_rejected_op_names_the_keras_layer():
    inp = keras.Input((4, 4))
    x = keras.layers.Dense(4, name="before")(inp)
    model = keras.Model(inp, _Inverse(name="my_inverse")(x))
    with pytest.raises(tflite_export.ConversionError, match="my_inverse") as info:
        tflite_export.convert(model)
    assert info.value.layers == ["my_inverse"]
    assert "MatrixInverse" in info.value.ops
    assert "_Inverse" in str(info.value)


def test_unknown_modes_and_types(block4):
    model = block4[0]
    with pytest.raises(ValueError, match="quantize"):
        tflite_export.convert(model, quantize="int4")
    with pytest.raises(ValueError, match="sparsity"):
        tflite_export.convert(model, sparsity="blocky")
    with pytest.raises(TypeError, match="keras.Model"):
        tflite_export.convert("model.keras")


def test_int8_without_representative_data(block4):
    with pytest.raises(ValueError, match="representative_data"):
        tflite_export.convert(block4[0], quantize="int8")


def test_corrupt_truncated_and_missing_files(tmp_path, block4):
    data = block4[1]
    for bad in (data[: len(data) // 2], data[:64]):
        with pytest.raises(ValueError, match="truncated or corrupt"):
            tflite_export.inspect(bad)
    with pytest.raises(ValueError, match="not a TFLite model"):
        tflite_export.inspect(b"definitely not a flatbuffer")
    path = tmp_path / "half.tflite"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        tflite_export.benchmark(str(path), runs=1)
    with pytest.raises(ValueError, match="truncated"):
        tflite_export.verify(block4[0], str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        tflite_export.inspect(tmp_path / "missing.tflite")
    with pytest.raises(TypeError):
        tflite_export.inspect(12)


# ---------------------------------------------------------------- verify / benchmark


def test_verify_detects_a_different_model(block4, dense_bytes):
    other = _mlp(seed=7)
    assert tflite_export.verify(other, dense_bytes) > 1e-3


def test_verify_checks_sample_shapes(block4):
    with pytest.raises(ValueError, match="shape"):
        tflite_export.verify(block4[0], block4[1], samples=np.zeros((2, 5), np.float32))


def test_benchmark_and_compare(block4, dense_bytes):
    r = tflite_export.benchmark(block4[1], batch=4, threads=1, runs=5, warmup=1)
    assert r.runs == 5 and r.batch == 4 and 0 < r.median_ms <= r.p90_ms + 1e-9
    r2 = tflite_export.benchmark(block4[1], xnnpack=False, runs=3, warmup=0)
    assert not r2.xnnpack
    c = tflite_export.compare(dense_bytes, block4[1], labels=("dense", "sparse"), runs=4)
    assert c.a.label == "dense" and c.b.runs == 4 and c.speedup > 0
    assert "faster" in str(c)
    with pytest.raises(ValueError, match="runs"):
        tflite_export.benchmark(block4[1], runs=0)
    with pytest.raises(ValueError, match="batch"):
        tflite_export.benchmark(block4[1], batch=0)


# ---------------------------------------------------------------- xnnpack report


def _xnnpack_net(sparse=True):
    L = keras.layers
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 3))
    x = L.ZeroPadding2D(1)(inp)
    x = L.Conv2D(16, 3, strides=2, padding="valid", name="stem")(x)
    x = L.ReLU()(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Conv2D(16, 1, name="pw")(y)
    x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(10, name="head")(x))
    if sparse:
        _mask(model, masking.Unstructured(), 0.8, (L.Conv2D,))
    return model


def test_xnnpack_report_eligible_pattern():
    report = tflite_export.xnnpack_sparse_report(_xnnpack_net())
    assert report.eligible, str(report)
    roles = {c.name: c.role for c in report.layers}
    assert roles["stem"] == "stem" and roles["gap"] == "end" and roles["head"] == "outside"


def test_xnnpack_report_says_why_not():
    report = tflite_export.xnnpack_sparse_report(_xnnpack_net(sparse=False))
    assert not report.eligible
    pw = next(c for c in report.layers if c.name == "pw")
    assert not pw.ok and "2/3" in pw.reason
    mlp = tflite_export.xnnpack_sparse_report(_mlp())
    assert not mlp.eligible and any("stem" in r for r in mlp.reasons)
    assert "XNNPACK" in str(mlp)


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, block4):
    path = tmp_path_factory.mktemp("cli") / "mlp.keras"
    block4[0].save(path)
    return str(path)


def test_cli_export_verify_benchmark(tmp_path, keras_file, capsys):
    out = str(tmp_path / "m.tflite")
    code = export_main([keras_file, "-o", out, "--sparse", "--verify", "--benchmark", "--runs", "3"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert os.path.exists(out) and "fast FC" in text and "median" in text
    assert tflite_export.inspect(out).sparse_kernel_ops


def test_cli_int8_with_calibration(tmp_path, keras_file, capsys):
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(0).random((32, 64), dtype=np.float32))
    out = str(tmp_path / "q.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = export_main([keras_file, "-o", out, "--quantize", "int8",
                            "--calibration", str(cal), "--verify"])
    assert code == 0, capsys.readouterr()


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["{model}", "--quantize", "int8"], 2, "--calibration"),
        (["{model}", "--quantize", "int4"], 2, "invalid choice"),
        (["{tmp}/missing.keras"], 2, "no such model file"),
        (["{model}", "--quantize", "int8", "--calibration", "{tmp}/none.npz"], 2, "no such file"),
        (["{model}", "--sparse", "--quantize", "float16", "-o", "{tmp}/x.tflite"], 1, "NaN"),
        (["{tmp}/junk.keras", "-o", "{tmp}/x.tflite"], 2, "not a zip archive"),
    ],
)
def test_cli_errors_one_line(tmp_path, keras_file, capsys, argv, code, message):
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    argv = [a.format(model=keras_file, tmp=tmp_path) for a in argv]
    assert export_main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_python_dash_m_entry_point(tmp_path, keras_file):
    out = str(tmp_path / "m.tflite")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tflite_export", keras_file, "-o", out, "--dense"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dense float32" in proc.stdout and os.path.exists(out)
    bad = subprocess.run(
        [sys.executable, "-m", "tflite_export", str(tmp_path / "nope.keras")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert bad.returncode != 0 and "kprune export: error:" in bad.stderr
