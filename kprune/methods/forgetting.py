"""What pruning forgot: per-class damage and pruning-identified exemplars.

Hooker, Courville, Clark, Dauphin & Frome, "What Do Compressed Deep Neural
Networks Forget?" (2019): top-1 accuracy hides where a pruned network got
worse. The damage is concentrated in a few classes and a small set of
examples, the *pruning-identified exemplars* (PIEs), which are often
atypical, ambiguous or mislabelled.

`forgetting_report(dense, pruned, x, y)` compares the two models on the same
data and returns a `ForgettingReport` with

* per class: number of examples, dense and pruned accuracy, and the change
  (the paper also normalises by the overall change; `relative_change` is
  `(pruned_acc_c - dense_acc_c) - (pruned_acc - dense_acc)`);
* `pie_indices`: examples the dense model gets right and the pruned one
  gets wrong;
* `disagreement_indices`: Hooker et al.'s PIE definition, examples where the
  modal (most frequent) label of the pruned models differs from that of the
  dense models. With one model each, PIEs are a subset of these.

`dense` and `pruned` may each be one model or a list of models (a
population, e.g. 3 seeds; the paper uses 30), or arrays of predictions
(labels `(n,)` or scores `(n, classes)`), so a report can be built from
saved outputs.
"""

from __future__ import annotations

import numpy as np

from kprune.utils.table import format_table

__all__ = ["ForgettingReport", "forgetting_report"]


def _labels(source, x, batch_size):
    """Predicted labels `(n,)` from a model or from prediction arrays."""
    if hasattr(source, "predict"):
        if x is None:
            raise ValueError("x is needed to run the models.")
        out = np.asarray(source.predict(x, batch_size=batch_size, verbose=0))
    else:
        out = np.asarray(source)
    if out.ndim == 2 and out.shape[1] > 1:
        return out.argmax(axis=1)
    if out.ndim == 2 and out.shape[1] == 1:
        return (out[:, 0] > (0.5 if out.min() >= 0 else 0.0)).astype(int)
    if out.ndim == 1:
        return out.astype(int)
    raise ValueError(f"predictions must be (n,) labels or (n, classes) scores, got {out.shape}.")


def _population(sources, x, batch_size, name, n):
    if hasattr(sources, "predict") or isinstance(sources, np.ndarray):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not sources:
        raise TypeError(f"{name} must be a model, an array of predictions, or a non-empty list of them.")
    labels = np.stack([_labels(s, x, batch_size) for s in sources])
    if labels.shape[1] != n:
        raise ValueError(f"{name}: predictions for {labels.shape[1]} examples, but y has {n}.")
    return labels


def _modal(labels, num_classes):
    """Most frequent label per example (ties: the lowest label)."""
    counts = np.zeros((labels.shape[1], num_classes), np.int64)
    for row in labels:
        np.add.at(counts, (np.arange(labels.shape[1]), row), 1)
    return counts.argmax(axis=1)


class ForgettingReport:
    """Per-class accuracy change and pruning-identified exemplars.

    Attributes:
        classes: the class labels, in order.
        counts: examples per class.
        dense_accuracy, pruned_accuracy: per-class accuracy arrays (of the
            modal predictions when populations are given).
        dense_overall, pruned_overall: overall accuracy.
        pie_indices: indices of the examples the dense model(s) get right and
            the pruned model(s) get wrong.
        disagreement_indices: indices where the modal labels differ.
        dense_labels, pruned_labels: the modal predictions.
    """

    def __init__(self, y, dense_labels, pruned_labels, class_names=None):
        y = np.asarray(y).astype(int).reshape(-1)
        num_classes = int(max(y.max(), dense_labels.max(), pruned_labels.max())) + 1
        self.y = y
        self.dense_labels = _modal(dense_labels, num_classes)
        self.pruned_labels = _modal(pruned_labels, num_classes)
        self.classes = np.unique(y)
        names = class_names if class_names is not None else None
        self.class_names = [str(names[c]) if names is not None else str(c) for c in self.classes]
        dense_ok = self.dense_labels == y
        pruned_ok = self.pruned_labels == y
        self.counts = np.array([int((y == c).sum()) for c in self.classes])
        self.dense_accuracy = np.array([dense_ok[y == c].mean() for c in self.classes])
        self.pruned_accuracy = np.array([pruned_ok[y == c].mean() for c in self.classes])
        self.dense_overall = float(dense_ok.mean())
        self.pruned_overall = float(pruned_ok.mean())
        self.pie_indices = np.flatnonzero(dense_ok & ~pruned_ok)
        self.disagreement_indices = np.flatnonzero(self.dense_labels != self.pruned_labels)
        self.recovered_indices = np.flatnonzero(~dense_ok & pruned_ok)

    @property
    def change(self):
        """Per-class `pruned - dense` accuracy."""
        return self.pruned_accuracy - self.dense_accuracy

    @property
    def relative_change(self):
        """Per-class change minus the overall change (Hooker et al.)."""
        return self.change - (self.pruned_overall - self.dense_overall)

    def pies_per_class(self):
        """Number of PIEs per class, in the order of `classes`."""
        return np.array([int((self.y[self.pie_indices] == c).sum()) for c in self.classes])

    def as_dicts(self):
        """One dict per class (for pandas or JSON)."""
        pies = self.pies_per_class()
        return [
            {"class": name, "n": int(n), "dense_acc": float(d), "pruned_acc": float(p),
             "change": float(p - d), "relative_change": float(r), "pies": int(k)}
            for name, n, d, p, r, k in zip(self.class_names, self.counts, self.dense_accuracy,
                                           self.pruned_accuracy, self.relative_change, pies)
        ]

    def table(self):
        """The per-class table as text, worst change first."""
        rows = sorted(self.as_dicts(), key=lambda r: r["change"])
        body = [[r["class"], r["n"], f"{r['dense_acc']:.2%}", f"{r['pruned_acc']:.2%}",
                 f"{100 * r['change']:+.2f}", f"{100 * r['relative_change']:+.2f}", r["pies"]]
                for r in rows]
        body.append(["all", int(self.counts.sum()), f"{self.dense_overall:.2%}",
                     f"{self.pruned_overall:.2%}",
                     f"{100 * (self.pruned_overall - self.dense_overall):+.2f}", "", len(self.pie_indices)])
        return format_table(
            ["class", "n", "dense acc", "pruned acc", "change (pt)", "vs overall (pt)", "PIEs"], body)

    def __str__(self):
        return (f"{self.table()}\n{len(self.pie_indices)} pruning-identified exemplars (dense right, "
                f"pruned wrong); {len(self.recovered_indices)} the other way; "
                f"{len(self.disagreement_indices)} with different labels.")

    __repr__ = __str__

    def plot(self, x=None, max_exemplars=8, figsize=None):
        """A bar chart of the per-class change, and PIE images if `x` is given.

        Args:
            x: the inputs (images `(n, h, w[, c])` or flat vectors of a square
                number of pixels), to show the first `max_exemplars` PIEs with
                their dense -> pruned labels.
            max_exemplars: number of PIEs shown.
            figsize: matplotlib figure size.

        Returns:
            The matplotlib `Figure`.
        """
        import matplotlib.pyplot as plt  # noqa: PLC0415

        show = [] if x is None else list(self.pie_indices[:max_exemplars])
        cols = max(len(show), 1)
        fig = plt.figure(figsize=figsize or (max(6, 1.3 * cols), 5 if show else 3))
        ax = fig.add_subplot(2 if show else 1, 1, 1)
        change = 100 * self.change
        ax.bar(self.class_names, change, color=["tab:red" if c < 0 else "tab:green" for c in change])
        ax.axhline(100 * (self.pruned_overall - self.dense_overall), color="k", ls="--",
                   lw=1, label="overall")
        ax.set_ylabel("accuracy change (points)")
        ax.set_xlabel("class")
        ax.set_title(f"What pruning forgot: {len(self.pie_indices)} PIEs")
        ax.legend()
        for i, idx in enumerate(show):
            img = np.asarray(x[idx])
            if img.ndim == 1:
                side = int(round(np.sqrt(img.size)))
                img = img.reshape(side, side) if side * side == img.size else img[None, :]
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            sub = fig.add_subplot(2, cols, cols + i + 1)
            sub.imshow(img, cmap="gray")
            sub.set_title(f"y={self.y[idx]}: {self.dense_labels[idx]}->{self.pruned_labels[idx]}",
                          fontsize=8)
            sub.axis("off")
        fig.tight_layout()
        return fig


def forgetting_report(dense, pruned, x=None, y=None, class_names=None, batch_size=256):
    """Compares a pruned model with its dense original, class by class.

    Args:
        dense: the dense model, a list of dense models (a population), or
            their predictions (labels `(n,)` or scores `(n, classes)`).
        pruned: the same for the pruned model(s).
        x: the inputs (needed when models are given).
        y: the true labels `(n,)` (integers).
        class_names: optional names indexed by label.
        batch_size: batch size of `predict`.

    Returns:
        A `ForgettingReport` (print it for the table; `.plot()` for a figure).

    Raises:
        ValueError: `y` is missing, or the predictions do not match `y`.

    Example:
    ```python
    report = kprune.forgetting_report(dense, kprune.strip_pruning(pruned), x_test, y_test)
    print(report)
    report.plot(x_test)
    ```
    """
    if y is None:
        raise ValueError("y (the true labels) is required.")
    y = np.asarray(y).reshape(-1)
    d = _population(dense, x, batch_size, "dense", len(y))
    p = _population(pruned, x, batch_size, "pruned", len(y))
    return ForgettingReport(y, d, p, class_names)
