"""kprune: the pruning toolkit for Keras 3."""

from kprune.masking import NM, Block, Channel, Granularity, Unstructured, compute_mask, compute_masks

__version__ = "0.1.0"
