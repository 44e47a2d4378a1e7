"""Recovery of a pruned decoder by logit distillation from the dense teacher (Minitron).

`distill` trains the pruned `*CausalLM` (or any Keras model that maps token
ids to next-token logits) on the teacher's next-token distributions: the
loss is Minitron's forward KL between the teacher's and the student's
softmax over the vocabulary at every position (temperature 1 by default),
optionally mixed with the cross-entropy on the real next tokens. It is
`kprune.methods.distill.distill` (Keras' own `keras.distillation.Distiller`) with
the inputs and targets of a language model built from token ids; it is
resumable (`backup_dir`) and reports progress through `kprune.utils.progress`.
"""

from __future__ import annotations

import keras
import numpy as np

from kprune.core import checks
from kprune.methods import distill as methods_distill

__all__ = ["distill", "lm_batches"]


def lm_batches(token_ids):
    """`(x, y)` for next-token training: x = ids[:, :-1] (dict), y = ids[:, 1:].

    Args:
        token_ids: int array `(examples, sequence length >= 2)`.

    Returns:
        `({"token_ids", "padding_mask"}, targets)`.
    """
    ids = np.asarray(token_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or ids.shape[1] < 2 or not len(ids):
        raise ValueError(f"token_ids must be integer token ids of shape (examples, sequence >= 2), "
                         f"got dtype {ids.dtype} shape {ids.shape}.")
    ids = ids.astype("int32")
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    return x, ids[:, 1:]


def distill(student, teacher, token_ids, epochs=1, batch_size=8, temperature=1.0,
            student_loss_weight=0.0, optimizer="adam", backup_dir=None, verbose=1, **fit_kwargs):
    """Logit distillation of a pruned language model from its dense teacher.

    Args:
        student: the pruned `*CausalLM` (trained in place), or any Keras model
            mapping `{"token_ids", "padding_mask"}` to logits
            `(batch, sequence, vocabulary)`.
        teacher: the dense model (same inputs and vocabulary; not changed).
        token_ids: int array `(examples, sequence)` of training text.
        epochs, batch_size: as `fit`.
        temperature: softening temperature (Minitron: 1).
        student_loss_weight: weight of the next-token cross-entropy on the
            real text; the KL gets `1 - student_loss_weight` (default 0:
            pure logit distillation, as Minitron).
        optimizer: a Keras optimizer (or name).
        backup_dir: directory that makes the run resumable (see
            `kprune.methods.distill.distill`).
        verbose: 0 silent, 1 progress, 2 final line only.
        **fit_kwargs: other `fit` arguments (`shuffle`, `callbacks`, ...).

    Returns:
        `(student, history)`.

    Raises:
        TypeError: a model is a backbone (no logits): pass the `*CausalLM`.
        ValueError: bad token ids, or the two vocabularies differ.

    Example:
    >>> small, history = kprune.llm.distill(small, causal_lm, train_ids, epochs=2,
    ...                                     backup_dir="/tmp/distill")
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if hasattr(model, "token_embedding") and hasattr(model, "transformer_layers"):
            raise TypeError(f"{name} is a backbone ({type(model).__name__}), whose outputs are hidden "
                            f"states, not logits: pass the *CausalLM around it.")
    x, y = lm_batches(token_ids)
    temperature = checks.check_float("temperature", temperature, lo=0.0, lo_inclusive=False)
    student_loss_weight = checks.check_float("student_loss_weight", student_loss_weight, lo=0.0, hi=1.0)
    probe = {k: v[:1] for k, v in x.items()}
    vs = [int(keras.ops.shape(m(probe))[-1]) for m in (student, teacher)]
    if vs[0] != vs[1]:
        raise ValueError(f"student and teacher vocabularies differ ({vs[0]} vs {vs[1]} logits); "
                         f"distillation on logits needs the same tokenizer.")
    return methods_distill.distill(
        student, teacher, x, y, epochs=epochs, batch_size=batch_size, temperature=temperature,
        student_loss_weight=student_loss_weight, optimizer=optimizer, verbose=verbose,
        backup_dir=backup_dir, **fit_kwargs)
