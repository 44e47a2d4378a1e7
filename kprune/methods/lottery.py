"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding.

Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019), and Frankle
et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis" (ICML
2020, rewinding to iteration k); the recipe of `facebookresearch/open_lth`:

1. train the dense network (saving its weights at iteration `k`; `k = 0` is
   the initialisation);
2. remove `fraction = 0.2` of the **remaining** weights with the lowest
   magnitude, with one threshold over all pruned tensors (`scope="global"`,
   open_lth's `sparse_global`);
3. rewind the surviving weights (and every other weight: biases,
   normalisation) to their values at iteration `k`;
4. retrain, and repeat from 2.

After `r` rounds the density is `0.8 ** r` (90% sparsity after ~10 rounds,
98% after ~18). Every round keeps exactly `round(n_remaining * (1 - fraction))`
weights (`kprune.core.masking.kept_count`), selected by the mask engine
(`kprune.core.masking.compute_masks`); weights pruned earlier score `-inf` and are
never revived.

The baseline of Liu et al., "Rethinking the Value of Network Pruning" (ICLR
2019) is `IterativeMagnitudePruning.reinitialized()`: the same sparse
architecture (masks) with freshly initialised weights, trained from scratch.

The model IMP trains is a copy of the caller's model with fixed-mask
`kprune.PruneWrapper`s (`pruning_schedule=None`): no pruning callback is
needed, and the wrappers' `MaskConstraint` keeps pruned weights exactly zero.
`save(path)` writes a normal `.keras` file of that model (the masks are its
variables) with the IMP state (round, rewind point, settings) added to the
archive; `IterativeMagnitudePruning.load(path)` resumes from it, and
`keras.saving.load_model(path)` still opens it as a plain pruned model.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from kprune.core import checks, masking, model_tree
from kprune.core import wrapping as prune_lib

__all__ = ["IterativeMagnitudePruning", "RewindCheckpoint"]

_STATE_NPZ = "kprune_lottery_state.npz"
_STATE_JSON = "kprune_lottery_state.json"


def _numpy(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


#: What `fraction` means, for its error messages.
_FRACTION_FIX = ("It is the fraction of the remaining weights removed per round (0.2 in "
                 "Frankle & Carbin 2019).")


class RewindCheckpoint(keras.callbacks.Callback):
    """Saves the rewind point of an `IterativeMagnitudePruning` at step `k`.

    Counts training batches over every `fit` it is passed to, and stores the
    model's weights once, after batch `k` (`k = rewind_step`). Get it from
    `IterativeMagnitudePruning.callback()`.

    Args:
        imp: the `IterativeMagnitudePruning` whose rewind point to record.
    """

    def __init__(self, imp):
        super().__init__()
        self.imp = imp
        self._last_batch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        self.imp.steps_trained += batch - self._last_batch
        self._last_batch = batch
        if self.imp.rewind_weights is None and self.imp.steps_trained >= self.imp.rewind_step:
            self.model  # noqa: B018  (on JAX: syncs the train step's state into the variables)
            self.imp.record_rewind_point()


class IterativeMagnitudePruning:
    """Lottery tickets by iterative magnitude pruning with rewinding.

    Args:
        model: a built Sequential or functional model, usually freshly
            initialised (not modified).
        fraction: fraction of the remaining weights removed per round
            (default 0.2, Frankle & Carbin 2019).
        rewind_step: the training iteration whose weights the survivors are
            rewound to: 0 (default) is the initialisation (the original
            lottery ticket); `k > 0` is "late rewinding" (Frankle et al. 2020
            use a few hundred iterations for ResNets). Recorded by
            `callback()` during the first training run.
        scope: `"global"` (default; one threshold over all pruned tensors,
            as open_lth) or `"layer"` (every tensor loses `fraction` of its
            remaining weights).
        ignore: layer names or classes to leave dense.
        include_bias: also prune the biases of the pruned layers.
        min_keep: global scope: every tensor keeps at least this many
            weights (default 0, open_lth's behaviour).

    Attributes:
        model: the model to train: a copy of `model` with fixed-mask
            `PruneWrapper`s. Compile it (again) before every round's `fit`.
        round: number of pruning rounds done.
        rewind_weights: the rewind point (list of arrays), or None before it
            is recorded.

    Example:
    ```python
    imp = kprune.IterativeMagnitudePruning(model, fraction=0.2)
    for r in range(10):          # 0.8**10: 89% sparsity
        imp.model.compile("adam", "sparse_categorical_crossentropy")
        imp.model.fit(x, y, epochs=2, callbacks=[imp.callback()])
        imp.prune()              # remove 20% of the rest, rewind
        imp.save("imp.keras")    # resumable: IterativeMagnitudePruning.load
    imp.model.compile("adam", "sparse_categorical_crossentropy")
    imp.model.fit(x, y, epochs=2)   # train the final ticket
    ticket = kprune.strip_pruning(imp.model)
    ```
    """

    def __init__(self, model, fraction=0.2, rewind_step=0, scope="global", ignore=None,
                 include_bias=False, min_keep=0, _wrapped=None):
        self.fraction = checks.check_fraction("fraction", fraction, fix=_FRACTION_FIX)
        if isinstance(rewind_step, bool) or not isinstance(rewind_step, (int, np.integer)) or rewind_step < 0:
            raise ValueError(
                f"rewind_step must be a non-negative integer (0 = rewind to the "
                f"initialisation), got {rewind_step!r}."
            )
        if scope not in ("global", "layer"):
            raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}.")
        if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
            raise ValueError(f"min_keep must be a non-negative integer, got {min_keep!r}.")
        self.rewind_step = int(rewind_step)
        self.scope = scope
        self.include_bias = bool(include_bias)
        self.min_keep = min_keep
        self.round = 0
        self.steps_trained = 0
        self.rewind_weights = None
        if _wrapped is not None:
            self.model = _wrapped
        else:
            targets = prune_lib.select_layers(model, None, ignore, caller="IterativeMagnitudePruning")
            self.model = prune_lib.wrap_fixed(model, targets, scope=scope,
                                              prune_bias=self.include_bias)
            if self.rewind_step == 0:
                self.record_rewind_point()

    # -- bookkeeping ------------------------------------------------------

    @property
    def wrappers(self):
        """The model's `PruneWrapper`s."""
        return model_tree.find_wrappers(self.model)

    def _state_ids(self):
        ids = set()
        for w in self.wrappers:
            ids.update(id(m) for m in w.masks)
            ids.add(id(w.pruning_step))
        return ids

    def _rewound_variables(self):
        """Every variable of the model except the masks and step counters."""
        skip = self._state_ids()
        return [v for v in self.model.weights if id(v) not in skip]

    def record_rewind_point(self):
        """Stores the current weights as the rewind point (done for you)."""
        self.rewind_weights = [_numpy(v) for v in self._rewound_variables()]

    def callback(self):
        """A `RewindCheckpoint` for `fit`: records the weights at `rewind_step`."""
        return RewindCheckpoint(self)

    @property
    def masks(self):
        """The current masks, `{(layer name, weight index): bool array}`."""
        return {
            (w.layer.name, i): _numpy(m).astype(bool)
            for w in self.wrappers for i, m in enumerate(w.masks)
        }

    @property
    def sparsity(self):
        """Fraction of the pruned tensors' weights that are removed."""
        masks = list(self.masks.values())
        total = sum(m.size for m in masks)
        return 1.0 - sum(int(m.sum()) for m in masks) / max(total, 1)

    # -- the method -------------------------------------------------------

    def prune(self, fraction=None, rewind=True):
        """One IMP round: remove `fraction` of the remaining weights, rewind.

        Args:
            fraction: this round's fraction of the remaining weights to
                remove (default: the constructor's `fraction`), e.g. a
                smaller last round that lands exactly on a target sparsity.
            rewind: rewind every weight to the rewind point (default True).
                False keeps the trained weights ("fine-tuning" baseline).

        Returns:
            The new sparsity (float).

        Raises:
            ValueError: `rewind=True` before the rewind point was recorded
                (train with `callbacks=[imp.callback()]` past `rewind_step`).
        """
        fraction = self.fraction if fraction is None else checks.check_fraction("fraction", fraction, fix=_FRACTION_FIX)
        if rewind and self.rewind_weights is None:
            raise ValueError(
                f"No rewind point yet: rewind_step={self.rewind_step}, and "
                f"{self.steps_trained} training steps were recorded. Train with "
                f"callbacks=[imp.callback()] for at least {self.rewind_step} "
                f"steps before imp.prune(), or call imp.prune(rewind=False)."
            )
        wrappers = self.wrappers
        scores, old = {}, {}
        for wi, w in enumerate(wrappers):
            for vi, (var, mask) in enumerate(zip(w.prunable_weights, w.masks)):
                keep = _numpy(mask).astype(bool)
                old[(wi, vi)] = keep
                scores[(wi, vi)] = np.where(keep, np.abs(_numpy(var)).astype(np.float64), -np.inf)
        if self.scope == "global":
            remaining = sum(int(m.sum()) for m in old.values())
            total = sum(m.size for m in old.values())
            kept = masking.kept_count(remaining, fraction)
            masks = masking.compute_masks(scores, 1.0 - kept / total, scope="global",
                                          min_keep=self.min_keep)
        else:
            sparsity = {
                k: 1.0 - masking.kept_count(int(m.sum()), fraction) / m.size for k, m in old.items()
            }
            masks = masking.compute_masks(scores, sparsity, scope="layer")
        if rewind:
            for var, value in zip(self._rewound_variables(), self.rewind_weights):
                var.assign(value)
        for wi, w in enumerate(wrappers):
            # Never revive: a weight pruned before stays pruned.
            w.assign_masks([masks[(wi, vi)] & old[(wi, vi)] for vi in range(len(w.masks))])
        self.round += 1
        return self.sparsity

    def run(self, train, rounds, final_train=True, verbose=1):
        """The whole loop: `rounds` times train, prune and rewind.

        Args:
            train: `train(model, callbacks)`, which compiles and fits `model`
                (passing `callbacks` to `fit`) and may return a result (e.g.
                the test accuracy).
            rounds: number of pruning rounds.
            final_train: also train the last ticket (default True).
            verbose: 1 prints a line per round.

        Returns:
            A list of `(round, sparsity, result)`, one per training run.
        """
        history = []
        for _ in range(int(rounds)):
            result = train(self.model, [self.callback()])
            history.append((self.round, self.sparsity, result))
            self.prune()
            if verbose:
                print(f"kprune IMP: round {self.round}: sparsity {self.sparsity:.4f} (last result {result})")
        if final_train:
            history.append((self.round, self.sparsity, train(self.model, [self.callback()])))
        return history

    def reinitialized(self, seed=None):
        """The current sparse architecture with fresh random weights.

        The "random re-initialisation" baseline of Frankle & Carbin and of
        Liu et al. 2019 ("Rethinking the Value of Network Pruning"): same
        masks, weights drawn again from the layers' initializers.

        Args:
            seed: if given, `keras.utils.set_random_seed(seed)` is called
                first (this seeds Python, numpy and the backend globally).

        Returns:
            A new model (the IMP model is unchanged).
        """
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
        fresh = keras.models.clone_model(self.model)
        for old, new in zip(self.wrappers, model_tree.find_wrappers(fresh)):
            new.assign_masks([_numpy(m) for m in old.masks])
        return fresh

    # -- save / resume ----------------------------------------------------

    def get_config(self):
        """The IMP settings and progress (JSON-serialisable)."""
        return {
            "fraction": self.fraction,
            "rewind_step": self.rewind_step,
            "scope": self.scope,
            "include_bias": self.include_bias,
            "min_keep": self.min_keep,
            "round": self.round,
            "steps_trained": self.steps_trained,
            "has_rewind_point": self.rewind_weights is not None,
        }

    def save(self, filepath):
        """Writes the model and the IMP state to one `.keras` file.

        The file is a normal Keras archive of `self.model` (masks included),
        plus the rewind point and `get_config()`. It is written to a
        temporary file first, so a failed save leaves `filepath` as it was.

        Args:
            filepath: path ending in `.keras`.
        """
        filepath = os.fspath(filepath)
        if not filepath.endswith(".keras"):
            raise ValueError(f"filepath must end in '.keras', got {filepath!r}.")
        directory = os.path.dirname(os.path.abspath(filepath))
        fd, tmp = tempfile.mkstemp(suffix=".keras", dir=directory)
        os.close(fd)
        try:
            self.model.save(tmp)
            buffer = io.BytesIO()
            arrays = {} if self.rewind_weights is None else {
                f"w{i}": a for i, a in enumerate(self.rewind_weights)}
            np.savez(buffer, **arrays)
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(_STATE_NPZ, buffer.getvalue())
                archive.writestr(_STATE_JSON, json.dumps(self.get_config()))
            os.replace(tmp, filepath)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, filepath, custom_objects=None):
        """Resumes IMP from a file written by `save`.

        Args:
            filepath: the `.keras` file.
            custom_objects: passed to `keras.saving.load_model`.

        Returns:
            An `IterativeMagnitudePruning` at the saved round, with the saved
            masks, weights and rewind point.
        """
        filepath = os.fspath(filepath)
        with zipfile.ZipFile(filepath) as archive:
            names = archive.namelist()
            if _STATE_JSON not in names:
                raise ValueError(
                    f"{filepath!r} is a Keras file without IMP state; it was not "
                    f"written by IterativeMagnitudePruning.save."
                )
            config = json.loads(archive.read(_STATE_JSON))
            arrays = np.load(io.BytesIO(archive.read(_STATE_NPZ)))
            rewind = [arrays[f"w{i}"] for i in range(len(arrays.files))]
        model = keras.saving.load_model(filepath, custom_objects=custom_objects, compile=False)
        imp = cls(None, config["fraction"], config["rewind_step"], config["scope"],
                  include_bias=config["include_bias"], min_keep=config["min_keep"],
                  _wrapped=model)
        imp.round = config["round"]
        imp.steps_trained = config["steps_trained"]
        imp.rewind_weights = rewind if config["has_rewind_point"] else None
        if imp.rewind_weights is not None:
            shapes = [tuple(v.shape) for v in imp._rewound_variables()]
            if shapes != [a.shape for a in imp.rewind_weights]:
                raise ValueError(
                    f"{filepath!r}: the saved rewind point does not match the "
                    f"model's variables ({len(rewind)} arrays for {len(shapes)} variables)."
                )
        return imp
