"""Quantization-aware training (QAT) for Keras 3 that keeps the pruning.

Train a (pruned) model with 8-bit fake quantization, on every backend, and
export it to a full-integer int8 .tflite file whose quantization parameters
are the trained ranges and whose pruned weights are exact zeros:

```python
import kprune, tflite_export
from kprune import quantization

qat = quantization.quantize_model(kprune.strip_pruning(pruned))  # keeps the zeros
qat.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
qat.fit(x, y, epochs=1)
tflite = tflite_export.convert(qat, quantize="int8")
```

* `quantizers.py`: the weight and activation fake quantizers (tfmot's
  default 8-bit scheme).
* `wrapper.py`: `QuantizeWrapper`, one layer trained quantization-aware.
* `apply.py`: `quantize_model`, `quantize_annotate_layer`,
  `quantize_annotate_model`, `quantize_apply` (batch-norm folding, where the
  int8 graph has a tensor to quantize).

tfmot's own names (`kprune.tfmot.quantization.keras`) sit on top of these.
"""

from kprune.quantization.apply import (
    FoldedBatchNorm,
    QuantizeAnnotate,
    check_not_keras_quantized,
    is_quantization_aware,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    uncovered_layers,
)
from kprune.quantization.quantizers import ActivationQuantizer, WeightQuantizer
from kprune.quantization.wrapper import QuantizeWrapper

__all__ = [
    "ActivationQuantizer",
    "FoldedBatchNorm",
    "QuantizeAnnotate",
    "QuantizeWrapper",
    "WeightQuantizer",
    "check_not_keras_quantized",
    "is_quantization_aware",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "uncovered_layers",
]
