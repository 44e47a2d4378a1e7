"""`kprune.tfmot.quantization`: holds `keras`, tfmot's QAT API on kprune (see `kprune.quantization`)."""

from kprune.tfmot.quantization import keras

__all__ = ["keras"]
