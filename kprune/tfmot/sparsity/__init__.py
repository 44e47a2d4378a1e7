"""`kprune.tfmot.sparsity`: holds `keras`, tfmot's pruning API (see `kprune.tfmot`)."""

from kprune.tfmot.sparsity import keras

__all__ = ["keras"]
