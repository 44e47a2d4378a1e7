"""The memory estimate made before one-shot pruning starts.

The estimate adds what the run allocates on top of the loaded model: the
result (a copy of the weights and its masks, unless `in_place=True`), the
cached block inputs (twice: a block's inputs and its outputs coexist while
they are computed), and the largest statistics of one layer group (SparseGPT:
`X^T X` and its inverse factor in float64, plus the float64 working copy of
the kernel). `check_memory` refuses a run whose estimate exceeds the memory
the system says is available, before any work is done.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["available_memory", "Estimate", "check_memory"]


def available_memory():
    """Bytes the OS says are available (`MemAvailable`), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


class Estimate:
    """Bytes a one-shot run adds to the loaded model, by part.

    Attributes:
        parts: `{name: bytes}`.
        total: their sum.
    """

    def __init__(self, weights, pruned, views, in_place, activation_bytes, method, wrap,
                 rebuild=False):
        parts = {}
        if not in_place:
            parts["copy of the weights"] = weights
            if wrap:
                parts["masks of the pruned kernels"] = pruned
            if rebuild:  # a graph model: the wrapped result is rebuilt from the working copy
                parts["result rebuilt with PruneWrappers, and its masks"] = weights + pruned
        parts["cached block inputs and outputs"] = 2 * activation_bytes
        if method == "sparsegpt":
            n = max((v.n_in for v in views), default=0)
            k = max((v.n_in * v.n_out for v in views), default=0)
            parts["SparseGPT statistics of one layer (float64)"] = 4 * 8 * n * n + 3 * 8 * k
        elif method == "wanda":
            k = max((v.n_in * v.n_out for v in views), default=0)
            parts["Wanda scores of one layer (float64)"] = 3 * 8 * k
        else:
            k = max((v.n_in * v.n_out for v in views), default=0)
            parts["magnitude scores of one layer (float64)"] = 2 * 8 * k
        self.parts = parts
        self.total = int(sum(parts.values()))

    def describe(self):
        return ", ".join(f"{name} {gib(b)}" for name, b in self.parts.items())


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def check_memory(estimate, max_memory=None):
    """Raises MemoryError when `estimate.total` exceeds `max_memory` (default:
    the available memory), saying what to change."""
    limit = available_memory() if max_memory is None else int(max_memory)
    if limit is None or estimate.total <= limit:
        return
    raise MemoryError(
        f"prune_post_training would need about {gib(estimate.total)} on top of the loaded "
        f"model ({estimate.describe()}) but {gib(limit)} "
        f"{'are available' if max_memory is None else 'is the max_memory given'}; nothing "
        f"was done. Prune in place (in_place=True: no copy, no mask variables), pass fewer "
        f"calibration batches (num_batches=) or shorter sequences, or free memory."
    )


def weight_bytes(variables):
    """Total bytes of `variables`."""
    return int(sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize
                   for v in variables))
