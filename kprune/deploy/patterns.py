"""Per-layer weight pattern for the target runtime, chosen by measured gain.

For each Dense layer (TFLite's FullyConnected, the only op whose sparse
weights LiteRT runs on a sparse kernel on x86 and ARM), `choose_patterns`
converts the layer alone in three forms and times each with the measurer:

* `dense`: float32, dense weights;
* `block4`: float32, `Block((4, 1))` at the given sparsity (TFLite's 1x4
  blocks: the sparse FullyConnected kernel);
* `block16-int8`: int8, `Block((16, 1))` at the sparsity (the 1x16 int8
  sparse kernel; below about 95% it is slower than dense int8 under XNNPACK).

It reports for each what the file will do (runs on the sparse kernel, goes
through DENSIFY at load, or dense), the measured latency and the gain over
dense float32, and chooses the fastest form whose gain is at least
`min_gain` (else dense). For a layer whose weights are already sparse,
`as stored` is the layer converted with its own weights. Convolutions are
listed as dense: XNNPACK's sparse convolution runs only on ARM, and TFLite
stores sparse Conv2D weights for DENSIFY (smaller file, dense speed); remove
their channels instead (`prune_for_latency`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import keras
import numpy as np

from kprune.core import checks, masking
from kprune.deploy.latency import LatencyCache, LiteRTMeasurer
from kprune.utils.table import format_table

__all__ = ["PATTERNS", "TARGETS", "LayerPattern", "PatternReport", "choose_patterns", "target_report"]

#: The candidate patterns: name -> (granularity, quantize).
PATTERNS = {
    "dense": (None, None),
    "block4": (masking.Block((4, 1)), None),
    "block16-int8": (masking.Block((16, 1)), "int8"),
}


@dataclasses.dataclass
class LayerPattern:
    """The measured forms of one layer.

    Attributes:
        layer: the layer's name.
        shape: its kernel's shape.
        sparsity: the sparsity measured at.
        ms: `{pattern: milliseconds}`.
        runs: `{pattern: "sparse kernel" | "DENSIFY" | "dense"}` (a shape
            the blocks do not fit, e.g. int8 with an input width that is not a
            multiple of 16, is stored dense: "dense").
        choice: the chosen pattern.
        stored_ms: the layer with its own weights (None if they are dense).
        stored_runs: how its own weights run.
    """

    layer: str
    shape: tuple
    sparsity: float
    ms: dict
    runs: dict
    choice: str
    stored_ms: float = None
    stored_runs: str = None

    def gain(self, pattern):
        """Measured speed-up of `pattern` over dense float32."""
        return self.ms["dense"] / self.ms[pattern] if self.ms.get(pattern) else float("nan")


@dataclasses.dataclass
class PatternReport:
    """`choose_patterns`' result: one `LayerPattern` per Dense layer.

    Attributes:
        layers: list of `LayerPattern`.
        skipped: `{layer name: why}` for layers listed as dense.
        settings: the measurer's description.
    """

    layers: list
    skipped: dict
    settings: str

    @property
    def choices(self):
        """`{layer: pattern}`."""
        return {p.layer: p.choice for p in self.layers}

    def granularities(self):
        """`{layer: kprune granularity}` of the layers whose choice is sparse."""
        return {p.layer: PATTERNS[p.choice][0] for p in self.layers if p.choice != "dense"}

    def __str__(self):
        rows = []
        for p in self.layers:
            cells = [p.layer, "x".join(map(str, p.shape)), f"{p.sparsity:.0%}"]
            for name in PATTERNS:
                cells.append(f"{p.ms[name]:.4f} ({p.gain(name):.2f}x, {p.runs[name]})")
            stored = "-" if p.stored_ms is None else (
                f"{p.stored_ms:.4f} ({p.ms['dense'] / p.stored_ms:.2f}x, {p.stored_runs})")
            rows.append(cells + [stored, p.choice])
        head = ["layer", "kernel", "sparsity"] + [f"{n} ms (gain, runs)" for n in PATTERNS] + [
            "as stored", "choice"]
        lines = [f"weight pattern per layer, measured [{self.settings}]", format_table(head, rows)]
        for name, why in self.skipped.items():
            lines.append(f"  {name}: dense ({why})")
        return "\n".join(lines)


def _runs(tflite):
    import tflite_export

    rep = tflite_export.inspect(tflite)
    if rep.sparse_kernel_ops:
        return "sparse kernel"
    if rep.densified_tensors:
        return "DENSIFY"
    return "dense"


def _probe(layer, kernel, bias):
    """A one-layer float model computing `layer` with `kernel` (and `bias`)."""
    config = dict(layer.get_config(), name="probe")
    inp = keras.Input((kernel.shape[0],), batch_size=1)
    new = type(layer).from_config(config)
    out = new(inp)
    new.set_weights([kernel] + ([bias] if bias is not None else []))
    return keras.Model(inp, out, name="probe")


def _masked(kernel, sparsity, granularity):
    if granularity is None:
        return kernel
    mask = masking.compute_mask(np.abs(kernel), sparsity, granularity)
    return kernel * mask


def choose_patterns(model, sparsity=0.9, measurer=None, cache_dir=None, min_gain=1.1, layers=None):
    """Measures dense / Block((4, 1)) / Block((16, 1))+int8 per Dense layer and chooses.

    Args:
        model: a built Keras model (not modified); its Dense layers with a
            2-D kernel are measured (a hidden layer's input width is its
            kernel's first axis, batch 1).
        sparsity: the sparsity to measure the block patterns at, in [0, 1);
            a layer already sparser is measured at its own sparsity.
        measurer: callable `.tflite -> ms` (default `LiteRTMeasurer()`).
        cache_dir: latency cache folder (see `kprune.deploy.LatencyModel`).
        min_gain: a sparse pattern is chosen only if it is at least this
            much faster than dense float32.
        layers: layer names to measure (default: every Dense layer).

    Returns:
        A `PatternReport`; `report.granularities()` gives
        `{layer: granularity}` for `prune_low_magnitude`'s per-layer use.

    Example:
    >>> report = kprune.deploy.choose_patterns(model, sparsity=0.9)
    >>> print(report)
    """
    import tflite_export

    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError(f"model must be a built keras.Model, got {checks.describe(model)}.")
    sparsity = checks.check_sparsity("sparsity", sparsity)
    min_gain = checks.check_float("min_gain", min_gain, lo=0, lo_inclusive=False)
    measurer = measurer or LiteRTMeasurer()
    checks.check_callable("measurer", measurer, allow_none=False)
    cache = LatencyCache(getattr(measurer, "cache_key", None), cache_dir)
    names = {layer.name for layer in model.layers}
    if layers is not None:
        missing = sorted(set(layers) - names)
        if missing:
            raise ValueError(f"layers names {missing}, which model {model.name!r} does not have; "
                             f"its layers are {sorted(names)}.")
    out, skipped = [], {}
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        if type(layer).__name__.startswith(("Conv", "Depthwise", "Separable")):
            skipped[layer.name] = "convolution: XNNPACK's sparse convolution runs only on ARM; " \
                "remove channels instead"
            continue
        if not isinstance(layer, keras.layers.Dense) or len(layer.kernel.shape) != 2:
            continue
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float32)
        bias = np.asarray(keras.ops.convert_to_numpy(layer.bias), np.float32) if layer.use_bias else None
        own = float(np.mean(kernel == 0))
        s = max(sparsity, round(own, 4)) if own < 1 else sparsity
        calib = rng.standard_normal((16, kernel.shape[0])).astype(np.float32)
        ms, runs = {}, {}
        for name, (granularity, quantize) in PATTERNS.items():
            entry = json.dumps({"pattern": name, "kernel": list(kernel.shape), "sparsity": s,
                                "activation": layer.get_config().get("activation"),
                                "bias": bias is not None}, sort_keys=True, default=str)
            probe = _probe(layer, _masked(kernel, s, granularity), bias)
            with warnings.catch_warnings():  # a shape the int8 blocks do not fit: stored dense
                warnings.simplefilter("ignore", UserWarning)
                data = tflite_export.convert(
                    probe, sparsity="dense" if granularity is None else "auto", quantize=quantize,
                    representative_data=calib if quantize else None)
            runs[name] = _runs(data)
            cached = cache.get(entry)
            ms[name] = cached if cached is not None else float(measurer(data))
            cache.put(entry, ms[name])
        stored_ms = stored_runs = None
        if own > 0.05:
            data = tflite_export.convert(_probe(layer, kernel, bias), sparsity="auto")
            stored_ms, stored_runs = float(measurer(data)), _runs(data)
        best = min(ms, key=ms.get)
        choice = best if ms["dense"] / ms[best] >= min_gain else "dense"
        out.append(LayerPattern(layer.name, tuple(kernel.shape), s, ms, runs, choice, stored_ms,
                                stored_runs))
    cache.save()
    return PatternReport(out, skipped, repr(measurer))


#: Targets `kprune report --target` knows.
TARGETS = ("litert-xnnpack",)


def target_report(path, target="litert-xnnpack", sparsity=0.9, measurer=None, cache_dir=None):
    """What a file will do on `target`, as text (`kprune report FILE --target ...`).

    A `.keras` file: `choose_patterns` on its Dense layers (measured
    dense / Block((4, 1)) / Block((16, 1))+int8 gains, the table's gain at
    the layer's sparsity next to the gain measured with its own weights, and
    the convolutions listed as dense). A `.tflite` file: which
    FullyConnected ops run on the sparse kernel and which tensors go
    through DENSIFY, and its latency with the measurer.

    Example:
    >>> print(target_report("kprune-demo/pruned.keras"))
    """
    import tflite_export

    checks.check_choice("target", target, TARGETS)
    measurer = measurer or LiteRTMeasurer()
    if str(path).lower().endswith(".tflite"):
        rep = tflite_export.inspect(path)
        lines = [f"on {target}: {len(rep.sparse_kernel_ops)} FullyConnected op(s) on the sparse "
                 f"kernel, {len(rep.densified_tensors)} tensor(s) through DENSIFY (expanded at "
                 f"load: dense speed)"]
        lines += [f"  sparse kernel: op {op.index} {op.op}" for op in rep.sparse_kernel_ops]
        lines += [f"  DENSIFY: {getattr(t, 'name', t)}" for t in rep.densified_tensors]
        lines.append(f"  measured: {measurer(path):.4f} ms [{measurer!r}]")
        return "\n".join(lines)
    model = keras.saving.load_model(path, compile=False)
    return f"on {target}:\n" + str(choose_patterns(model, sparsity=sparsity, measurer=measurer,
                                                    cache_dir=cache_dir))
