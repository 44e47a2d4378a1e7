import keras
import numpy as np
import pytest

import kprune
from conftest import small_cnn


def _pruned_cnn(sparsity=0.75):
    pruned = kprune.prune_low_magnitude(small_cnn(), kprune.ConstantSparsity(sparsity))
    kprune.Pruner(pruned).start()
    return pruned


def test_report_rows_on_a_wrapped_model():
    report = kprune.sparsity_report(_pruned_cnn())
    assert [r.layer for r in report] == ["conv1", "conv2", "fc1", "logits"]
    conv1 = report.rows[0]
    assert conv1.weight == "kernel" and conv1.shape == (3, 3, 1, 8) and conv1.params == 72
    assert conv1.zeros == 72 - 18 and conv1.sparsity == pytest.approx(0.75)
    assert report.sparsity == pytest.approx(0.75, abs=1e-3)
    assert set(report.as_dicts()[0]) == {"layer", "weight", "shape", "zeros", "params", "sparsity"}
    assert report.by_layer()["conv1"] == pytest.approx(0.75)


def test_stripped_and_wrapped_reports_agree():
    pruned = _pruned_cnn()
    a = kprune.sparsity_report(pruned).as_dicts()
    b = kprune.sparsity_report(kprune.strip_pruning(pruned)).as_dicts()
    assert a == b


def test_report_prints_a_table():
    text = str(kprune.sparsity_report(_pruned_cnn(0.5)))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "weight", "shape", "zeros", "sparsity", "params"]
    assert any(line.startswith("conv2") and "50.00%" in line for line in lines)
    assert lines[-1].startswith("total")


def test_report_on_a_dense_model_and_bad_input():
    report = kprune.sparsity_report(small_cnn())
    assert report.zeros == 0 and len(report) == 4
    with pytest.raises(TypeError, match="Keras model or layer"):
        kprune.sparsity_report({"a": 1})


def test_weights_of_multi_weight_layers_are_named_by_their_path():
    inp = keras.Input((4, 8))
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(x))
    report = kprune.sparsity_report(kprune.prune_low_magnitude(model))
    assert [(r.layer, r.weight) for r in report] == [
        ("mha", "query/kernel"), ("mha", "key/kernel"), ("mha", "value/kernel"),
        ("mha", "attention_output/kernel"),
        ("bi", "forward_lstm/lstm_cell/kernel"), ("bi", "forward_lstm/lstm_cell/recurrent_kernel"),
        ("bi", "backward_lstm/lstm_cell/kernel"), ("bi", "backward_lstm/lstm_cell/recurrent_kernel"),
        ("d", "kernel"),
    ]


# ---------------------------------------------------------------- detect_pattern / kprune report

import json  # noqa: E402
import os  # noqa: E402
import zipfile  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tflite_export  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.cli.main import main  # noqa: E402
from kprune.cli.file_report import REPORT_SCHEMA, model_report  # noqa: E402
from kprune.reports.sparsity import detect_pattern  # noqa: E402


def _masked(shape, granularity, sparsity=0.5, layout=masking.DENSE_LAYOUT, seed=0):
    scores = np.random.default_rng(seed).random(shape) + 0.1
    return scores * masking.compute_mask(scores, sparsity, granularity, layout)


def test_detect_pattern_names_each_granularity():
    conv = masking.Layout(-2, -1)
    assert str(detect_pattern(np.ones((8, 4)))) == "dense"
    assert str(detect_pattern(np.zeros((8, 4)))) == "empty"
    assert str(detect_pattern(_masked((64, 32), masking.Unstructured()))) == "unstructured"
    assert str(detect_pattern(_masked((64, 32), masking.Block((4, 1))))) == "block 4x1"
    assert str(detect_pattern(_masked((64, 32), masking.Block((16, 1)), 0.9))) == "block 16x1"
    assert str(detect_pattern(_masked((64, 32), masking.Block((2, 2))))) == "block 2x2"
    assert str(detect_pattern(_masked((64, 32), masking.NM(2, 4)))) == "2:4"
    assert str(detect_pattern(_masked((3, 3, 8, 16), masking.Channel(), 0.25, conv), conv)) == \
        "channels 4/16"
    rows = np.ones((8, 4))
    rows[[1, 5]] = 0
    assert str(detect_pattern(rows)) == "input channels 2/8"
    assert detect_pattern(_masked((64, 32), masking.NM(2, 4))).as_dict() == {
        "kind": "nm", "block": None, "n": 2, "m": 4, "channels": None, "text": "2:4"}
    with pytest.raises(TypeError, match="Layout"):
        detect_pattern(np.ones((4, 4)), layout=(0, 1))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]), st.integers(0, 1000))
def test_block_masks_are_detected_as_their_block(r, c, seed):
    if r * c < 2:
        return
    w = _masked((8 * r * 4, 8 * c * 2), masking.Block((r, c)), 0.5, seed=seed)
    p = detect_pattern(w)
    assert p.kind == "block" and p.block[0] % r == 0 and p.block[1] % c == 0


def _mlp(inputs=32):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(32, name="fc1"),
                             keras.layers.Dense(16, name="fc2"), keras.layers.Dense(4, name="out")])


def _strip(model, granularity, sparsity=0.75):
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(sparsity),
                                        granularity=granularity)
    kprune.Pruner(pruned).start()
    return kprune.strip_pruning(pruned)


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    keras.utils.set_random_seed(0)
    out = {}
    dense = _mlp()
    block = _strip(_mlp(), kprune.Block((4, 1)))
    csr = _strip(_mlp(), kprune.Unstructured())
    b16 = _strip(_mlp(), kprune.Block((16, 1)), 0.5)
    cnn = small_cnn()
    thin = kprune.structured.ChannelPruner(cnn, pruning_ratio=0.5).prune()
    for name, model in (("dense", dense), ("block", block), ("thin", thin), ("cnn", cnn)):
        out[name + ".keras"] = str(d / f"{name}.keras")
        model.save(out[name + ".keras"])
    x = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    for name, data in (
        ("dense", tflite_export.convert(dense, "dense")),
        ("block", tflite_export.convert(block, "sparse")),
        ("csr", tflite_export.convert(csr, "sparse")),
        ("int8", tflite_export.convert(b16, "sparse", quantize="int8", representative_data=x)),
    ):
        out[name + ".tflite"] = tflite_export.save(data, d / f"{name}.tflite")
    out["dir"] = d
    return out


def test_keras_reports(report_files):
    r = model_report(report_files["block.keras"])
    assert r.format == "keras" and [row.layer for row in r.rows] == ["fc1", "fc2", "out"]
    assert all(str(row.pattern) == "block 4x1" for row in r.rows)
    assert r.sparsity == pytest.approx(0.75, abs=0.01)
    assert r.flops == 2 * (32 * 32 + 32 * 16 + 16 * 4) and r.rows[0].flops == 2 * 32 * 32
    assert all(str(row.pattern) == "dense" for row in model_report(report_files["dense.keras"]).rows)
    thin, full = model_report(report_files["thin.keras"]), model_report(report_files["cnn.keras"])
    assert thin.params < full.params and thin.flops < full.flops
    assert all(row.pattern.kind == "dense" for row in thin.rows)
    text = str(r)
    assert text.splitlines()[1].split()[:3] == ["layer", "weight", "shape"]
    assert "block 4x1" in text and text.splitlines()[-1].startswith("total")


def test_tflite_reports(report_files):
    block = model_report(report_files["block.tflite"])
    fcs = [row for row in block.rows if row.weight == "FULLY_CONNECTED kernel"]
    assert len(fcs) == 3 and all(str(r.pattern) == "block 1x4" and r.sparse_kernel for r in fcs)
    assert block.tflite["sparse_kernel_ops"] and not block.tflite["densified_tensors"]
    assert block.flops == 2 * (32 * 32 + 32 * 16 + 16 * 4)
    csr = model_report(report_files["csr.tflite"])
    assert len(csr.tflite["densified_tensors"]) == 3
    assert all(str(r.pattern) == "unstructured" for r in csr.rows if r.storage == "csr")
    assert all(r.densified for r in csr.rows if r.storage == "csr")
    int8 = model_report(report_files["int8.tflite"])
    kernels = [r for r in int8.rows if r.storage == "block"]
    assert kernels and all(str(r.pattern) == "block 1x16" and r.dtype == "int8" for r in kernels)
    dense = model_report(report_files["dense.tflite"])
    assert not dense.tflite["sparse_kernel_ops"] and "sparse FC kernel" not in str(dense)
    assert "DENSIFY" in str(csr) and "sparse FC kernel" in str(block)


def test_json_follows_the_schema(report_files, capsys):
    for name in ("block.keras", "csr.tflite"):
        assert main(["report", report_files[name], "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert set(doc) == set(REPORT_SCHEMA) and doc["schema"] == "kprune.report/1"
        assert set(doc["layers"][0]) == set(REPORT_SCHEMA["layers"][0])
        assert set(doc["layers"][0]["pattern"]) == set(REPORT_SCHEMA["layers"][0]["pattern"])
        assert (doc["tflite"] is None) == name.endswith(".keras")


def test_plot_writes_a_small_png(report_files, capsys):
    png = os.path.join(report_files["dir"], "r.png")
    assert main(["report", report_files["block.tflite"], "--plot", png]) == 0
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
    assert f"plot: {png}" in capsys.readouterr().out


def test_report_errors_exit_2_with_one_line(report_files, capsys, tmp_path):
    d = tmp_path
    (d / "corrupt.tflite").write_bytes(open(report_files["block.tflite"], "rb").read()[:300])
    (d / "empty.keras").write_bytes(b"")
    inp = keras.Input((4,))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    lam.save(d / "hostile.keras")
    with zipfile.ZipFile(d / "junk_config.keras", "w") as z:
        z.writestr("config.json", "{not json")
    (d / "notes.txt").write_text("hi")
    hostile_before = (d / "hostile.keras").read_bytes()
    cases = [
        ([str(d / "missing.keras")], "no such model file"),
        ([str(d / "corrupt.tflite")], "truncated or corrupt"),
        ([str(d / "empty.keras")], "is empty"),
        ([str(d / "hostile.keras")], "safe_mode"),
        ([str(d / "junk_config.keras")], "cannot load"),
        ([str(d / "notes.txt")], "expected a .keras"),
        ([report_files["block.tflite"], "--plot", str(d / "x.jpg")], "expected a .png"),
        ([report_files["block.tflite"], "--plot", report_files["block.tflite"]], "expected a .png"),
    ]
    for argv, words in cases:
        assert main(["report"] + argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, (argv, err)
    assert (d / "hostile.keras").read_bytes() == hostile_before


# ----------------------------------------------- first contact: counts and names


def test_wrapped_keras_file_counts_weights_not_masks_and_has_flops(tmp_path, capsys):
    model = small_cnn()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5, 0))
    kprune.Pruner(pruned).start()
    pruned.save(tmp_path / "wrapped.keras")
    r = model_report(tmp_path / "wrapped.keras")
    assert r.params == model.count_params()
    assert r.flops and r.flops == kprune.count_flops(model) > 0
    assert r.sparsity > 0.4
    assert main(["report", str(tmp_path / "wrapped.keras")]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert f"{model.count_params():,} parameters" in head and " 0 FLOPs" not in head


def test_tflite_rows_are_named_by_keras_layer_and_total_matches_keras(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, bias_initializer="random_normal", name="stem")(inp)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(12, bias_initializer="random_normal", name="hidden")(x)
    x = keras.layers.Reshape((3, 4), name="fold")(x)
    x = keras.layers.Flatten(name="unfold")(x)
    out = keras.layers.Dense(5, bias_initializer="random_normal", name="logits")(x)
    model = keras.Model(inp, out)
    path = tflite_export.save(tflite_export.convert(model, "dense"), tmp_path / "m.tflite")
    r = model_report(path)
    assert {row.layer for row in r.rows} == {"stem", "hidden", "logits"}
    assert all(row.dtype == "float32" for row in r.rows)  # no index/shape constants
    assert all(row.pattern.kind != "empty" for row in r.rows)
    assert r.params == r.reported_params == model.count_params()
    roles = sorted(row.weight for row in r.rows if row.layer == "hidden")
    assert roles == ["FULLY_CONNECTED bias", "FULLY_CONNECTED kernel"]


def test_plot_into_a_missing_folder_is_an_error_and_creates_nothing(report_files, capsys,
                                                                    tmp_path):
    target = tmp_path / "missing" / "deeper" / "x.png"
    assert main(["report", report_files["block.tflite"], "--plot", str(target)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "create it first" in err
    assert not (tmp_path / "missing").exists()
