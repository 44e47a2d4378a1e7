"""`import kprune` is quiet and light; `kprune --help` imports no Keras (subprocesses)."""

import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ log prefix: "I0000 00:00:1796691809.790519    7758 port.cc:153] ..."
_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ ")


def _python(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user gets by default
    env.pop("KPRUNE_VERBOSE", None)
    cmd = [sys.executable, *args] if code is None else [sys.executable, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def _lines(stderr):
    return collections.Counter(_PREFIX.sub("", line) for line in stderr.splitlines()
                               if line.strip())


def test_import_kprune_adds_nothing_on_stderr_initialises_no_device_redirects_no_fd():
    checks = """
import os
calls = []
real_dup2 = os.dup2
os.dup2 = lambda *a, **k: (calls.append(a), real_dup2(*a, **k))[1]
import keras, kprune
assert calls == [], f"file descriptors redirected: {calls}"
if keras.backend.backend() == "tensorflow":
    from tensorflow.python.eager import context
    assert context.context()._context_handle is None, "a device was initialised"
print("ok")
"""
    alone = _python("import keras")
    both = _python(checks)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert both.returncode == 0 and both.stdout.strip() == "ok", both.stderr[-2000:]
    extra = _lines(both.stderr) - _lines(alone.stderr)
    assert not extra, f"import kprune added to stderr: {list(extra)}"


def test_kprune_help_imports_no_keras():
    proc = _python(None, "-X", "importtime", "-m", "kprune", "--help")
    assert proc.returncode == 0 and "demo" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "kprune" in imported
    assert not {"keras", "tensorflow", "jax", "torch"} & imported
    proc = _python(None, "-X", "importtime", "-m", "kprune", "export", "--help")
    assert proc.returncode == 0 and "--verify" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {"keras", "tensorflow"} & imported
