"""The child process that runs the LiteRT interpreter (`python -m tflite_export._worker`).

LiteRT is native code: a file it mis-reads can crash the process (SIGSEGV)
instead of raising. `tflite_export` therefore never builds an interpreter in
the user's process; this worker does, and the parent turns a dead worker into
a Python error naming the file (see `tflite_export._runtime`).

Protocol: length-prefixed pickles on the fds given by the parent (requests
on stdin, replies on the original stdout, which is then pointed at stderr so
that native prints cannot corrupt the stream). Requests are tuples
`(command, *args)`; replies are `("ok", value)` or `("error", type, message)`.
Only `numpy` and `ai_edge_litert` are imported here (no TensorFlow).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(fd):
    (n,) = struct.unpack("<Q", _read_exact(fd, 8))
    return pickle.loads(_read_exact(fd, n))


def send(fd, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    payload = struct.pack("<Q", len(data)) + data
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]



def random_arrays(np, specs, seed=0):
    """Random arrays for `(shape, dtype)` specs: normal floats, 0/1 booleans,
    integers in [-128, 127] (clipped to the dtype's range).

    `np` is numpy, passed in: the worker imports it only when it starts.
    The one random-input rule of tflite_export (`random_inputs` uses it too).
    """
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in specs:
        if dtype.kind == "f":
            out.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind == "b":
            out.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127), shape).astype(dtype))
    return out

class _Server:
    def __init__(self):
        import numpy as np

        self.np = np
        self.interps = {}

    # ------------------------------------------------------------ commands

    def load(self, key, data, threads, xnnpack):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (
            OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            interp = Interpreter(
                model_content=data, num_threads=int(threads),
                experimental_op_resolver_type=resolver,
            )
            interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(first[:300]) from None
        interp._kprune_model_bytes = data  # noqa: SLF001 - the interpreter reads this buffer
        self.interps[key] = interp
        return self.details(key)

    def details(self, key):
        interp = self.interps[key]
        names = {}
        try:
            sig = interp._get_full_signature_list()
            if sig:
                names = {i: n for n, i in next(iter(sig.values()))["inputs"].items()}
        except Exception:
            names = {}
        ins = [(tuple(int(s) for s in d["shape"]), self.np.dtype(d["dtype"]).str,
                names.get(d["index"], d["name"]))
               for d in interp.get_input_details()]
        outs = [(tuple(int(s) for s in d["shape"]), self.np.dtype(d["dtype"]).str, d["name"])
                for d in self._outputs(interp)]
        return {"inputs": ins, "outputs": outs}

    def resize(self, key, batch):
        interp = self.interps[key]
        changed = False
        for d in interp.get_input_details():
            shape = list(d["shape"])
            if shape and shape[0] != batch:
                shape[0] = int(batch)
                interp.resize_tensor_input(d["index"], shape, strict=False)
                changed = True
        if changed:
            interp.allocate_tensors()
        return self.details(key)

    def run(self, key, inputs):
        interp = self.interps[key]
        self._set(interp, inputs)
        interp.invoke()
        return [interp.get_tensor(d["index"]).copy() for d in self._outputs(interp)]

    def time(self, keys, runs, warmup, seed, clock="wall"):
        """Times `invoke()` of each interpreter: one block of runs per model.

        The models run one after the other, in the order given: `warmup`
        untimed invokes, then `runs` timed ones (each model in its own
        steady state, caches warm, as when a device runs one model).
        `clock`: "wall" (`time.perf_counter`) or "cpu" (CPU time of this
        process, `time.process_time`: not counting time the worker waits
        while other processes run).
        Returns one list of seconds per key.
        """
        interps = [self.interps[k] for k in keys]
        for interp in interps:
            self._set(interp, self._random(interp, seed))
        clock = time.process_time if clock == "cpu" else time.perf_counter
        times = []
        for interp in interps:
            for _ in range(warmup):
                interp.invoke()
            block = []
            for _ in range(runs):
                t = clock()
                interp.invoke()
                block.append(clock() - t)
            times.append(block)
        return times

    def free(self, keys):
        for k in keys:
            self.interps.pop(k, None)
        return None

    def ping(self):
        return os.getpid()

    # ------------------------------------------------------------ helpers

    def _set(self, interp, inputs):
        details = interp.get_input_details()
        if len(inputs) != len(details):
            raise ValueError(
                f"the .tflite model has {len(details)} inputs, got {len(inputs)} arrays."
            )
        for d, x in zip(details, inputs):
            x = self.np.asarray(x, dtype=d["dtype"])
            if tuple(x.shape) != tuple(int(s) for s in d["shape"]):
                raise ValueError(
                    f"input {d['name']!r}: expected shape {list(d['shape'])}, got {list(x.shape)}."
                )
            interp.set_tensor(d["index"], x)

    def _random(self, interp, seed):
        np = self.np
        specs = [([int(s) for s in d["shape"]], np.dtype(d["dtype"]))
                 for d in interp.get_input_details()]
        return random_arrays(np, specs, seed)

    @staticmethod
    def _outputs(interp):
        """Output details in Keras order (`output_0`, `output_1`, ...)."""
        details = interp.get_output_details()
        try:
            sig = interp._get_full_signature_list()
            if not sig:
                return details
            outs = next(iter(sig.values()))["outputs"]
            ordered = sorted(outs.items(), key=lambda kv: _trailing_int(kv[0]))
            by_index = {d["index"]: d for d in details}
            return [by_index[i] for _, i in ordered if i in by_index] or details
        except Exception:
            return details


def _trailing_int(name):
    digits = ""
    for c in reversed(name):
        if not c.isdigit():
            break
        digits = c + digits
    return int(digits) if digits else 0


def main():
    limit = os.environ.get("TFLITE_EXPORT_WORKER_MEMORY_MB")
    if limit:
        import resource

        nbytes = int(limit) << 20
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    fd_in = sys.stdin.fileno()
    fd_out = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # native prints -> stderr
    server = _Server()
    send(fd_out, ("ok", "ready"))
    while True:
        try:
            request = recv(fd_in)
        except EOFError:
            return 0
        command, args = request[0], request[1:]
        if command == "exit":
            send(fd_out, ("ok", None))
            return 0
        try:
            reply = ("ok", getattr(server, command)(*args))
        except MemoryError:
            reply = ("error", "MemoryError", "out of memory")
        except Exception as e:  # sent back, raised in the parent
            reply = ("error", type(e).__name__, str(e)[:500])
        sys.stdout.flush()
        sys.stderr.flush()
        send(fd_out, reply)


if __name__ == "__main__":
    sys.exit(main())
