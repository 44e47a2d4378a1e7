"""Bad input for tflite_export and `kprune export`: clear errors, files unchanged.

Malformed .tflite files are built by editing one field of a good file with
the flatbuffer schema's object API and packing it again, so that each test
names exactly the field it breaks.
"""

import copy
import hashlib
import os
import signal
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flatbuffers  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tflite_export  # noqa: E402
from kprune.core import masking  # noqa: E402
from tflite_export import _runtime  # noqa: E402
from tflite_export._source import schema  # noqa: E402
from tflite_export.cli import export_main  # noqa: E402
from tflite_export.files import InputFileError, atomic_write  # noqa: E402


def _mlp(sizes=(16, 16, 4), seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((sizes[0],))
    x = inp
    for i, n in enumerate(sizes[1:]):
        x = keras.layers.Dense(n, activation="relu" if i < len(sizes) - 2 else None,
                               name=f"d{i}")(x)
    return keras.Model(inp, x)


def _mask(model, granularity, sparsity=0.75):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            k = layer.kernel.numpy()
            layer.kernel.assign(k * masking.compute_mask(np.abs(k), sparsity, granularity))
    return model


@pytest.fixture(scope="module")
def files():
    block = _mask(_mlp(), masking.Block((4, 1)))
    csr = _mask(_mlp(seed=1), masking.Unstructured())
    b16 = _mask(_mlp((32, 16, 4)), masking.Block((16, 1)))
    x = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    return {
        "block": (block, tflite_export.convert(block, "sparse")),
        "csr": (csr, tflite_export.convert(csr, "sparse")),
        "dense": (block, tflite_export.convert(block, "dense")),
        "int8": (b16, tflite_export.convert(b16, "sparse", quantize="int8",
                                            representative_data=x)),
    }


def _edit(data, change):
    s = schema()
    model = s.ModelT.InitFromPackedBuf(data, 0)
    change(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _sparse_tensor(model):
    return next(t for t in model.subgraphs[0].tensors if t.sparsity is not None)


def _csr_dim(model):
    return next(d for d in _sparse_tensor(model).sparsity.dimMetadata if d.format == 1)


def _set(obj, attr, value):
    setattr(obj, attr, value)


BREAKS = {
    # kind: (file, edit, words of the message)
    "op input": ("dense", lambda m: _set(m.subgraphs[0].operators[0], "inputs",
                                         [999, 1, 2]), "operator 0 of subgraph 0 input 999"),
    "op output": ("dense", lambda m: _set(m.subgraphs[0].operators[0], "outputs", [-1]),
                  "output -1"),
    "opcode": ("dense", lambda m: _set(m.subgraphs[0].operators[0], "opcodeIndex", 42),
               "opcode index 42"),
    "tensor buffer": ("dense", lambda m: _set(m.subgraphs[0].tensors[1], "buffer", 10_000),
                      "points to buffer 10000"),
    "subgraph input": ("dense", lambda m: _set(m.subgraphs[0], "inputs", [77]),
                       "subgraph 0 input 77"),
    "negative dim": ("dense", lambda m: _set(m.subgraphs[0].tensors[0], "shape", [1, -5]),
                     "dimension out of range"),
    "overflowing shape": ("dense", lambda m: _set(m.subgraphs[0].tensors[0], "shape",
                                                  [2**31 - 1] * 4), "bytes"),
    "dense buffer size": ("dense", lambda m: _set(
        m.buffers[next(t.buffer for t in m.subgraphs[0].tensors if t.buffer and
                       m.buffers[t.buffer].data is not None)], "data",
        np.zeros(3, np.uint8)), "its buffer has 3 bytes"),
    "traversal order": ("block", lambda m: _set(_sparse_tensor(m).sparsity, "traversalOrder",
                                                [0, 0, 2]), "traversal order"),
    "block map": ("block", lambda m: _set(_sparse_tensor(m).sparsity, "blockMap", [5]),
                  "block map"),
    "dim metadata count": ("block", lambda m: _set(
        _sparse_tensor(m).sparsity, "dimMetadata", _sparse_tensor(m).sparsity.dimMetadata[:2]),
        "dimension metadata"),
    "dense size": ("block", lambda m: _set(_sparse_tensor(m).sparsity.dimMetadata[0],
                                           "denseSize", 999), "dense_size 999"),
    "array segments": ("csr", lambda m: _set(_csr_dim(m).arraySegments, "values",
                                             np.array([0, 5, 2], np.int32)), "array segments"),
    "array indices": ("csr", lambda m: _set(_csr_dim(m).arrayIndices, "values",
                                            np.full_like(_csr_dim(m).arrayIndices.values,
                                                         200)), "array index out of range"),
    "zero point": ("int8", lambda m: _set(
        next(t for t in m.subgraphs[0].tensors if t.type == 9 and t.quantization is not None
             and t.quantization.zeroPoint is not None).quantization, "zeroPoint",
        np.array([1 << 20], np.int64)), "zero point out of range -128..127"),
    "missing indices": ("csr", lambda m: _set(_csr_dim(m), "arrayIndices", None),
                        "no array_segments or array_indices"),
}


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_inspect_names_what_is_wrong(files, kind, tmp_path):
    which, change, words = BREAKS[kind]
    bad = _edit(files[which][1], change)
    with pytest.raises(ValueError, match="corrupt TFLite file") as info:
        tflite_export.inspect(bad)
    assert words in str(info.value), str(info.value)
    # a path is named in the message; the file is unchanged after every call
    path = tmp_path / f"{kind.replace(' ', '_')}.tflite"
    path.write_bytes(bad)
    digest = hashlib.sha256(bad).hexdigest()
    calls = [
        lambda: tflite_export.inspect(path),
        lambda: tflite_export.benchmark(path, runs=1, repeats=1, warmup=0),
        lambda: tflite_export.verify(files[which][0], path),
        lambda: tflite_export.compare(files["dense"][1], str(path), runs=1, repeats=1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="corrupt") as info:
            call()
        assert str(path) in str(info.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_unedited_repack_is_still_valid(files):
    """The editing helper itself does not break files."""
    for _, data in files.values():
        assert tflite_export.inspect(_edit(data, lambda m: None)).ops


def test_a_litert_crash_is_a_python_error_naming_the_file(files, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(files["block"][1])
    with _runtime.session() as s:
        m = s.load(str(path))
        os.kill(_runtime._worker().proc.pid, signal.SIGSEGV)
        with pytest.raises(tflite_export.InterpreterCrash, match="SIGSEGV") as info:
            m.run([np.zeros((1, 16), np.float32)])
    assert str(path) in str(info.value) and info.value.signal == "SIGSEGV"
    # the next call starts a fresh worker
    assert tflite_export.verify(files["block"][0], str(path)) <= 1e-5


def test_worker_overhead_is_one_process_per_session(files):
    tflite_export.benchmark(files["dense"][1], runs=1, repeats=1, warmup=0)
    pid = _runtime._worker().proc.pid
    tflite_export.verify(files["dense"][0], files["dense"][1])
    tflite_export.compare(files["dense"][1], files["block"][1], runs=1, repeats=1)
    assert _runtime._worker().proc.pid == pid
    with _runtime.session() as s:
        s.load(files["dense"][1])
    assert not _runtime._worker().request("checking", "", "ping") is None


# ---------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def block16():
    return _mask(_mlp((32, 16, 4)), masking.Block((16, 1)))


@pytest.mark.parametrize(
    "data, words",
    [
        (np.full((4, 32), np.nan, np.float32), "all NaN/inf"),
        (np.where(np.eye(4, 32) > 0, np.inf, 0.5).astype(np.float32), "4 NaN/inf values"),
        (np.ones((4, 31), np.float32), "shape [N, 32]"),
        ([np.ones((4, 32)), np.ones((4, 32))], "has 1 inputs"),
        (np.ones((0, 32), np.float32), "non-empty"),
        ("hello", "numeric"),
    ],
)
def test_int8_calibration_data_is_checked(block16, data, words):
    before = [w.numpy().copy() for w in block16.weights]
    with pytest.raises(tflite_export.CalibrationError, match="representative_data") as info:
        tflite_export.convert(block16, quantize="int8", representative_data=data)
    assert words in str(info.value), str(info.value)
    for a, w in zip(before, block16.weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_one_inf_in_a_callable_dataset_is_refused(block16):
    def gen():
        yield [np.ones((1, 32), np.float32)]
        yield [np.full((1, 32), np.inf, np.float32)]

    with pytest.raises(tflite_export.CalibrationError, match="sample 1 of the callable"):
        tflite_export.convert(block16, quantize="int8", representative_data=gen)


@pytest.mark.parametrize("quantize", [None, "float16", "dynamic"])
def test_unused_representative_data_warns(quantize):
    model = _mlp()
    with pytest.warns(UserWarning, match="only used with quantize='int8'"):
        tflite_export.convert(model, "dense", quantize=quantize,
                              representative_data=np.ones((4, 16), np.float32))


# ---------------------------------------------------------------- multi-input verify


def _two_inputs(as_dict):
    keras.utils.set_random_seed(3)
    a, b = keras.Input((3,), name="zeta"), keras.Input((5,), name="alpha")
    x = keras.layers.Concatenate()([keras.layers.Dense(4)(a), keras.layers.Dense(4)(b)])
    outputs = [keras.layers.Dense(2)(x), keras.layers.Dense(3)(x)]
    return keras.Model({"zeta": a, "alpha": b} if as_dict else [b, a], outputs)


@pytest.mark.parametrize("as_dict", [False, True])
def test_verify_multi_input_models(as_dict):
    model = _two_inputs(as_dict)
    data = tflite_export.convert(model)
    rng = np.random.default_rng(0)
    z, al = rng.standard_normal((6, 3)), rng.standard_normal((6, 5))
    assert tflite_export.verify(model, data) <= 1e-5
    assert tflite_export.verify(model, data, samples={"zeta": z, "alpha": al}) <= 1e-5
    ordered = [al, z] if not as_dict else [al, z]  # keras_model.inputs order
    assert [t.name for t in model.inputs][0] == "alpha"
    assert tflite_export.verify(model, data, samples=ordered) <= 1e-5
    with pytest.raises(ValueError, match="missing \\['alpha'\\]"):
        tflite_export.verify(model, data, samples={"zeta": z})
    with pytest.raises(ValueError, match="same number"):
        tflite_export.verify(model, data, samples={"zeta": z[:2], "alpha": al})
    with pytest.raises(TypeError, match="samples must be"):
        tflite_export.verify(model, data, samples="x")


# ---------------------------------------------------------------- files and CLI


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, files):
    path = tmp_path_factory.mktemp("rel") / "mlp.keras"
    files["block"][0].save(path)
    return path


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("how", ["same", "dot", "symlink"])
def test_export_refuses_to_overwrite_its_input(tmp_path, keras_file, capsys, how):
    model = tmp_path / "m.keras"
    model.write_bytes(keras_file.read_bytes())
    before = _digest(model)
    out = {"same": str(model), "dot": str(tmp_path / "." / "m.keras"),
           "symlink": str(tmp_path / "link.keras")}[how]
    if how == "symlink":
        os.symlink(model, out)
    assert export_main([str(model), "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the input file" in err, err
    assert _digest(model) == before


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "is empty (0 bytes)"),
        (b"not a zip at all", "not a zip archive"),
        ("truncated", "truncated or corrupt .keras file"),
        ("no-config", "not a Keras model (no config.json)"),
        ("dir", "is a directory"),
        (None, "no such model file"),
    ],
)
def test_export_tells_bad_keras_files_apart(tmp_path, keras_file, capsys, content, words):
    path = tmp_path / "bad.keras"
    if content == "truncated":
        data = keras_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "no-config":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model.weights.h5", b"x")
    elif content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.tflite"
    out.write_bytes(b"old output")
    assert export_main([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err
    assert out.read_bytes() == b"old output"
    assert sorted(os.listdir(tmp_path)) == sorted(["bad.keras", "out.tflite"]) or content is None


def test_export_calibration_with_nan_exits_2(tmp_path, keras_file, capsys):
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.full((8, 16), np.nan, np.float32))
    out = tmp_path / "q.tflite"
    assert export_main([str(keras_file), "-o", str(out), "--quantize", "int8",
                        "--calibration", str(cal)]) == 2
    err = capsys.readouterr().err
    assert "all NaN/inf" in err and not out.exists()


def test_export_writes_atomically(tmp_path, keras_file, capsys):
    out = tmp_path / "m.tflite"
    assert export_main([str(keras_file), "-o", str(out), "--dense"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary left
    assert tflite_export.inspect(out).ops


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"new content")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_input_file_error_is_a_value_error():
    assert issubclass(InputFileError, ValueError)
    assert issubclass(tflite_export.CalibrationError, ValueError)


def test_densify_expands_csr_and_block_tensors_exactly(files):
    from tflite_export.inspection import tensor_values

    for which in ("block", "csr"):
        model, data = files[which]
        report = tflite_export.inspect(data)
        values = tensor_values(data, [t.index for t in report.sparse_tensors])
        kernels = [layer.kernel.numpy().T for layer in model.layers
                   if isinstance(layer, keras.layers.Dense)]
        assert len(values) == len(kernels) == 2
        for got, want in zip(values.values(), kernels):
            np.testing.assert_array_equal(got, want)
