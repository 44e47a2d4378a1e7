"""The settings of a one-shot run, checked once (`OneShotConfig.from_arguments`)."""

from __future__ import annotations

import dataclasses

from kprune.core import checks, masking

__all__ = ["METHODS", "COMPARISONS", "QUANTIZE", "OneShotConfig"]

#: The one-shot methods, and whether each needs calibration data.
METHODS = {"magnitude": False, "wanda": True, "sparsegpt": True}

#: The joint quantization modes (Keras' own int8 / int4 layers).
QUANTIZE = (None, "int8", "int4")

#: Wanda's comparison groups for unstructured sparsity.
COMPARISONS = ("auto", "output", "layer")


@dataclasses.dataclass(frozen=True)
class OneShotConfig:
    """Checked settings of `prune_post_training` (see its docstring)."""

    method: str
    sparsity: float
    granularity: object
    damping: float
    block_size: int
    comparison: str
    quantize: object = None

    @classmethod
    def from_arguments(cls, method, sparsity, granularity, damping, block_size, comparison,
                       quantize=None):
        """Checks and normalises the arguments.

        Raises:
            ValueError, TypeError: in kprune's words, naming the parameter.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}.")
        granularity = masking.get_granularity(granularity)
        if isinstance(granularity, masking.Channel):
            raise ValueError(
                "granularity=kprune.Channel(...) is structured pruning; use "
                "kprune.structured for filter pruning. prune_post_training takes "
                "'unstructured', kprune.NM(n, m) or kprune.Block((r, c))."
            )
        if sparsity is None:
            sparsity = granularity.n / granularity.m if isinstance(granularity, masking.NM) else 0.5
        sparsity = checks.check_sparsity("sparsity", sparsity)
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or damping < 0:
            raise ValueError(f"damping must be a non-negative number, got {damping!r}.")
        checks.check_int("block_size", block_size, lo=1)
        if comparison not in COMPARISONS:
            raise ValueError(
                f"comparison must be 'auto', 'output' or 'layer', got {comparison!r}.")
        if quantize not in QUANTIZE:
            raise ValueError(
                f"quantize must be None, 'int8' or 'int4', got {quantize!r}.")
        if quantize is not None and method != "sparsegpt":
            raise ValueError(
                f"quantize={quantize!r} is SparseGPT's joint mode (pruning and rounding in "
                f"one column sweep); use method='sparsegpt', or call model.quantize(...) "
                f"after method={method!r}.")
        return cls(method, float(sparsity), granularity, float(damping), int(block_size),
                   comparison, quantize)

    @property
    def needs_data(self):
        return METHODS[self.method]

    def settings(self):
        """A JSON-serialisable description (for checkpoints)."""
        return {"method": self.method, "sparsity": self.sparsity,
                "granularity": repr(self.granularity), "damping": self.damping,
                "block_size": self.block_size, "comparison": self.comparison,
                "quantize": self.quantize}
