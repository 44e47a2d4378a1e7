"""Resumable block-by-block runs: `checkpoint_dir=`.

After each block, its pruned kernels and bit-packed masks are written to
`block_<i>.npz` (atomically: a temporary file renamed). `settings.json`
records the run's settings; a later run with the same settings and the same
model loads the finished blocks instead of pruning them again (their
outputs, the next block's inputs, are recomputed with one forward pass per
block), and a run with other settings is refused.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["Checkpoint"]


class Checkpoint:
    """Per-block results on disk (or nothing, for `directory=None`).

    Args:
        directory: the folder (created if missing) or None.
        settings: a JSON-serialisable dict identifying the run.

    Raises:
        ValueError: the folder holds a run with other settings.
    """

    def __init__(self, directory, settings):
        self.directory = None if directory is None else os.fspath(directory)
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, "settings.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            if saved != settings:
                diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
                raise ValueError(
                    f"checkpoint_dir '{self.directory}' holds a run with other settings "
                    f"(different: {diff}); pass an empty folder, or the same settings to resume."
                )
        else:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(settings, f, indent=1)
            os.replace(path + ".tmp", path)

    def _file(self, index):
        return os.path.join(self.directory, f"block_{index:04d}.npz")

    def load(self, index, shapes):
        """`[(kernel, mask)]` of block `index`, or None if not saved (or no folder)."""
        if self.directory is None or not os.path.exists(self._file(index)):
            return None
        with np.load(self._file(index)) as data:
            out = []
            for j, shape in enumerate(shapes):
                kernel = data[f"kernel_{j}"]
                if tuple(kernel.shape) != tuple(shape):
                    raise ValueError(
                        f"checkpoint_dir '{self.directory}': block {index} kernel {j} has shape "
                        f"{kernel.shape}, the model's is {tuple(shape)}; use another folder.")
                mask = np.unpackbits(data[f"mask_{j}"], count=int(np.prod(shape))).astype(bool)
                out.append((kernel, mask.reshape(shape)))
        return out

    def save(self, index, results):
        """Writes `[(kernel, mask)]` of block `index`."""
        if self.directory is None:
            return
        arrays = {}
        for j, (kernel, mask) in enumerate(results):
            arrays[f"kernel_{j}"] = np.asarray(kernel)
            arrays[f"mask_{j}"] = np.packbits(np.asarray(mask, bool).ravel())
        tmp = self._file(index) + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self._file(index))
