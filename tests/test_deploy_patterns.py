"""Tests for kprune.deploy.patterns: per-layer pattern choice and `kprune report --target`.

Deterministic fake measurer (file size / 1000 ms: a sparse file is faster,
as on a runtime whose sparse kernel pays). TensorFlow leg; no timing
threshold.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

from kprune.deploy import choose_patterns, target_report

pytestmark = pytest.mark.tensorflow


class SizeMeasurer:
    cache_key = None

    def __call__(self, tflite):
        if not isinstance(tflite, bytes):
            with open(tflite, "rb") as f:
                tflite = f.read()
        return len(tflite) / 1000.0


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu", name="h1"),
        keras.layers.Dense(10, name="out"),
    ], name="mlp")


def test_choice_follows_the_measured_gain():
    report = choose_patterns(mlp(), sparsity=0.9, measurer=SizeMeasurer())
    h1 = {p.layer: p for p in report.layers}["h1"]
    assert h1.runs == {"dense": "dense", "block4": "sparse kernel", "block16-int8": "sparse kernel"}
    assert h1.gain("block4") > 1 and h1.gain("block16-int8") > h1.gain("block4")  # int8: 4x fewer bytes
    assert h1.choice == "block16-int8"
    assert set(report.granularities()) == {p.layer for p in report.layers if p.choice != "dense"}
    text = str(report)
    assert "h1" in text and "sparse kernel" in text and "choice" in text


def test_no_gain_keeps_dense():
    def flat(tflite):
        return 1.0

    report = choose_patterns(mlp(), sparsity=0.9, measurer=flat)
    assert set(report.choices.values()) == {"dense"}


def test_convolutions_are_listed_dense_with_the_reason():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(8, name="d")])
    report = choose_patterns(model, sparsity=0.5, measurer=SizeMeasurer(), layers=["c", "d"])
    assert "only on ARM" in report.skipped["c"] and [p.layer for p in report.layers] == ["d"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="sparsity"):
        choose_patterns(mlp(), sparsity=1.0, measurer=SizeMeasurer())
    with pytest.raises(ValueError, match="nope"):
        choose_patterns(mlp(), measurer=SizeMeasurer(), layers=["nope"])
    with pytest.raises(TypeError, match="model"):
        choose_patterns("model.keras")


def test_report_lines_for_keras_and_tflite_files(tmp_path):
    import kprune
    import tflite_export

    model = mlp()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.9, 0),
                                        granularity=kprune.Block((4, 1)))
    kprune.update_masks(pruned, step=0)
    stripped = kprune.strip_pruning(pruned)
    stripped.save(tmp_path / "m.keras")
    text = target_report(tmp_path / "m.keras", measurer=SizeMeasurer())
    assert text.startswith("on litert-xnnpack:") and "as stored" in text
    h1_line = [line for line in text.splitlines() if line.startswith("h1 ")][0]
    assert "sparse kernel" in h1_line  # its own Block((4, 1)) weights run sparse
    tflite_export.save(tflite_export.convert(stripped, sparsity="sparse"), tmp_path / "m.tflite")
    text = target_report(str(tmp_path / "m.tflite"), measurer=SizeMeasurer())
    assert "on the sparse kernel" in text and "sparse kernel: op" in text and "measured:" in text


def test_cli_report_target_option(tmp_path, capsys, monkeypatch):
    from kprune.cli.main import main
    from kprune.deploy import patterns

    monkeypatch.setattr(patterns, "LiteRTMeasurer", SizeMeasurer)
    mlp().save(tmp_path / "m.keras")
    assert main(["report", str(tmp_path / "m.keras"), "--target", "litert-xnnpack"]) == 0
    assert "weight pattern per layer" in capsys.readouterr().out
