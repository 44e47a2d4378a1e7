"""One place for argument checks.

Every public entry point of kprune validates its arguments with these
functions before it reads or builds anything, so bad input fails the same way
everywhere: a `TypeError` (wrong kind of value) or a `ValueError` (right kind,
wrong value) whose message names the parameter, says what was expected and
what was got, and how to fix it. Nothing is modified before a check fails.

Conventions shared by all checks:

* numbers: Python `int`/`float` and numpy scalars (`np.float32(0.8)`,
  `np.int32(8)`) are numbers; so are 0-d numpy arrays and 0-d tensors
  (`optimizer.iterations`). `True`/`False` are **not** numbers.
* integers: a float is never silently truncated (`2.7` is refused, and so is
  `2.0`: pass `int(...)`).
* floats: NaN and infinities are refused unless a check says otherwise.

Example:
>>> from kprune import checks
>>> checks.check_sparsity("target_sparsity", np.float32(0.8))
0.800000011920929
>>> checks.check_int("end_step", np.int32(8), lo=-1)
8
>>> checks.check_int("step", 2.7, lo=0)
Traceback (most recent call last):
TypeError: step must be an integer, got 2.7 (float). Pass a whole number, e.g. int(2.7) if truncation is what you mean.
"""

from __future__ import annotations

import collections.abc
import numbers
import os

import keras
import numpy as np

__all__ = [
    "INT64_MAX",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_finite_array",
    "check_float",
    "check_fraction",
    "check_int",
    "check_labels",
    "check_layer_names",
    "check_name_map",
    "check_path",
    "check_sparsity",
    "describe",
    "is_number",
    "normalize_ignore",
]

#: The largest step kprune stores (`pruning_step` is an int64 variable).
INT64_MAX = 2**63 - 1


def describe(value):
    """`repr(value)` (shortened) plus its type name, for error messages.

    Example:
    >>> describe("0.5")
    "'0.5' (str)"
    """
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _with_fix(message, fix):
    return f"{message} {fix}" if fix else message


def _scalar(value):
    """A 0-d numpy array for 0-d arrays/tensors, else None."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return None
    try:
        shape = tuple(value.shape)
    except TypeError:
        return None
    if shape != ():
        return None
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - not convertible: not a number
        return None


def is_number(value):
    """True for real numbers, numpy scalars and 0-d numeric arrays; False for bools.

    Example:
    >>> is_number(np.float32(0.5)), is_number(True), is_number("1")
    (True, False, False)
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    arr = _scalar(value)
    return arr is not None and arr.dtype.kind in "iuf"


def check_float(name, value, lo=None, hi=None, lo_inclusive=True, hi_inclusive=True,
                allow_nonfinite=False, fix=None):
    """Checks a real number in a range; returns it as a Python float.

    Args:
        name: the parameter's name, as the user wrote it.
        value: the value to check.
        lo, hi: bounds (None for none).
        lo_inclusive, hi_inclusive: whether the bounds are allowed.
        allow_nonfinite: accept NaN and infinities.
        fix: extra advice appended to the message.

    Returns:
        `float(value)`.

    Raises:
        TypeError: not a number (strings, None, bools, arrays).
        ValueError: NaN/infinite, or outside the range.

    Example:
    >>> check_float("power", 3, lo=0, lo_inclusive=False)
    3.0
    """
    if not is_number(value):
        raise TypeError(_with_fix(f"{name} must be a number, got {describe(value)}.", fix))
    result = float(np.asarray(value))
    if not allow_nonfinite and not np.isfinite(result):
        raise ValueError(_with_fix(f"{name} must be a finite number, got {value!r}.", fix))
    low_bad = lo is not None and (result < lo or (result == lo and not lo_inclusive))
    high_bad = hi is not None and (result > hi or (result == hi and not hi_inclusive))
    if low_bad or high_bad:
        raise ValueError(_with_fix(
            f"{name} must be {_interval(lo, hi, lo_inclusive, hi_inclusive)}, got {value!r}.", fix
        ))
    return result


def _interval(lo, hi, lo_inclusive=True, hi_inclusive=True):
    if lo is not None and hi is not None:
        return f"in {'[' if lo_inclusive else '('}{lo:g}, {hi:g}{']' if hi_inclusive else ')'}"
    if lo is not None:
        return f"{'>=' if lo_inclusive else '>'} {lo:g}"
    if hi is not None:
        return f"{'<=' if hi_inclusive else '<'} {hi:g}"
    return "a number"


def check_sparsity(name, value, what="weights", fix=None):
    """Checks a sparsity (fraction of `what` to remove) in `[0, 1)`.

    Args:
        name: the parameter's name (e.g. `"target_sparsity"`,
            `"sparsity['fc']"`).
        value: the value to check.
        what: what is removed, for the message (`"weights"`, `"channels"`).
        fix: extra advice appended to the message.

    Returns:
        `float(value)`.

    Raises:
        TypeError: not a number.
        ValueError: NaN, or outside `[0, 1)`.

    Example:
    >>> check_sparsity("sparsity", 0.9)
    0.9
    """
    if not is_number(value):
        raise TypeError(_with_fix(
            f"{name} must be a float in [0, 1) (the fraction of {what} to remove), "
            f"got {describe(value)}.", fix
        ))
    result = float(np.asarray(value))
    if not 0.0 <= result < 1.0:  # also False for NaN
        raise ValueError(_with_fix(
            f"{name} must be in [0, 1) (the fraction of {what} to remove; 1 would "
            f"remove every one of them), got {value!r}.", fix
        ))
    return result


def check_fraction(name, value, fix=None):
    """Checks a fraction strictly between 0 and 1 (a share to remove per round).

    Unlike `check_sparsity`, 0 is refused too: a fraction of 0 would do nothing.

    Args:
        name: the parameter's name.
        value: the value to check.
        fix: extra advice appended to the message.

    Returns:
        `float(value)`.

    Example:
    >>> check_fraction("fraction", 0.2)
    0.2
    """
    return check_float(name, value, lo=0, hi=1, lo_inclusive=False, hi_inclusive=False, fix=fix)


def check_int(name, value, lo=None, hi=INT64_MAX, fix=None):
    """Checks an integer in `[lo, hi]`; returns a Python int.

    Python ints, numpy integers and 0-d integer arrays/tensors (such as
    `optimizer.iterations`) are accepted; bools and floats (even `2.0`) are
    not, so nothing is truncated.

    Args:
        name: the parameter's name.
        value: the value to check.
        lo, hi: inclusive bounds (None for none); `hi` defaults to the int64
            maximum, the range of kprune's step counters.
        fix: extra advice appended to the message.

    Returns:
        `int(value)`.

    Raises:
        TypeError: not an integer.
        ValueError: outside `[lo, hi]`.

    Example:
    >>> check_int("frequency", np.int64(10), lo=1)
    10
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(_with_fix(
            f"{name} must be an integer, got {describe(value)}; bools are not accepted as numbers.",
            fix,
        ))
    if isinstance(value, (int, np.integer)):
        result = int(value)
    else:
        arr = _scalar(value)
        if arr is not None and arr.dtype.kind in "iu":
            result = int(arr)
        elif is_number(value):
            as_float = float(np.asarray(value))
            hint = (f", e.g. int({value!r}) if truncation is what you mean"
                    if np.isfinite(as_float) else "")
            raise TypeError(_with_fix(
                f"{name} must be an integer, got {describe(value)}. Pass a whole "
                f"number{hint}.", fix
            ))
        else:
            raise TypeError(_with_fix(f"{name} must be an integer, got {describe(value)}.", fix))
    if lo is not None and result < lo:
        raise ValueError(_with_fix(f"{name} must be >= {lo}, got {result}.", fix))
    if hi is not None and result > hi:
        limit = "2**63 - 1 (the int64 range of kprune's step counters)" if hi == INT64_MAX else str(hi)
        raise ValueError(_with_fix(f"{name} must be <= {limit}, got {result}.", fix))
    return result


def check_bool(name, value):
    """Checks a flag: `True`/`False` (or a numpy bool); returns a Python bool.

    Strings such as `"no"` are refused instead of being read as True.

    Example:
    >>> check_bool("include_bias", np.True_)
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}.")
    return bool(value)


def check_choice(name, value, choices, fix=None):
    """Checks that `value` is one of `choices` (compared with `==`).

    Example:
    >>> check_choice("scope", "layer", ("layer", "global"))
    'layer'
    """
    ok = any(_same(value, c) for c in choices)
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(_with_fix(f"{name} must be one of {listed}; got {describe(value)}.", fix))
    return value


def _same(value, choice):
    """`value == choice` without cross-kind matches (1 == True, arrays)."""
    if choice is None:
        return value is None
    if isinstance(choice, str):
        return isinstance(value, str) and value == choice
    if isinstance(choice, bool):
        return isinstance(value, (bool, np.bool_)) and bool(value) == choice
    if isinstance(choice, numbers.Real):
        return is_number(value) and float(np.asarray(value)) == choice
    try:
        return bool(value == choice)
    except Exception:  # noqa: BLE001
        return False


def check_callable(name, value, allow_none=True, signature=None):
    """Checks a callable (or None when `allow_none`).

    Example:
    >>> check_callable("print_fn", print) is print
    True
    """
    if value is None and allow_none:
        return None
    if not callable(value):
        what = f"a callable {signature}" if signature else "a callable"
        raise TypeError(
            f"{name} must be {'None or ' if allow_none else ''}{what}, got {describe(value)}."
        )
    return value


def check_path(name, value, fix=None):
    """Checks a non-empty path (str or `os.PathLike`); returns it as a str.

    `None` and `""` are refused with a ValueError (as tfmot's
    `PruningSummaries` does), instead of writing to `./None` or the working
    directory; other types with a TypeError.

    Example:
    >>> check_path("log_dir", "logs/pruning")
    'logs/pruning'
    """
    if value is None:
        raise ValueError(_with_fix(f"{name} must be a non-empty path, got None.", fix))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, os.PathLike)):
        raise TypeError(_with_fix(
            f"{name} must be a directory path (str or pathlib.Path), got {describe(value)}.", fix
        ))
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise ValueError(_with_fix(f"{name} must be a non-empty path, got {value!r}.", fix))
    return text


def check_finite_array(name, x, allow_integer=True):
    """Checks a numeric array with no NaN or infinity; returns it as numpy.

    Args:
        name: what the array is, for the message (e.g. `"data's x"`).
        x: an array-like (numpy array, tensor, nested lists).
        allow_integer: also accept integer (and bool) dtypes.

    Returns:
        `np.asarray(x)`.

    Raises:
        TypeError: not convertible to a numeric array (strings, objects).
        ValueError: some entries are NaN or infinite (the message gives how
            many and the index of the first).

    Example:
    >>> check_finite_array("x", [[0.0, 1.0]]).shape
    (1, 2)
    """
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - ragged lists etc.
        raise TypeError(f"{name} must be a numeric array, got {describe(x)} ({e}).") from None
    kinds = "fiub" if allow_integer else "f"
    if arr.dtype.kind not in kinds:
        expected = "a numeric array" if allow_integer else "a floating-point array"
        raise TypeError(
            f"{name} must be {expected}, got an array of dtype {arr.dtype} with shape "
            f"{arr.shape}. Convert it first, e.g. np.asarray(x, dtype='float32')."
        )
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} holds {int(bad.sum())} NaN or infinite value(s) out of "
                f"{arr.size} (first at index {first}: {arr[first].item()!r}). Scores "
                f"computed from them would be NaN and the masks arbitrary; clean "
                f"or drop those examples first (e.g. with np.isfinite)."
            )
    return arr


def check_labels(name, y, num_classes, one_hot=False):
    """Checks classification labels against a model's number of classes.

    Args:
        name: what the labels are, for the message (e.g. `"data's y"`).
        y: integer class indices (`one_hot=False`) or one-hot / probability
            rows of width `num_classes`.
        num_classes: the model's output width.
        one_hot: which of the two label forms `y` is.

    Returns:
        `np.asarray(y)`.

    Raises:
        TypeError: not numeric.
        ValueError: NaN/infinite, non-integral class indices, indices outside
            `[0, num_classes)`, or one-hot rows of the wrong width.

    Example:
    >>> check_labels("y", [0, 2, 1], num_classes=3).tolist()
    [0, 2, 1]
    """
    arr = check_finite_array(name, y)
    if one_hot:
        if arr.ndim == 0 or arr.shape[-1] != num_classes:
            raise ValueError(
                f"{name} looks one-hot (shape {arr.shape}) but the model has "
                f"{num_classes} output classes; give rows of width {num_classes}, "
                f"or integer class indices of shape (n,)."
            )
        return arr
    if arr.dtype.kind == "f" and arr.size and not np.all(arr == np.round(arr)):
        first = tuple(int(i) for i in np.argwhere(arr != np.round(arr))[0])
        raise ValueError(
            f"{name} must hold integer class indices, got non-integral values "
            f"(first at index {first}: {arr[first].item()!r}). Round or cast the labels, "
            f"or pass one-hot rows of width {num_classes}."
        )
    if arr.size:
        low, high = arr.min().item(), arr.max().item()
        if low < 0 or high >= num_classes:
            bad = np.flatnonzero((arr.reshape(-1) < 0) | (arr.reshape(-1) >= num_classes))
            raise ValueError(
                f"{name} holds class indices outside [0, {num_classes}) for a model "
                f"with {num_classes} output classes: {bad.size} of {arr.size} value(s), min "
                f"{low!r}, max {high!r}. Fix the labels, or give the model "
                f"{int(high) + 1 if high >= num_classes else num_classes} outputs."
            )
    return arr


def check_name_map(name, value, check_value=None):
    """Checks a `{layer name: value}` argument; returns a new dict.

    A dict (any mapping) or a list of `(name, value)` pairs is accepted;
    a name given twice in a pair list is an error (it would silently keep
    the last one).

    Args:
        name: the parameter's name (e.g. `"sparsity"`).
        value: the mapping, pair list, or None (an empty dict).
        check_value: optional `fn(entry_name, v) -> v` applied to every
            value, with `entry_name` such as `"sparsity['fc']"`.

    Returns:
        A dict `{str: checked value}`.

    Example:
    >>> check_name_map("sparsity", [("fc", 0.5)], lambda n, v: check_sparsity(n, v))
    {'fc': 0.5}
    """
    if value is None:
        return {}
    if isinstance(value, collections.abc.Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in value
    ):
        items = [tuple(p) for p in value]
        seen, twice = set(), []
        for key, _ in items:
            if key in seen and key not in twice:
                twice.append(key)
            seen.add(key)
        if twice:
            raise ValueError(
                f"{name} names layer(s) {twice} more than once; give each layer one "
                f"value (a dict such as {{{twice[0]!r}: 0.5}})."
            )
    else:
        raise TypeError(
            f"{name} must be a dict {{layer name: value}} (or a list of (name, value) "
            f"pairs), got {describe(value)}."
        )
    out = {}
    for key, v in items:
        if not isinstance(key, str):
            raise TypeError(f"{name}: layer names must be strings, got key {describe(key)}.")
        out[key] = check_value(f"{name}[{key!r}]", v) if check_value is not None else v
    return out


def check_layer_names(param, names, layer_names, owners=None):
    """Checks that every name in `names` is exactly one layer of a model.

    Args:
        param: the parameter's name (e.g. `"sparsity"`, `"ignore"`).
        names: the names the user gave (an iterable of str).
        layer_names: the names of the model's layers, repeats included
            (nested models can hold two layers of the same name).
        owners: optional `{name: [where each copy lives]}` for the message.

    Returns:
        `names` as a list.

    Raises:
        ValueError: a name given twice, an unknown name (the message lists
            the model's layers), or a name that several layers share.

    Example:
    >>> check_layer_names("ignore", ["fc"], ["conv", "fc"])
    ['fc']
    """
    names = list(names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{param} names layer(s) {twice} more than once; list each layer once.")
    counts = collections.Counter(layer_names)
    unknown = [n for n in names if n not in counts]
    if unknown:
        known = sorted(counts)
        shown = known[:30] + (["..."] if len(known) > 30 else [])
        raise ValueError(
            f"Unknown layer name(s) {unknown} in {param}; the model's layers are "
            f"{shown}. Check the spelling (model.summary() lists the names)."
        )
    ambiguous = [n for n in names if counts[n] > 1]
    if ambiguous:
        where = ""
        if owners:
            where = " (" + "; ".join(
                f"{n!r} in {owners.get(n, [])}" for n in ambiguous
            ) + ")"
        raise ValueError(
            f"{param} names layer(s) {ambiguous}, but the model has several layers "
            f"with that name{where}, so it is ambiguous which one is meant. Give the "
            f"layers unique names (name=... when building the nested models)."
        )
    return names


def normalize_ignore(ignore):
    """`ignore=` (layer names and/or Keras layer classes) as `{"names", "types"}`.

    Args:
        ignore: None, a layer name, a layer class, or a list/tuple/set of them.

    Returns:
        `{"names": set of str, "types": tuple of layer classes}`.

    Raises:
        TypeError: an item is neither a name nor a Keras layer class.

    Example:
    >>> normalize_ignore(["head", keras.layers.Embedding])
    {'names': {'head'}, 'types': (<class 'keras...Embedding'>,)}
    """
    names, types = set(), []
    if isinstance(ignore, (str, type)):
        ignore = [ignore]  # one name or class, not its characters
    elif ignore is not None and not isinstance(ignore, (list, tuple, set, frozenset)):
        raise TypeError(
            f"ignore must be a list of layer names (str) or Keras layer classes, "
            f"got {describe(ignore)}."
        )
    for item in ignore or ():
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            types.append(item)
        else:
            raise TypeError(
                f"ignore takes layer names (str) or Keras layer classes, got {item!r}."
            )
    return {"names": names, "types": tuple(types)}


def check_layer_list(layers, caller="prune_low_magnitude"):
    """Raises TypeError unless every item of `layers` is a Keras layer (not a model).

    Args:
        layers: the list the caller got.
        caller: the public name, for the message.
    """
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.Model) or not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"{caller}: item {i} of the list is "
                f"{type(layer).__name__}; a list holds Keras layers only "
                f"(prune a model by passing it on its own)."
            )
