"""`tfmot.experimental.combine` on Keras 3: pruning-preserving QAT (PQAT).

Example (tfmot's PQAT guide, with only the import changed):
```python
import kprune.tfmot as tfmot

annotated = tfmot.quantization.keras.quantize_annotate_model(stripped_pruned_model)
pqat_model = tfmot.quantization.keras.quantize_apply(
    annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
```
"""

from __future__ import annotations

from kprune.tfmot.quantization.keras import Default8BitQuantizeScheme

__all__ = ["Default8BitPrunePreserveQuantizeScheme"]


class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme that keeps the zeros of pruned kernels.

    Every kernel's zeros get a `kprune.core.wrapper.MaskConstraint`: they stay
    exactly zero after every optimizer step, and are the int8 value 0 in the
    exported file.
    """

    preserve_sparsity = True
