"""Run tfmot (tensorflow_model_optimization) next to kprune, in a subprocess.

tfmot works only on tf_keras (Keras 2), and importing it sets
`TF_USE_LEGACY_KERAS=1` for the whole process, which breaks Keras 3. So
kprune never imports it: comparisons with tfmot (tests/test_tfmot_parity.py,
benchmarks/quality.py) write a small script, run it here in a child process
with `TF_USE_LEGACY_KERAS=1` set in that child only, and exchange arrays with
it through .npz files and settings through JSON.

A child script starts with `CHILD_PREAMBLE`, which imports `tf_keras` and
`tfmot` (and `numpy` as `np`) or exits with status 3 after printing
`IMPORT-FAILED`; `run_tfmot_script` turns that into `TfmotUnavailable`, so a
test can skip and a benchmark can say why it has no tfmot column.

Example:
```python
from kprune.tfmot import reference as tfmot_subprocess

source = tfmot_subprocess.CHILD_PREAMBLE + "print(tfmot.__version__)"
out = tfmot_subprocess.run_tfmot_script(source, [], workdir="/tmp/x")
```
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

__all__ = ["CHILD_PREAMBLE", "TfmotUnavailable", "run_tfmot_script"]

#: First lines of every child script: tf_keras and tfmot, or exit status 3.
CHILD_PREAMBLE = textwrap.dedent(
    """
    import importlib, json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # this source runs in the tf_keras SUBPROCESS, never in a Keras 3 process
        tf_keras = importlib.import_module("tf_keras")
        tfmot = importlib.import_module("tensorflow_model_optimization")
    except Exception as e:  # reported to the parent as TfmotUnavailable
        print("IMPORT-FAILED", type(e).__name__, e)
        sys.exit(3)
    import numpy as np
    """
)


class TfmotUnavailable(RuntimeError):
    """tf_keras or tfmot cannot be imported in the child process."""


def run_tfmot_script(source, args, workdir, timeout=600, name="tfmot_side.py"):
    """Runs `source` with tf_keras/tfmot in a child Python process.

    Args:
        source: the script's text, normally `CHILD_PREAMBLE + body`.
        args: command-line arguments of the script (paths, converted with
            `str`).
        workdir: existing directory the script file is written to.
        timeout: seconds before the child is killed
            (`subprocess.TimeoutExpired` is raised).
        name: file name of the script inside `workdir`.

    Returns:
        The child's standard output (str).

    Raises:
        TfmotUnavailable: the child could not import tf_keras or tfmot.
        RuntimeError: the child failed; the message holds the end of its
            output.
    """
    script = pathlib.Path(workdir) / name
    script.write_text(source)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode == 3 and "IMPORT-FAILED" in proc.stdout:
        raise TfmotUnavailable(
            f"tfmot/tf_keras not importable in a subprocess: {proc.stdout.strip()} "
            f"(pip install tensorflow-model-optimization tf-keras)"
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"tfmot child {script} exited with status {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout
