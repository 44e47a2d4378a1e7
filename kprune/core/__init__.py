"""The core every pruning method uses.

`masking` (the one mask engine: scores -> masks), `schedules`, `wrapper`
(the pruned layer and its masks), `model_tree` (walking and cloning a model's
layer tree), `pruned_model` (layers pruned where they are), `wrapping`
(`prune_low_magnitude`, `strip_pruning`), `pruner` (step counter and mask
updates), `callbacks` (`PruningCallback`), `checks` (argument checks) and
`calibration` (the calibration-data contract: batches, loss, gradient
loop) and `hessian` (the loss Hessian's diagonal, OBD saliencies).
"""
