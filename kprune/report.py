"""`sparsity_report`: a per-layer table of zeros in the prunable weights."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kprune.wrapper import PruneWrapper, is_prunable, prunable_weights

__all__ = ["sparsity_report", "SparsityReport", "SparsityRow"]


@dataclasses.dataclass(frozen=True)
class SparsityRow:
    """One weight tensor of the report."""

    layer: str
    weight: str
    shape: tuple
    zeros: int
    params: int

    @property
    def sparsity(self):
        return self.zeros / self.params if self.params else 0.0

    def as_dict(self):
        return {**dataclasses.asdict(self), "sparsity": self.sparsity}


class SparsityReport:
    """The rows of `sparsity_report`, printable and iterable.

    Attributes:
        rows: list of `SparsityRow` (layer, weight, shape, zeros, sparsity,
            params).
    """

    def __init__(self, rows):
        self.rows = list(rows)

    @property
    def zeros(self):
        return sum(r.zeros for r in self.rows)

    @property
    def params(self):
        return sum(r.params for r in self.rows)

    @property
    def sparsity(self):
        """Overall fraction of zeros over the reported weights."""
        return self.zeros / self.params if self.params else 0.0

    def as_dicts(self):
        """The rows as a list of dicts (e.g. for `pandas.DataFrame`)."""
        return [r.as_dict() for r in self.rows]

    def by_layer(self):
        """`{layer name: sparsity}` over each layer's pruned weights."""
        out = {}
        for r in self.rows:
            z, n = out.get(r.layer, (0, 0))
            out[r.layer] = (z + r.zeros, n + r.params)
        return {k: (z / n if n else 0.0) for k, (z, n) in out.items()}

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        header = ("layer", "weight", "shape", "zeros", "sparsity", "params")
        body = [
            (r.layer, r.weight, "x".join(map(str, r.shape)), str(r.zeros),
             f"{r.sparsity:.2%}", str(r.params))
            for r in self.rows
        ]
        body.append(("total", "", "", str(self.zeros), f"{self.sparsity:.2%}", str(self.params)))
        widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

        def fmt(row):
            return "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )

        rule = "-" * len(fmt(header))
        return "\n".join([fmt(header), rule] + [fmt(r) for r in body[:-1]] + [rule, fmt(body[-1])])

    __repr__ = __str__


def _weight_label(layer_name, variable):
    """The variable's path below its layer: 'kernel', 'query/kernel', ..."""
    parts = variable.path.split("/")
    owners = [i for i, part in enumerate(parts[:-1]) if part == layer_name]
    if owners:
        parts = parts[owners[-1] + 1:]
    return "/".join(parts)


def _rows(layer):
    if isinstance(layer, PruneWrapper):
        for w, m in zip(layer.prunable_weights, layer.masks):
            value = keras.ops.convert_to_numpy(w) * keras.ops.convert_to_numpy(m)
            yield layer.layer.name, w, value
    elif is_prunable(layer) and layer.built:
        for w, _ in prunable_weights(layer):
            yield layer.name, w, keras.ops.convert_to_numpy(w)


def sparsity_report(model):
    """Per-layer zeros in the prunable weights of a model.

    Works on wrapped models (counts the zeros of `weight * mask`) and on plain
    or stripped models (counts exact zeros in the prunable kernels).

    Args:
        model: a Keras model or layer.

    Returns:
        A `SparsityReport`: `print(report)` shows a table, `report.rows` /
        `report.as_dicts()` give the data, `report.sparsity` the total.

    Example:
    >>> print(kprune.sparsity_report(kprune.strip_pruning(pruned)))
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"sparsity_report expects a Keras model or layer, got {type(model).__name__}.")
    layers = [model] if not isinstance(model, keras.Model) else [
        l for l in model._flatten_layers(include_self=False)
    ]
    seen, rows = set(), []
    for layer in layers:
        for name, w, value in _rows(layer):
            if id(w) in seen:
                continue
            seen.add(id(w))
            rows.append(SparsityRow(
                layer=name,
                weight=_weight_label(name, w),
                shape=tuple(value.shape),
                zeros=int(value.size - np.count_nonzero(value)),
                params=int(value.size),
            ))
    return SparsityReport(rows)
