import os
import subprocess
import sys

import pytest

from kprune.cli.main import main


def test_demo_quick_runs_end_to_end(capsys, tmp_path):
    assert main(["demo", "--quick", "--unstructured", "--sparsity", "0.8", "--runs", "3",
                 "--export-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[4/4] results" in out
    assert "test accuracy   dense" in out and "gzip weights    dense" in out
    total = [line for line in out.splitlines() if line.startswith("total ")][0]
    assert "80.00%" in total
    # the export step: both files written, verified and timed side by side
    assert "[export]" in out and "median ms (min-max)" in out
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.startswith(("dense ", "sparse ")) and "dense size" not in line}
    assert set(rows) == {"dense", "sparse"} and "DENSIFY" in rows["sparse"]
    assert "x the dense size; latency" in out
    import tflite_export

    for kind in ("dense", "sparse"):
        assert tflite_export.inspect(tmp_path / f"{kind}.tflite").ops


def test_demo_no_export_skips_the_export(monkeypatch):
    import kprune.cli.demo

    seen = {}
    monkeypatch.setattr(kprune.cli.demo, "run_demo", lambda **kw: seen.update(kw))
    assert main(["demo", "--quick", "--no-export"]) == 0
    assert seen["export"] is False
    assert main(["demo", "--quick"]) == 0 and seen["export"] is True


def test_demo_rejects_a_bad_sparsity(capsys):
    assert main(["demo", "--sparsity", "1.5"]) == 2
    assert "--sparsity must be in [0, 1)" in capsys.readouterr().err


def test_unknown_command_exits_non_zero():
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code != 0


def test_console_module_entry_point_prints_no_tensorflow_startup_lines():
    proc = _run(["demo", "--help"])
    assert proc.returncode == 0 and "--no-export" in proc.stdout
    assert proc.stderr == "", proc.stderr


def test_kprune_export_dispatches_to_tflite_export(tmp_path, capsys):
    import keras
    import numpy as np

    import kprune

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="fc"), keras.layers.Dense(4)])
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.9), granularity=kprune.Block((4, 1)))
    kprune.Pruner(pruned).start()
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    out = tmp_path / "model.tflite"
    assert main(["export", str(path), "-o", str(out), "--sparse", "--verify"]) == 0
    assert out.exists() and out.stat().st_size > 0
    text = capsys.readouterr().out
    assert "max" in text.lower()
    assert main(["export", str(tmp_path / "missing.keras"), "-o", str(out)]) != 0


# ---------------------------------------------------------------- quiet start-up


def _run(args, **kw):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("KPRUNE_VERBOSE", None)
    # An in-process `--verbose` run earlier in the session sets this one too.
    env.pop("TFLITE_EXPORT_WORKER_STDERR", None)
    return subprocess.run([sys.executable, "-m", "kprune"] + args, capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT, **kw)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_is_quiet_and_verbose_brings_the_logs_back(tmp_path):
    import keras

    from kprune.utils.quiet import is_startup_noise

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.save(tmp_path / "m.keras")
    quiet = _run(["export", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.tflite"), "--dense"])
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    loud = _run(["export", str(tmp_path / "m.keras"), "-o", str(tmp_path / "v.tflite"), "--dense",
                 "--verbose"])
    assert loud.returncode == 0, loud.stderr
    lines = loud.stderr.splitlines()
    # TensorFlow writes start-up lines on every machine seen (oneDNN, CUDA stubs); when it
    # does, --verbose shows them and the quiet run above did not.
    assert any(is_startup_noise(line) for line in lines) or not lines
