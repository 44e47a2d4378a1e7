"""`kprune.tfmot.experimental`: holds `combine` (tfmot's collaborative optimization schemes)."""

from kprune.tfmot.experimental import combine

__all__ = ["combine"]
