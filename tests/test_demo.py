"""kprune.cli.demo: the training recipe, the speed recipe end to end, and the files it writes."""

import dataclasses

import keras
import pytest

from kprune.cli import demo


def test_demo_recipe_ramps_over_the_first_third_then_recovers():
    recipe = demo.DEMO_RECIPE
    total, end, frequency = recipe.steps(63)
    assert total == 63 * recipe.prune_epochs
    schedule = recipe.schedule(0.9, 63)
    assert schedule.end_step == end == round(total / 3)
    assert frequency == end // 20
    assert schedule.sparsity(0) == 0.0
    assert schedule.sparsity(end) == pytest.approx(0.9)
    assert schedule.next_update(end + 1) is None  # recovery: masks stay put
    assert total - end >= 2 * end  # twice as long recovering as ramping


def test_constant_learning_rate_is_a_float():
    optimizer = demo.DEMO_RECIPE.optimizer(63)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(1e-3)


def test_cosine_decay_ends_at_the_final_fraction_at_the_last_step():
    recipe = dataclasses.replace(demo.DEMO_RECIPE, decay="cosine", final_lr_fraction=0.1)
    lr = recipe.learning_rate_schedule(10)
    total, _, _ = recipe.steps(10)
    assert float(lr(0)) == pytest.approx(1e-3)
    assert float(lr(total)) == pytest.approx(1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("decay", "linear", "decay must be None or 'cosine', got 'linear'"),
    ("prune_epochs", 0, "prune_epochs must be an integer >= 1, got 0"),
    ("ramp_fraction", 1.5, r"ramp_fraction must be in \(0, 1\], got 1.5"),
    ("learning_rate", 0.0, "learning_rate must be > 0, got 0.0"),
    ("final_lr_fraction", -0.1, r"final_lr_fraction must be in \[0, 1\], got -0.1"),
])
def test_bad_recipe_field_names_the_parameter(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(demo.DEMO_RECIPE, **{field: value})


# --- the speed recipe and its files (issue 25; issue 24 item 2) --------------


@pytest.mark.tensorflow
def test_quick_demo_writes_its_files_and_prints_speed_and_next_commands(tmp_path, monkeypatch, capsys):
    from kprune.cli.file_report import model_report
    from kprune.cli.main import main

    monkeypatch.setenv("KPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "demo out"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    (folder / "pruned.keras").write_text("old")  # the demo's own name: overwritten
    assert main(["demo", "--quick", "--runs", "3", "--export-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    for name in ("dense.keras", "pruned.keras", "dense.tflite", "pruned.tflite"):
        assert (folder / name).stat().st_size > 100, name
        assert str(folder / name) in out
    assert (folder / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in folder.iterdir()) == [
        "dense.keras", "dense.tflite", "mine.txt", "pruned.keras", "pruned.tflite"]
    assert f"kprune report {folder / 'pruned.keras'}" in out
    speed = [line for line in out.splitlines() if line.startswith("speed-up ")]
    accuracy = [line for line in out.splitlines() if line.startswith("accuracy change ")]
    assert len(speed) == 1 and "min-max" in speed[0] and ("PASS" in speed[0] or "MISS" in speed[0])
    assert len(accuracy) == 1 and "target >= -1 pp" in accuracy[0]
    assert "1 sparse FC kernel" in out  # fc1's Block((4, 1)) weights run the sparse kernel
    # the thin model is smaller than the dense one, and `kprune report` reads it
    dense = keras.saving.load_model(folder / "dense.keras", compile=False)
    pruned = keras.saving.load_model(folder / "pruned.keras", compile=False)
    assert pruned.get_layer("conv2").filters < dense.get_layer("conv2").filters
    assert "fc1" in str(model_report(str(folder / "pruned.keras")))


@pytest.mark.tensorflow
def test_demo_refuses_an_unwritable_folder_before_training(tmp_path, capsys):
    from kprune.cli.main import main

    blocker = tmp_path / "a file"
    blocker.write_text("x")
    assert main(["demo", "--quick", "--export-dir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot write its files to" in err and "--export-dir" in err
    assert blocker.read_text() == "x"


def test_demo_refuses_a_folder_named_like_its_files(tmp_path):
    from kprune.cli.demo import output_folder

    (tmp_path / "dense.keras").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        output_folder(tmp_path)
