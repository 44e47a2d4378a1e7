import subprocess
import sys

import pytest

from kprune.cli import main


def test_demo_quick_runs_end_to_end(capsys):
    assert main(["demo", "--quick", "--sparsity", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "[4/4] results" in out
    assert "test accuracy   dense" in out and "gzip weights    dense" in out
    total = [line for line in out.splitlines() if line.startswith("total ")][0]
    assert "80.00%" in total


def test_demo_rejects_a_bad_sparsity(capsys):
    assert main(["demo", "--sparsity", "1.5"]) == 2
    assert "--sparsity must be in [0, 1)" in capsys.readouterr().err


def test_unknown_command_exits_non_zero():
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code != 0


def test_console_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "kprune", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout
