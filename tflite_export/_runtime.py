"""Running .tflite files with LiteRT (ai-edge-litert), in a child process.

Every file is validated with `tflite_export.inspection`'s checks first
(`load_checked`), then handed to a worker process
(`tflite_export._worker`) that builds the interpreters. A native crash of
LiteRT (SIGSEGV, SIGABRT, out of memory) kills the worker, never the
caller: it surfaces as `InterpreterCrash` naming the file, and the next call
starts a fresh worker.

One worker is shared by all calls of a process (started on first use, about
0.1-0.3 s; each request then costs a pipe round trip, ~0.1 ms). Timing is
measured inside the worker, so the pipe is not part of any latency.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

from tflite_export._source import load_checked

#: Seconds to wait for the worker to start, and for one request by default.
START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 1800.0


class InterpreterCrash(RuntimeError):
    """LiteRT died (a native crash) or hung while handling a .tflite file.

    Attributes:
        where: the file (path or "name (bytes)").
        signal: the signal name that killed the worker (e.g. `"SIGSEGV"`),
            `"timeout"`, or the exit status as text.
    """

    def __init__(self, message, where="", signal=""):
        super().__init__(message)
        self.where = where
        self.signal = signal


class _Worker:
    def __init__(self):
        from tflite_export import _worker

        root = os.path.dirname(os.path.dirname(os.path.abspath(_worker.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        inherit = os.environ.get("TFLITE_EXPORT_WORKER_STDERR") == "inherit"
        self.log = None if inherit else tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tflite_export._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None if inherit else self.log, env=env, cwd=root, close_fds=True,
        )
        self.keys = itertools.count()
        self.dead = False
        self._reply("starting the LiteRT worker", "", START_TIMEOUT)

    def request(self, doing, where, command, *args, timeout=REQUEST_TIMEOUT):
        from tflite_export._worker import send

        if self.log is not None:
            self.log.seek(0)
            self.log.truncate()
        try:
            send(self.proc.stdin.fileno(), (command,) + args)
        except (BrokenPipeError, OSError):
            self._died(doing, where)
        return self._reply(doing, where, timeout)

    def _reply(self, doing, where, timeout):
        from tflite_export._worker import recv

        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            self.kill()
            raise InterpreterCrash(
                f"LiteRT did not answer within {timeout:.0f} s while {doing} {where}; "
                "the worker process was stopped.", where, "timeout",
            )
        try:
            reply = recv(fd)
        except (EOFError, OSError):
            self._died(doing, where)
        if reply[0] == "ok":
            return reply[1]
        kind, message = reply[1], reply[2]
        exc = {"MemoryError": MemoryError, "TypeError": TypeError}.get(kind, ValueError)
        raise exc(message)

    def _died(self, doing, where):
        self.dead = True
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if code is not None and code < 0:
            try:
                how = signal.Signals(-code).name
            except ValueError:
                how = f"signal {-code}"
        else:
            how = f"exit status {code}"
        tail = self._log_tail()
        raise InterpreterCrash(
            f"LiteRT crashed ({how}) while {doing} {where}: the file is corrupt or "
            f"uses something this LiteRT build cannot run{'; last output: ' + tail if tail else ''}.",
            where, how,
        ) from None

    def _log_tail(self):
        if self.log is None:
            return ""
        try:
            self.log.seek(0)
            lines = [l for l in self.log.read().decode("utf-8", "replace").splitlines()
                     if l.strip() and not l.startswith("INFO: Created TensorFlow Lite")]
        except (OSError, ValueError):
            return ""
        return lines[-1].strip()[:300] if lines else ""

    def kill(self):
        self.dead = True
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self.log):
            with contextlib.suppress(Exception):
                f.close()

    def close(self):
        if not self.dead and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.request("closing", "", "exit", timeout=5)
        self.kill()


_LOCK = threading.RLock()
_WORKER = None


def _worker():
    global _WORKER
    if _WORKER is None or _WORKER.dead or _WORKER.proc.poll() is not None:
        if _WORKER is not None:
            _WORKER.kill()
        _WORKER = _Worker()
    return _WORKER


def shutdown_worker():
    """Stops the shared LiteRT worker process (a later call starts a new one)."""
    global _WORKER
    with _LOCK:
        if _WORKER is not None:
            _WORKER.close()
            _WORKER = None


atexit.register(shutdown_worker)


class Model:
    """A .tflite file loaded in the worker.

    Attributes:
        where: how messages name the file.
        inputs: list of `(shape, dtype, name)` of the model inputs.
        outputs: list of `(shape, dtype, name)`, in Keras output order.
    """

    def __init__(self, session, key, where, details):
        self.session = session
        self.key = key
        self.where = where
        self._set(details)

    def _set(self, details):
        self.inputs = [(tuple(s), np.dtype(d), n) for s, d, n in details["inputs"]]
        self.outputs = [(tuple(s), np.dtype(d), n) for s, d, n in details["outputs"]]

    def set_batch(self, batch):
        """Resizes every input's first axis to `batch` (positive int)."""
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}.")
        self._set(self.session._call(self, f"resizing to batch {batch}", "resize", int(batch)))  # noqa: SLF001 - same module

    def run(self, inputs):
        """Runs on a list of arrays (one per input); returns the outputs."""
        if len(inputs) != len(self.inputs):
            raise ValueError(
                f"{self.where} has {len(self.inputs)} inputs, got {len(inputs)} arrays."
            )
        arrays = [np.ascontiguousarray(x, dtype=d) for x, (_, d, _) in zip(inputs, self.inputs)]
        return self.session._call(self, "running", "run", arrays)  # noqa: SLF001 - same module


class Session:
    """Interpreters in the shared worker for the length of one call."""

    def __init__(self):
        self.models = []

    def load(self, tflite, name="tflite", threads=1, xnnpack=True):
        """Validates `tflite` and builds its interpreter in the worker.

        Raises:
            FileNotFoundError, TypeError, ValueError: unreadable or corrupt
                file, or one LiteRT refuses; the message names the file.
            InterpreterCrash: LiteRT crashed on it.
        """
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}.")
        data, where, _ = load_checked(tflite, name)
        key = next(_worker().keys)
        how = "with XNNPACK" if xnnpack else "without XNNPACK"
        try:
            details = _worker().request(f"loading ({how})", where, "load", key, data,
                                        int(threads), bool(xnnpack))
        except ValueError as e:
            raise ValueError(f"LiteRT cannot load {where} {how}: {e}") from None
        model = Model(self, key, where, details)
        self.models.append(model)
        return model

    def time(self, models, runs, warmup, seed=0, clock="wall"):
        """Seconds of each `invoke()`: one block per model, in the order given."""
        where = " and ".join(m.where for m in models)
        return _worker().request("timing", where, "time", [m.key for m in models],
                                 int(runs), int(warmup), int(seed), clock)

    def _call(self, model, doing, command, *args):
        try:
            return _worker().request(doing, model.where, command, model.key, *args)
        except ValueError as e:
            raise ValueError(f"LiteRT failed {doing} {model.where}: {e}") from None

    def close(self):
        if _WORKER is not None and not _WORKER.dead and self.models:
            with contextlib.suppress(Exception):
                _WORKER.request("freeing", "", "free", [m.key for m in self.models])
        self.models = []


@contextlib.contextmanager
def session():
    """`with session() as s: m = s.load(path); m.run([x])` (one call at a time)."""
    with _LOCK:
        s = Session()
        try:
            yield s
        finally:
            s.close()


def random_inputs(model, batch, seed=0):
    """Random inputs for every input of a loaded `Model`, batch `batch`."""
    from tflite_export._worker import random_arrays  # noqa: PLC0415 - as the other _worker imports

    specs = [([int(batch)] + [int(s) for s in shape[1:]], dtype) for shape, dtype, _ in model.inputs]
    return random_arrays(np, specs, seed)
