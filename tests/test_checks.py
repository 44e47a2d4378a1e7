"""kprune.core.checks: the shared argument checks."""

import pathlib

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprune.core import checks


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_sparsity_accepts_exactly_the_unit_interval(v):
    if 0.0 <= v < 1.0:
        assert checks.check_sparsity("s", v) == v
        assert checks.check_sparsity("s", np.float64(v)) == v
    else:
        with pytest.raises(ValueError, match=r"s must be in \[0, 1\)"):
            checks.check_sparsity("s", v)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**70), max_value=2**70), st.integers(-5, 5))
def test_check_int_range(v, lo):
    if lo <= v <= checks.INT64_MAX:
        assert checks.check_int("n", v, lo=lo) == v
    else:
        with pytest.raises(ValueError, match="n must be"):
            checks.check_int("n", v, lo=lo)


@pytest.mark.parametrize("value", [np.int8(3), np.int32(3), np.int64(3), np.uint16(3), np.array(3),
                                   keras.Variable(3, dtype="int64", trainable=False)])
def test_check_int_accepts_numpy_and_0d_integers(value):
    result = checks.check_int("n", value, lo=0)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value, words", [
    (2.0, "2.0 (float)"), (2.7, "int(2.7)"), (np.float32(2), "float32"), (True, "bools are not"),
    (np.True_, "bools are not"), ("2", "'2' (str)"), (None, "None"), (np.array([1, 2]), "ndarray"),
    (keras.Variable(2.0), "must be an integer"), (float("nan"), "Pass a whole number."),
])
def test_check_int_refuses_non_integers(value, words):
    with pytest.raises(TypeError, match="n must be an integer") as info:
        checks.check_int("n", value)
    assert words in str(info.value)


def test_check_float_bounds_and_finiteness():
    assert checks.check_float("p", np.float32(0.5), lo=0, hi=1) == 0.5
    assert checks.check_float("p", float("inf"), allow_nonfinite=True) == float("inf")
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\), got 1"):
        checks.check_float("p", 1, lo=0, hi=1, lo_inclusive=False, hi_inclusive=False)
    with pytest.raises(ValueError, match="p must be > 0"):
        checks.check_float("p", 0, lo=0, lo_inclusive=False)
    with pytest.raises(ValueError, match="p must be <= 2"):
        checks.check_float("p", 3, hi=2)
    with pytest.raises(TypeError, match="p must be a number, got True"):
        checks.check_float("p", True)


def test_is_number():
    assert checks.is_number(1) and checks.is_number(np.float16(1)) and checks.is_number(np.array(1.5))
    assert not checks.is_number(True) and not checks.is_number(np.bool_(True))
    assert not checks.is_number("1") and not checks.is_number(None) and not checks.is_number(np.ones(2))


def test_check_choice_has_no_cross_kind_matches():
    assert checks.check_choice("v", 1, (0, 1, True, False)) == 1
    assert checks.check_choice("v", np.int64(1), (0, 1)) == 1
    with pytest.raises(ValueError, match=r"scope must be one of 'layer', 'global'; got 1 \(int\)"):
        checks.check_choice("scope", 1, ("layer", "global"))
    with pytest.raises(ValueError, match="None"):
        checks.check_choice("n", "None", (None, "lamp"))
    with pytest.raises(ValueError, match="ndarray"):
        checks.check_choice("n", np.array(["lamp"]), (None, "lamp"))


def test_check_bool_and_callable_and_path(tmp_path):
    assert checks.check_bool("f", np.False_) is False
    with pytest.raises(TypeError, match="f must be True or False, got 0"):
        checks.check_bool("f", 0)
    assert checks.check_callable("fn", None) is None
    with pytest.raises(TypeError, match="fn must be a callable, got None"):
        checks.check_callable("fn", None, allow_none=False)
    assert checks.check_path("d", tmp_path) == str(tmp_path)
    assert checks.check_path("d", pathlib.Path("logs")) == "logs"
    for bad in (None, "", " "):
        with pytest.raises(ValueError, match="d must be a non-empty path"):
            checks.check_path("d", bad)
    with pytest.raises(TypeError, match="d must be a directory path"):
        checks.check_path("d", 3)


def test_check_finite_array():
    assert checks.check_finite_array("x", [[1, 2]]).dtype.kind == "i"
    with pytest.raises(ValueError, match=r"x holds 2 NaN or infinite value\(s\) out of 4 \(first at index \(0, 1\)"):
        checks.check_finite_array("x", [[0.0, np.nan], [np.inf, 1.0]])
    with pytest.raises(TypeError, match="x must be a numeric array, got an array of dtype object"):
        checks.check_finite_array("x", [None, 1.0])
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        checks.check_finite_array("x", [1, 2], allow_integer=False)


def test_check_labels():
    assert checks.check_labels("y", np.array([0.0, 2.0]), 3).tolist() == [0.0, 2.0]
    assert checks.check_labels("y", np.eye(3), 3, one_hot=True).shape == (3, 3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*1 of 2 value\(s\), min 0, max 3.*give the model 4 outputs"):
        checks.check_labels("y", [0, 3], 3)
    with pytest.raises(ValueError, match="non-integral"):
        checks.check_labels("y", [0.5], 3)
    with pytest.raises(ValueError, match=r"looks one-hot \(shape \(2, 4\)\)"):
        checks.check_labels("y", np.zeros((2, 4)), 3, one_hot=True)


def test_check_name_map():
    assert checks.check_name_map("s", None) == {}
    assert checks.check_name_map("s", (("a", 1), ("b", 2))) == {"a": 1, "b": 2}
    assert checks.check_name_map("s", {"a": 0.5}, checks.check_sparsity) == {"a": 0.5}
    with pytest.raises(ValueError, match=r"s\['a'\] must be in \[0, 1\)"):
        checks.check_name_map("s", {"a": 2.0}, checks.check_sparsity)
    with pytest.raises(ValueError, match=r"s names layer\(s\) \['a'\] more than once"):
        checks.check_name_map("s", [("a", 1), ("b", 2), ("a", 3)])
    with pytest.raises(TypeError, match="s must be a dict"):
        checks.check_name_map("s", "a")
    with pytest.raises(TypeError, match="layer names must be strings"):
        checks.check_name_map("s", {("a", "b"): 1})


def test_check_layer_names():
    assert checks.check_layer_names("ignore", ["b"], ["a", "b"]) == ["b"]
    with pytest.raises(ValueError, match=r"ignore names layer\(s\) \['b'\] more than once"):
        checks.check_layer_names("ignore", ["b", "b"], ["a", "b"])
    with pytest.raises(ValueError, match=r"Unknown layer name\(s\) \['c'\] in ignore; the model's layers are \['a', 'b'\]"):
        checks.check_layer_names("ignore", ["c"], ["a", "b"])
    with pytest.raises(ValueError, match=r"\('b' in \['m/x', 'm/y'\]\).*ambiguous"):
        checks.check_layer_names("ignore", ["b"], ["a", "b", "b"], {"b": ["m/x", "m/y"]})


def test_describe_shortens():
    text = checks.describe("x" * 200)
    assert len(text) < 100 and text.endswith("(str)")
