"""kprune: the pruning toolkit for Keras 3."""

from kprune.masking import NM, Block, Channel, Granularity, Unstructured, compute_mask, compute_masks
from kprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kprune.wrapper import PrunableLayer, PruneWrapper, register_prunable
from kprune.prune import prune_low_magnitude, strip_pruning
from kprune.pruner import Pruner, update_masks
from kprune.callbacks import PruningCallback, UpdatePruningStep
from kprune.report import sparsity_report

__version__ = "0.1.0"
