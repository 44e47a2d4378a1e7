"""Reports on a Keras model: `sparsity` (zeros per weight, detected pattern)
and `flops` (FLOPs, parameters, widths)."""
