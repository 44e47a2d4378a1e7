"""A latency model of the deployment runtime: measured per-layer tables.

`LatencyModel(model)` measures, with a pluggable *measurer* (a callable
`.tflite bytes -> milliseconds`; the default `LiteRTMeasurer` runs LiteRT
with XNNPACK at batch 1 in `tflite_export`'s worker process), the latency of
every compute layer of `model` (Conv, Dense, DepthwiseConv, SeparableConv)
converted alone, at several widths of its input and output channels. From
that table it predicts the latency of the model with any channel widths:

    predicted = S(widths) + R * S(widths) / S(full)     (R >= 0)
    predicted = S(widths) + R                           (R < 0)

where `S` is the sum of the layers' tabled latencies, `dense` the measured
latency of the whole model and `R = dense - S(full)` the rest: the ops the
table does not time (pooling, additions, unfused activations), assumed to
shrink with the tabled layers, or, when negative, the per-invoke cost that
each one-layer file counts once more. The dense model is therefore predicted
exactly.

A layer's latency at input fraction `a` and output fraction `b` is read as
`f + c(a, 1) * c(1, b) / c(1, 1)` with `c = t - f` and `f` the latency of a
one-weight file (the per-invoke cost): compute separable in input and output
width, like a matrix product, each curve linearly interpolated between the
measured fractions `levels`. A depthwise layer (one channel axis) has one
curve.

Measurements are cached on disk (`cache_dir`, default
`$KPRUNE_CACHE_DIR` or `~/.cache/kprune/latency`) in one JSON file per
measurer setting: the measurer's `cache_key` (LiteRT version, threads,
XNNPACK, CPU model, batch, repetitions for `LiteRTMeasurer`) names the file,
and each entry is keyed by the layer's type, configuration and input shape,
so a change of runtime, settings, CPU or input shape measures again. A
measurer without a `cache_key` attribute is not cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile

import keras
import numpy as np

from kprune.core import checks
from kprune.structured.graph import DependencyGraph, check_graph_model

__all__ = [
    "LatencyCache",
    "LatencyModel",
    "LiteRTMeasurer",
    "default_cache_dir",
    "measure_model",
    "runtime_key",
]

#: Fractions of a group's channels that are candidate widths (each rounded
#: up to a multiple of `round_to`), and at which layers are measured.
DEFAULT_LEVELS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)

_PRODUCERS = (keras.layers.Dense,)
_CONVS = ("Conv1D", "Conv2D", "Conv3D")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_SEPARABLE = ("SeparableConv1D", "SeparableConv2D")


def cpu_model():
    """The CPU's model name (`/proc/cpuinfo`, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def runtime_key(threads=1, xnnpack=True, batch=1):
    """What changes a LiteRT latency on this machine, as a dict.

    Args:
        threads: interpreter threads.
        xnnpack: whether the XNNPACK delegate is on.
        batch: batch size.

    Returns:
        dict with `runtime` (LiteRT's package and version), `threads`,
        `xnnpack`, `batch`, `cpu` (model name), `cpus` (count), `machine`.

    Example:
    >>> kprune.deploy.runtime_key(threads=1)["runtime"]
    'ai-edge-litert 2.3.0'
    """
    return {"runtime": f"ai-edge-litert {_version('ai-edge-litert')}", "threads": int(threads),
            "xnnpack": bool(xnnpack), "batch": int(batch), "cpu": cpu_model(),
            "cpus": os.cpu_count(), "machine": platform.machine()}


class LiteRTMeasurer:
    """The default measurer: LiteRT on this CPU, in `tflite_export`'s worker.

    Calls `tflite_export.benchmark` (median of `repeats` repetitions of
    `runs` invokes, batch 1, XNNPACK on as on phones).

    Args:
        threads: interpreter threads.
        xnnpack: use the XNNPACK delegate.
        runs: timed invokes per repetition.
        repeats: repetitions (the median of their medians is returned).
        warmup: untimed invokes first.
        batch: batch size.
        clock: `"wall"` or `"cpu"` (see `tflite_export.benchmark`).

    Attributes:
        cache_key: `runtime_key(...)` plus the repetition settings: the
            key of the on-disk cache.

    Example:
    >>> ms = kprune.deploy.LiteRTMeasurer(threads=1)(tflite_export.convert(model))
    """

    def __init__(self, threads=1, xnnpack=True, runs=30, repeats=3, warmup=5, batch=1, clock="wall"):
        self.threads = checks.check_int("threads", threads, lo=1)
        self.xnnpack = checks.check_bool("xnnpack", xnnpack)
        self.runs = checks.check_int("runs", runs, lo=1)
        self.repeats = checks.check_int("repeats", repeats, lo=1)
        self.warmup = checks.check_int("warmup", warmup, lo=0)
        self.batch = checks.check_int("batch", batch, lo=1)
        self.clock = checks.check_choice("clock", clock, ("wall", "cpu"))
        self.cache_key = dict(runtime_key(self.threads, self.xnnpack, self.batch),
                              runs=self.runs, repeats=self.repeats, clock=self.clock)

    def __call__(self, tflite):
        """Median latency of `tflite` (bytes or path) in milliseconds."""
        import tflite_export

        return tflite_export.benchmark(
            tflite, batch=self.batch, threads=self.threads, xnnpack=self.xnnpack, runs=self.runs,
            repeats=self.repeats, warmup=self.warmup, clock=self.clock).median_ms

    def compare(self, a, b, repeats=7):
        """`tflite_export.compare(a, b)` with this measurer's settings."""
        import tflite_export

        return tflite_export.compare(
            a, b, labels=("dense", "pruned"), batch=self.batch, threads=self.threads,
            xnnpack=self.xnnpack, runs=self.runs, repeats=repeats, warmup=self.warmup,
            clock=self.clock)

    def __repr__(self):
        return (f"LiteRTMeasurer(threads={self.threads}, xnnpack={self.xnnpack}, runs={self.runs}, "
                f"repeats={self.repeats})")


def default_cache_dir():
    """`$KPRUNE_CACHE_DIR`, else `~/.cache/kprune/latency`."""
    return os.environ.get("KPRUNE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "kprune", "latency")


class LatencyCache:
    """Measured latencies on disk, one JSON file per measurer setting.

    Args:
        key: a JSON-serialisable dict naming the setting (the measurer's
            `cache_key`), or None for an in-memory cache only.
        cache_dir: folder of the cache files (default `default_cache_dir()`).

    Attributes:
        path: the file (None without a key).
        entries: `{entry key: milliseconds}`.

    Example:
    >>> cache = LatencyCache(LiteRTMeasurer().cache_key, "/tmp/lat")
    """

    def __init__(self, key, cache_dir=None):
        self.key = key
        self.entries = {}
        self.path = None
        if key is None:
            return
        text = json.dumps(key, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir or default_cache_dir(), f"latency-{digest}.json")
        try:
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
            if stored.get("key") == json.loads(text):
                self.entries = dict(stored.get("entries", {}))
        except (OSError, ValueError):
            self.entries = {}

    def get(self, entry):
        """The cached milliseconds of `entry`, or None."""
        return self.entries.get(entry)

    def put(self, entry, ms):
        """Stores `ms` for `entry` (written to disk by `save`)."""
        self.entries[entry] = float(ms)

    def save(self):
        """Writes the cache file atomically (no-op without a key)."""
        if self.path is None:
            return
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"key": json.loads(json.dumps(self.key, default=str)), "entries": self.entries},
                      f, indent=0, sort_keys=True)
        os.replace(tmp, self.path)


def measure_model(model, measurer):
    """Converts `model` (float32, dense weights) and returns `measurer`'s milliseconds."""
    import tflite_export

    return float(measurer(tflite_export.convert(model, sparsity="dense")))


def _kind(layer):
    name = type(layer).__name__
    if name in _DEPTHWISE:
        return "depthwise"
    if name in _SEPARABLE:
        return "separable"
    if name in _CONVS or isinstance(layer, keras.layers.Dense):
        return "producer"
    return None


def _width_key(layer):
    return "units" if isinstance(layer, keras.layers.Dense) else "filters"


_IGNORED_CONFIG = ("name", "trainable", "dtype", "kernel_initializer", "bias_initializer",
                   "kernel_regularizer", "bias_regularizer", "activity_regularizer",
                   "kernel_constraint", "bias_constraint", "depthwise_initializer",
                   "pointwise_initializer", "depthwise_regularizer", "pointwise_regularizer",
                   "depthwise_constraint", "pointwise_constraint", "lora_rank", "lora_alpha")


class _Unit:
    """One timed layer: its groups and its measured curves."""

    def __init__(self, path, layer, in_shape, kind):
        self.path = path
        self.layer = layer
        self.in_shape = tuple(int(d) for d in in_shape[1:])
        self.kind = kind
        self.out_width = int(getattr(layer, _width_key(layer), 0) or 0) if kind != "depthwise" else 0
        self.in_groups = {}  # group index -> positions of the input axis in that group
        self.out_groups = {}
        self.in_curve = None  # (fractions, ms)
        self.out_curve = None
        self.full_ms = None

    @property
    def in_width(self):
        return self.in_shape[-1]

    def fraction(self, groups, kept, size):
        """Kept fraction of an axis given `{group: kept count}`."""
        if not groups:
            return 1.0
        total = self.in_width if groups is self.in_groups else max(self.out_width, 1)
        lost = sum(pos * (1.0 - kept[g] / size[g]) for g, pos in groups.items() if g in kept)
        return max(0.0, 1.0 - lost / total)

    def signature(self, w_in, w_out, pattern="dense"):
        config = {k: v for k, v in self.layer.get_config().items() if k not in _IGNORED_CONFIG}
        if self.kind != "depthwise":
            config[_width_key(self.layer)] = int(w_out)
        shape = self.in_shape[:-1] + (int(w_in),)
        return json.dumps({"class": type(self.layer).__name__, "config": config, "input": shape,
                           "pattern": pattern}, sort_keys=True, default=str)

    def probe(self, w_in, w_out):
        """A one-layer model of this layer at input width `w_in`, output `w_out`."""
        config = dict(self.layer.get_config())
        config["name"] = "probe"
        if self.kind != "depthwise":
            config[_width_key(self.layer)] = int(w_out)
        inp = keras.Input(self.in_shape[:-1] + (int(w_in),), batch_size=1)
        out = type(self.layer).from_config(config)(inp)
        return keras.Model(inp, out, name="probe")


def _interp(curve, f):
    xs, ys = curve
    if f >= xs[0]:
        return float(np.interp(f, xs, ys))
    # below the smallest measured fraction: linear extrapolation, never < 0
    if len(xs) == 1:
        return float(ys[0] * f / xs[0])
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    return max(0.0, float(ys[0] + slope * (f - xs[0])))


class LatencyModel:
    """Per-layer latency tables of a model, and predictions from them.

    Args:
        model: a built functional or Sequential `keras.Model` (not modified).
        measurer: a callable `.tflite bytes -> milliseconds` (default: a
            `LiteRTMeasurer()`). With a `cache_key` attribute (a dict naming
            the runtime and its settings) its results are cached on disk.
        cache_dir: folder of the cache (default `default_cache_dir()`); a
            temporary folder in tests.
        levels: fractions of each group's channels that are candidate widths
            (must include 1.0); each is rounded up to a multiple of
            `round_to`, and every layer is timed at exactly those widths.
        round_to: candidate widths are multiples of this (default 8: XNNPACK
            packs float32 channels by 8 or 16 on x86 and ARM, so a width
            between two multiples runs at the speed of the larger one); a
            group smaller than `round_to` keeps its width.
        graph: a `kprune.structured.DependencyGraph` of `model` to reuse
            (default: built here; `ignored_layers` as in `ChannelPruner`).
        ignored_layers: passed to the `DependencyGraph` when it is built here.
        verbose: 1 prints one line per measured layer.

    Attributes:
        graph: the dependency graph (the groups whose widths are chosen).
        dense_ms: measured latency of the whole model.
        fixed_ms: measured latency of a one-weight model (the per-invoke
            cost each one-layer file includes).
        measured: number of new measurements made (the rest came from the
            cache).

    Example:
    >>> lat = kprune.deploy.LatencyModel(model, cache_dir="/tmp/lat")
    >>> lat.dense_ms, lat.predict({g.index: g.size // 2 for g in lat.groups})
    """

    def __init__(self, model, measurer=None, cache_dir=None, levels=DEFAULT_LEVELS, round_to=8,
                 graph=None, ignored_layers=None, verbose=0):
        check_graph_model(model, "A latency model")
        if measurer is None:
            measurer = LiteRTMeasurer()
        checks.check_callable("measurer", measurer, allow_none=False)
        levels = tuple(sorted({checks.check_float("levels", v, lo=0, hi=1, lo_inclusive=False)
                               for v in levels}))
        if levels[-1] != 1.0:
            raise ValueError(f"levels must include 1.0 (the full width), got {levels!r}.")
        if graph is not None and graph.model is not model:
            raise ValueError("graph must be the DependencyGraph of the same model object.")
        self.round_to = checks.check_int("round_to", round_to, lo=1)
        self.model = model
        self.measurer = measurer
        self.levels = levels
        self.verbose = verbose
        self.graph = graph or DependencyGraph(model, ignored_layers=ignored_layers)
        self.cache = LatencyCache(getattr(measurer, "cache_key", None), cache_dir)
        self.measured = 0
        self.units = self._units()
        self.sizes = {g.index: g.size for g in self.graph.groups}
        self.options = {g.index: self._options(g) for g in self.graph.prunable_groups}
        self.fixed_ms = self._measure("null", _null_model)
        shapes = [tuple(t.shape[1:]) for t in model.inputs]
        self.dense_ms = self._measure(
            "model:" + hashlib.sha256((model.to_json() + str(shapes)).encode()).hexdigest(),
            lambda: model)
        for u in self.units:
            self._table(u)
        self.cache.save()
        self.full_sum = self._sum({})

    @property
    def groups(self):
        """The prunable groups of the graph."""
        return self.graph.prunable_groups

    # -- measuring -------------------------------------------------------
    def _measure(self, entry, build):
        ms = self.cache.get(entry)
        if ms is None:
            model = build()
            ms = measure_model(model, self.measurer)
            ms = checks.check_float("the measurer's result", ms, lo=0)
            self.cache.put(entry, ms)
            self.measured += 1
            if self.measured % 20 == 0:
                self.cache.save()
        return ms

    def _units(self):
        units = []
        for node in self.graph.nodes:
            layer = node.operation
            kind = _kind(layer)
            if kind is None or not node.input_tensors:
                continue
            shape = node.input_tensors[0].shape
            if any(d is None for d in shape[1:]):
                raise ValueError(
                    f"Layer {layer.name!r} has an input of unknown size {tuple(shape)}: a latency "
                    f"model needs fixed input shapes; build the model with e.g. "
                    f"keras.Input((32, 32, 3)).")
            units.append(_Unit(self.graph.node_path[id(node)], layer, shape, kind))
        by_layer = {id(u.layer): u for u in units}
        for g in self.graph.prunable_groups:
            for m in g.members:
                u = by_layer.get(id(m.layer))
                if u is None:
                    continue
                pos = int(np.count_nonzero(m.channel >= 0))
                if m.role in ("in", "dw"):
                    u.in_groups[g.index] = max(u.in_groups.get(g.index, 0), pos)
                elif m.role == "out":
                    u.out_groups[g.index] = max(u.out_groups.get(g.index, 0), pos)
        return units

    def _options(self, g):
        """Candidate kept counts of group `g`, largest first."""
        frozen = int(g.frozen.sum())
        r = self.round_to if g.size >= 2 * self.round_to else 1
        counts = {min(g.size, max(frozen, 1, int(np.ceil(g.size * f / r)) * r)) for f in self.levels}
        return sorted(counts, reverse=True)

    def _axis_fractions(self, groups):
        """Fractions of an axis at which to time it: its single group's options."""
        if len(groups) == 1:
            (gi,) = groups
            return [k / self.sizes[gi] for k in self.options[gi]][::-1]
        return list(self.levels)

    def _width(self, full, f):
        return max(1, int(round(full * f)))

    def _time(self, u, w_in, w_out):
        ms = self._measure(u.signature(w_in, w_out), lambda: u.probe(w_in, w_out))
        if self.verbose:
            print(f"  {u.path}: in {w_in}, out {w_out}: {ms:.4f} ms")
        return ms

    def _table(self, u):
        u.full_ms = self._time(u, u.in_width, u.out_width)
        ones = (np.array([1.0]), np.array([u.full_ms]))
        u.in_curve = u.out_curve = ones
        if u.in_groups:
            xs = np.array(self._axis_fractions(u.in_groups))
            ys = np.array([u.full_ms if f == 1.0 else self._time(
                u, self._width(u.in_width, f), u.out_width) for f in xs])
            u.in_curve = (xs, ys)
        if u.out_groups and u.kind != "depthwise":
            xs = np.array(self._axis_fractions(u.out_groups))
            ys = np.array([u.full_ms if f == 1.0 else self._time(
                u, u.in_width, self._width(u.out_width, f)) for f in xs])
            u.out_curve = (xs, ys)

    # -- predicting ------------------------------------------------------
    def layer_ms(self, u, kept):
        """Tabled latency of unit `u` at `{group: kept}`."""
        a = u.fraction(u.in_groups, kept, self.sizes)
        b = u.fraction(u.out_groups, kept, self.sizes)
        f = min(self.fixed_ms, u.full_ms)
        if u.full_ms <= f:
            return u.full_ms
        return f + max(0.0, _interp(u.in_curve, a) - f) * max(0.0, _interp(u.out_curve, b) - f) / (
            u.full_ms - f)

    def _sum(self, kept):
        return sum(self.layer_ms(u, kept) for u in self.units)

    def predict(self, kept=None):
        """Predicted latency (ms) with `{group index: kept channels}` (missing: all kept).

        Example:
        >>> lat.predict({0: 8, 1: 16})
        """
        kept = kept or {}
        if not self.full_sum:
            return self.dense_ms
        part = self._sum(kept)
        rest = self.dense_ms - self.full_sum
        return part + (rest * part / self.full_sum if rest >= 0 else rest)

    def predict_plan(self, plan):
        """Predicted latency (ms) of a `kprune.structured.PruningPlan` of `graph`."""
        if plan.graph.model is not self.model:
            raise ValueError("plan was made for another model than this latency model's; pass a "
                             "plan of the same model object.")
        return self.predict(kept_counts(plan))

    def table(self):
        """Per-layer rows `(path, type, input width, output width, ms)` at full width."""
        return [(u.path, type(u.layer).__name__, u.in_width, u.out_width or u.in_width,
                 u.full_ms) for u in self.units]

    def __repr__(self):
        return (f"LatencyModel({self.model.name!r}: {len(self.units)} timed layers, dense "
                f"{self.dense_ms:.3f} ms, {self.measurer!r})")


def kept_counts(plan):
    """`{group index: kept channels}` of a `PruningPlan`."""
    sizes = {g.index: g.size for g in plan.graph.groups}
    return {gi: sizes[gi] - int(np.count_nonzero(r)) for gi, r in plan.removed.items()}


def _null_model():
    inp = keras.Input((1,), batch_size=1)
    return keras.Model(inp, keras.layers.Dense(1, name="null")(inp), name="null")
