"""Keras' type promotion, kept at 64 bits where kprune needs float64.

Keras maps every 64-bit result dtype to 32 bits on the JAX and torch
backends (`keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE`, to match
JAX's default), so `keras.ops.matmul` of two float64 tensors returns float32
there, and a float64 model computes in float32 without a word. Used by the
JAX and torch `float64_scope()` (SynFlow's float64 copy).
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def keep_float64():
    """Inside, float64 results stay float64 (restored after, also on error)."""
    from keras.src.backend.common import dtypes  # noqa: PLC0415  (no public switch)

    table = dtypes.BIT64_TO_BIT32_DTYPE
    previous = table.get("float64")
    table["float64"] = "float64"
    try:
        yield
    finally:
        table["float64"] = previous
