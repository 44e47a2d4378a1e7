"""Old import paths, kept working with a `DeprecationWarning`.

kprune's modules moved into subpackages (core, methods, structured, deploy,
reports, utils, cli; see the README's layout section). Code written against
the old paths keeps working: `import kprune.prune`, `from kprune.pruner import
Pruner` or `kprune.at_init.prune_at_init` import the module at its new place
and warn once, naming it.

This module sits at the package root, imports nothing of kprune, and is
installed by `kprune/__init__.py` (and `tflite_export/__init__.py` for
`tflite_export.inspect` and `tflite_export.quiet`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED", "install", "moved_attribute"]

#: old module path -> new module path
MOVED = {
    "kprune.masking": "kprune.core.masking",
    "kprune.schedules": "kprune.core.schedules",
    "kprune.wrapper": "kprune.core.wrapper",
    "kprune.pruned_model": "kprune.core.pruned_model",
    "kprune.prune": "kprune.core.wrapping",
    "kprune.pruner": "kprune.core.pruner",
    "kprune.callbacks": "kprune.core.callbacks",
    "kprune.checks": "kprune.core.checks",
    "kprune.progress": "kprune.utils.progress",
    "kprune.table": "kprune.utils.table",
    "kprune.at_init": "kprune.methods.at_init",
    "kprune.post_training": "kprune.methods.one_shot",
    "kprune.methods.post_training": "kprune.methods.one_shot",
    "kprune.lottery": "kprune.methods.lottery",
    "kprune.movement": "kprune.methods.movement",
    "kprune.regularizers": "kprune.methods.regularizers",
    "kprune.criteria": "kprune.methods.criteria",
    "kprune.distill": "kprune.methods.distill",
    "kprune.forgetting": "kprune.methods.forgetting",
    "kprune.policy": "kprune.deploy.policy",
    "kprune.report": "kprune.reports.sparsity",
    "kprune.flops": "kprune.reports.flops",
    "kprune.tfmot_subprocess": "kprune.tfmot.reference",
    "kprune.structured.pruner": "kprune.structured.channel_pruner",
    "kprune.demo": "kprune.cli.demo",
    "tflite_export.inspect": "tflite_export.inspection",
    "tflite_export.quiet": "kprune.utils.quiet",
}


def _warn(old, new, stacklevel):
    warnings.warn(f"kprune: the module {old} moved to {new}; import it from there "
                  f"(the old path will be removed in a later release).",
                  DeprecationWarning, stacklevel=stacklevel)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths (after every real module) and loads the new module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        _warn(spec.name, new, stacklevel=4)
        return importlib.import_module(new)

    def exec_module(self, module):
        """The new module is already executed."""


def install():
    """Adds the old-path finder to `sys.meta_path` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


def moved_attribute(package, name):
    """The module `package.name` for a package's `__getattr__`, or None if it did not move.

    Args:
        package: the package's name, e.g. "kprune".
        name: the attribute asked for.

    Returns:
        The module at its new place (with a `DeprecationWarning`), or None.

    Example:
    >>> def __getattr__(name):   # in kprune/__init__.py
    ...     module = moved_attribute(__name__, name)
    ...     if module is None:
    ...         raise AttributeError(name)
    ...     return module
    """
    old = f"{package}.{name}"
    if old not in MOVED:
        return None
    _warn(old, MOVED[old], stacklevel=4)
    return importlib.import_module(MOVED[old])
