"""Bad input across the public API: the right exception, a message that names
the parameter (or layer), what was expected and what was got, and every model
unchanged afterwards.

Each row of the tables is one hostile call. The models are tiny and built
once for the module; every case snapshots all of them first and checks them
after the failed call (`tests/conftest.py`: `weights_of`, `assert_unchanged`).
"""

import types

import keras
import numpy as np
import pytest

import kprune
from kprune.core import checks
from kprune.structured import (
    ChannelPruner,
    ChannelPruningCallback,
    MagnitudeImportance,
    TaylorImportance,
    prune_iteratively,
)
from kprune.structured.importance import get_importance

from conftest import assert_unchanged, weights_of

NAN, INF = float("nan"), float("inf")


def _mlp(name="m"):
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="d1"), keras.layers.Dense(3, name="out")],
        name=name,
    )


def _cnn():
    i = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(4, 3, name="c1")(i)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(2, name="o")(x), name="cnn")


def _nested_same_names():
    """Two nested models that both hold a layer named 'fc' (Keras allows it)."""
    a = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")], name="a")
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="b")
    return keras.Sequential([keras.Input((6,)), a, b], name="outer")


@pytest.fixture(scope="module")
def env():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 6)).astype("float32")
    y = rng.integers(0, 3, size=12)
    nan_weights = _mlp("nan_weights")
    kernel = nan_weights.get_layer("d1").kernel
    kernel.assign(np.where(np.eye(6, 4) > 0, np.nan, keras.ops.convert_to_numpy(kernel)))
    pruned = kprune.prune_low_magnitude(_mlp("p"), kprune.ConstantSparsity(0.5, frequency=2))
    models = {
        "mlp": _mlp(),
        "pruned": pruned,
        "cnn": _cnn(),
        "nested": _nested_same_names(),
        "nan_weights": nan_weights,
    }
    xn = x.copy()
    xn[3, 2] = np.nan
    xi = x.copy()
    xi[0, 0] = np.inf
    return types.SimpleNamespace(
        x=x, y=y, xn=xn, xi=xi, models=models,
        img=rng.normal(size=(4, 8, 8, 3)).astype("float32"),
        **models,
    )


_XY = object()


def _pai(e, data=_XY, **kw):
    data = (e.x, e.y) if data is _XY else data
    kw.setdefault("verbose", 0)
    return kprune.prune_at_init(e.mlp, data, **kw)


def _models_used(env, call):
    """The fixture models a case's lambda reads (`e.mlp`, `_pai(e, ...)`, ...)."""
    names = set(call.__code__.co_names)
    if "_pai" in names:
        names.add("mlp")
    used = [k for k in env.models if k in names]
    return used or ["mlp"]  # model-free calls: the mlp stands guard


def _run_case(env, call, error, words):
    used = _models_used(env, call)
    snaps = {k: (weights_of(env.models[k]), env.models[k].get_config()) for k in used}
    with pytest.raises(error) as info:
        call(env)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    for k in used:
        assert_unchanged(env.models[k], *snaps[k])
    return message


def _table(rows):
    return pytest.mark.parametrize(
        "call, error, words", [r[1:] for r in rows], ids=[r[0] for r in rows]
    )


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------

SCHEDULES = [
    ("const-str", lambda e: kprune.ConstantSparsity("0.5"), TypeError,
     ["target_sparsity", "float in [0, 1)", "'0.5' (str)"]),
    ("const-none", lambda e: kprune.ConstantSparsity(None), TypeError, ["target_sparsity", "None (NoneType)"]),
    ("const-bool", lambda e: kprune.ConstantSparsity(True), TypeError, ["target_sparsity", "True (bool)"]),
    ("const-nan", lambda e: kprune.ConstantSparsity(NAN), ValueError, ["target_sparsity must be in [0, 1)", "got nan"]),
    ("const-inf", lambda e: kprune.ConstantSparsity(INF), ValueError, ["target_sparsity must be in [0, 1)", "got inf"]),
    ("const-one", lambda e: kprune.ConstantSparsity(1.0), ValueError, ["target_sparsity", "1 would remove", "got 1.0"]),
    ("const-negative", lambda e: kprune.ConstantSparsity(-0.1), ValueError, ["target_sparsity", "got -0.1"]),
    ("const-np-big", lambda e: kprune.ConstantSparsity(np.float64(1.5)), ValueError, ["target_sparsity", "1.5"]),
    ("const-array", lambda e: kprune.ConstantSparsity(np.array([0.5, 0.6])), TypeError, ["target_sparsity", "ndarray"]),
    ("begin-float", lambda e: kprune.ConstantSparsity(0.5, begin_step=1.5), TypeError,
     ["begin_step must be an integer", "1.5 (float)", "int(1.5)"]),
    ("begin-integral-float", lambda e: kprune.ConstantSparsity(0.5, begin_step=2.0), TypeError,
     ["begin_step must be an integer", "2.0 (float)"]),
    ("begin-negative", lambda e: kprune.ConstantSparsity(0.5, begin_step=-1), ValueError, ["begin_step must be >= 0", "-1"]),
    ("begin-str", lambda e: kprune.ConstantSparsity(0.5, begin_step="0"), TypeError, ["begin_step must be an integer", "'0' (str)"]),
    ("begin-bool", lambda e: kprune.ConstantSparsity(0.5, begin_step=True), TypeError, ["begin_step", "bools are not accepted"]),
    ("begin-int64-overflow", lambda e: kprune.ConstantSparsity(0.5, begin_step=2**63), ValueError,
     ["begin_step must be <= 2**63 - 1", "int64"]),
    ("end-below-minus-one", lambda e: kprune.ConstantSparsity(0.5, end_step=-2), ValueError, ["end_step must be >= -1", "-2"]),
    ("end-np-float", lambda e: kprune.ConstantSparsity(0.5, end_step=np.float32(8)), TypeError, ["end_step must be an integer"]),
    ("frequency-zero", lambda e: kprune.ConstantSparsity(0.5, frequency=0), ValueError, ["frequency must be >= 1", "got 0"]),
    ("frequency-float", lambda e: kprune.ConstantSparsity(0.5, frequency=2.0), TypeError, ["frequency must be an integer"]),
    ("frequency-none", lambda e: kprune.ConstantSparsity(0.5, frequency=None), TypeError, ["frequency must be an integer", "None"]),
    ("end-before-begin", lambda e: kprune.ConstantSparsity(0.5, begin_step=10, end_step=5), ValueError,
     ["end_step (5) must be >= begin_step (10)", "-1 for no end"]),
    ("poly-power-nan", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power=NAN), ValueError,
     ["power must be a finite number", "got nan", "such as 3"]),
    ("poly-power-inf", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power=INF), ValueError, ["power must be a finite number"]),
    ("poly-power-zero", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power=0), ValueError, ["power must be > 0", "got 0"]),
    ("poly-power-negative", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power=-1.0), ValueError, ["power must be > 0"]),
    ("poly-power-str", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power="3"), TypeError,
     ["power must be a number", "'3' (str)"]),
    ("poly-power-bool", lambda e: kprune.PolynomialDecay(0.0, 0.8, 0, 8, power=True), TypeError, ["power must be a number", "bool"]),
    ("poly-initial-nan", lambda e: kprune.PolynomialDecay(NAN, 0.8, 0, 8), ValueError, ["initial_sparsity must be in [0, 1)"]),
    ("poly-final-one", lambda e: kprune.PolynomialDecay(0.0, 1.0, 0, 8), ValueError, ["final_sparsity must be in [0, 1)"]),
    ("poly-final-str", lambda e: kprune.PolynomialDecay(0.0, "0.8", 0, 8), TypeError, ["final_sparsity", "'0.8' (str)"]),
    ("poly-end-equals-begin", lambda e: kprune.PolynomialDecay(0.0, 0.5, 10, 10), ValueError, ["end_step > begin_step"]),
    ("poly-no-end", lambda e: kprune.PolynomialDecay(0.0, 0.5, 0, -1), ValueError, ["end_step > begin_step"]),
    ("poly-end-float", lambda e: kprune.PolynomialDecay(0.0, 0.5, 0, 8.5), TypeError, ["end_step must be an integer", "8.5"]),
    ("should-prune-float", lambda e: kprune.ConstantSparsity(0.5, frequency=2).should_prune(2.7), TypeError,
     ["step must be an integer", "2.7"]),
    ("should-prune-str", lambda e: kprune.ConstantSparsity(0.5).should_prune("3"), TypeError, ["step must be an integer", "'3'"]),
    ("poly-sparsity-nan-step", lambda e: kprune.PolynomialDecay(0.0, 0.5, 0, 8).sparsity(NAN), TypeError,
     ["step must be an integer", "nan"]),
    ("next-update-none", lambda e: kprune.ConstantSparsity(0.5).next_update(None), TypeError, ["step must be an integer"]),
    ("get-schedule-float", lambda e: kprune.core.schedules.get_schedule(0.5), TypeError, ["pruning_schedule must be a kprune schedule"]),
]


@_table(SCHEDULES)
def test_schedules(env, call, error, words):
    _run_case(env, call, error, words)


# --------------------------------------------------------------------------
# prune_low_magnitude
# --------------------------------------------------------------------------

PLM = [
    ("schedule-float", lambda e: kprune.prune_low_magnitude(e.mlp, 0.5), TypeError,
     ["pruning_schedule must be a kprune schedule", "0.5"]),
    ("schedule-class", lambda e: kprune.prune_low_magnitude(e.mlp, kprune.ConstantSparsity), TypeError,
     ["pruning_schedule must be a kprune schedule"]),
    ("scope-unknown", lambda e: kprune.prune_low_magnitude(e.mlp, scope="model"), ValueError,
     ["scope must be one of 'layer', 'global'", "'model'"]),
    ("scope-none", lambda e: kprune.prune_low_magnitude(e.mlp, scope=None), ValueError, ["scope must be one of", "None"]),
    ("granularity-unknown", lambda e: kprune.prune_low_magnitude(e.mlp, granularity="blocky"), ValueError,
     ["granularity must be", "'blocky'"]),
    ("nm-global", lambda e: kprune.prune_low_magnitude(e.mlp, granularity=kprune.NM(2, 4), scope="global"), ValueError,
     ["per-group pattern", "scope='layer'"]),
    ("sparsity-unknown-layer", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={"nope": 0.5}), ValueError,
     ["Unknown layer name(s) ['nope'] in sparsity", "'d1'", "'out'"]),
    ("sparsity-above-one", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={"d1": 1.2}), ValueError,
     ["sparsity['d1'] must be in [0, 1)", "1.2"]),
    ("sparsity-nan", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={"d1": NAN}), ValueError,
     ["sparsity['d1'] must be in [0, 1)", "nan"]),
    ("sparsity-str-value", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={"d1": "0.5"}), TypeError,
     ["sparsity['d1']", "'0.5' (str)"]),
    ("sparsity-bool-value", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={"d1": True}), TypeError,
     ["sparsity['d1']", "True (bool)"]),
    ("sparsity-float", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity=0.5), TypeError,
     ["sparsity must be a dict {layer name: value}", "0.5 (float)"]),
    ("sparsity-list-of-names", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity=["d1"]), TypeError,
     ["sparsity must be a dict"]),
    ("sparsity-pairs-twice", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity=[("d1", 0.3), ("d1", 0.9)]), ValueError,
     ["sparsity names layer(s) ['d1'] more than once"]),
    ("sparsity-int-key", lambda e: kprune.prune_low_magnitude(e.mlp, sparsity={1: 0.5}), TypeError,
     ["layer names must be strings", "1 (int)"]),
    ("sparsity-ambiguous-nested", lambda e: kprune.prune_low_magnitude(e.nested, sparsity={"fc": 0.9}), ValueError,
     ["sparsity names layer(s) ['fc']", "several layers with that name", "outer/a", "outer/b", "unique names"]),
    ("ignore-ambiguous-nested", lambda e: kprune.prune_low_magnitude(e.nested, ignore=["fc"]), ValueError,
     ["ignore names layer(s) ['fc']", "ambiguous"]),
    ("ignore-unknown", lambda e: kprune.prune_low_magnitude(e.mlp, ignore=["nope"]), ValueError,
     ["Unknown layer name(s) ['nope'] in ignore"]),
    ("ignore-single-unknown-name", lambda e: kprune.prune_low_magnitude(e.mlp, ignore="nope"), ValueError,
     ["Unknown layer name(s) ['nope'] in ignore"]),
    ("ignore-int-item", lambda e: kprune.prune_low_magnitude(e.mlp, ignore=[3]), TypeError, ["ignore takes layer names", "3"]),
    ("ignore-int", lambda e: kprune.prune_low_magnitude(e.mlp, ignore=3), TypeError, ["ignore must be a list", "3 (int)"]),
    ("ignore-everything", lambda e: kprune.prune_low_magnitude(e.mlp, ignore=["d1", "out"]), ValueError,
     ["nothing to prune", "ignore="]),
    ("verbose-str", lambda e: kprune.prune_low_magnitude(e.mlp, verbose="x"), ValueError, ["verbose must be one of", "'x'"]),
    ("model-none", lambda e: kprune.prune_low_magnitude(None), TypeError, ["Keras 3 layer or model", "NoneType"]),
    ("model-str", lambda e: kprune.prune_low_magnitude("model.keras"), TypeError, ["Keras 3 layer or model", "str"]),
    ("already-pruned", lambda e: kprune.prune_low_magnitude(e.pruned), ValueError, ["already pruned", "strip_pruning"]),
    ("single-layer-with-sparsity", lambda e: kprune.prune_low_magnitude(keras.layers.Dense(3), sparsity={"d1": 0.5}),
     ValueError, ["single layer", "pruning_schedule"]),
    ("single-layer-with-ignore", lambda e: kprune.prune_low_magnitude(e.mlp.get_layer("d1"), ignore=["d1"]),
     ValueError, ["sparsity= and ignore= name layers of a model"]),
    ("unknown-keyword", lambda e: kprune.prune_low_magnitude(e.mlp, target_sparsity=0.5), TypeError, ["target_sparsity"]),
]


@_table(PLM)
def test_prune_low_magnitude(env, call, error, words):
    _run_case(env, call, error, words)


# --------------------------------------------------------------------------
# prune_at_init / init_scores
# --------------------------------------------------------------------------

AT_INIT = [
    ("x-nan", lambda e: _pai(e, (e.xn, e.y)), ValueError,
     ["data's x holds 1 NaN or infinite value(s)", "index (3, 2)", "np.isfinite"]),
    ("x-inf", lambda e: _pai(e, (e.xi, e.y)), ValueError, ["data's x holds 1 NaN or infinite", "inf"]),
    ("x-nan-second-batch", lambda e: _pai(e, [(e.x, e.y), (e.xn, e.y)], batches=2), ValueError,
     ["data's x (batch 1) holds 1 NaN"]),
    ("x-nan-grasp", lambda e: _pai(e, (e.xn, e.y), method="grasp"), ValueError, ["data's x holds 1 NaN"]),
    ("x-strings", lambda e: _pai(e, (np.full((12, 6), "a"), e.y)), TypeError,
     ["data's x must be a numeric array", "dtype <U1", "np.asarray"]),
    ("y-above-classes", lambda e: _pai(e, (e.x, e.y + 5)), ValueError,
     ["data's y holds class indices outside [0, 3)", "3 output classes", "max 7"]),
    ("y-negative", lambda e: _pai(e, (e.x, e.y - 1)), ValueError, ["data's y holds class indices outside [0, 3)", "min -1"]),
    ("y-non-integral", lambda e: _pai(e, (e.x, e.y + 0.5)), ValueError, ["data's y must hold integer class indices"]),
    ("y-nan", lambda e: _pai(e, (e.x, np.where(e.y == 0, np.nan, e.y))), ValueError, ["data's y holds", "NaN"]),
    ("y-one-hot-width", lambda e: _pai(e, (e.x, np.eye(4)[e.y])), ValueError,
     ["data's y looks one-hot (shape (12, 4))", "3 output classes"]),
    ("y-sparse-loss-out-of-range", lambda e: _pai(e, (e.x, e.y + 3), loss="sparse_categorical_crossentropy"), ValueError,
     ["data's y holds class indices outside [0, 3)"]),
    ("y-one-hot-loss-width", lambda e: _pai(e, (e.x, np.eye(5)[e.y]), loss=keras.losses.CategoricalCrossentropy()),
     ValueError, ["looks one-hot", "width 3"]),
    ("y-custom-loss-nan", lambda e: _pai(e, (e.x, np.full(12, np.nan)), loss=lambda t, p: p), ValueError,
     ["data's y holds 12 NaN"]),
    ("xy-length", lambda e: _pai(e, (e.x, e.y[:5])), ValueError, ["data's x has 12 examples but its y has 5", "one label per example"]),
    ("xy-length-batches", lambda e: _pai(e, [(e.x, e.y[:5])]), ValueError, ["data's x has 12 examples but its y has 5"]),
    ("y-none", lambda e: _pai(e, (e.x, None)), ValueError, ["data's y is None", "data=(x, y)"]),
    ("data-one-tuple", lambda e: _pai(e, (e.x,)), ValueError, ["data must be an (x, y) pair", "one item"]),
    ("data-array", lambda e: _pai(e, e.x), ValueError, ["data must be an (x, y) pair", "single array of shape (12, 6)"]),
    ("data-int", lambda e: _pai(e, 3), TypeError, ["data must be (x, y) arrays or an iterable"]),
    ("data-missing", lambda e: _pai(e, None), ValueError, ["needs data", "'synflow'"]),
    ("x-wrong-shape", lambda e: _pai(e, (e.x[:, :5], e.y)), ValueError, ["data's x has shape (12, 5)", "(None, 6)"]),
    ("x-one-example", lambda e: _pai(e, (e.x[0], e.y)), ValueError, ["data's x has shape (6,)"]),
    ("sparsity-nan", lambda e: _pai(e, sparsity=NAN), ValueError, ["sparsity must be in [0, 1)", "nan"]),
    ("sparsity-one", lambda e: _pai(e, sparsity=1.0), ValueError, ["sparsity must be in [0, 1)", "1 would remove"]),
    ("sparsity-str", lambda e: _pai(e, sparsity="0.9"), TypeError, ["sparsity must be a float", "'0.9' (str)"]),
    ("sparsity-bool", lambda e: _pai(e, sparsity=True), TypeError, ["sparsity", "True (bool)"]),
    ("method-typo", lambda e: _pai(e, method="snipp"), ValueError, ["Unknown method 'snipp'", "grasp"]),
    ("method-int", lambda e: _pai(e, method=3), ValueError, ["Unknown method 3"]),
    ("scope-unknown", lambda e: _pai(e, scope="model"), ValueError, ["scope must be one of 'global', 'layer'"]),
    ("min-keep-negative", lambda e: _pai(e, min_keep=-1), ValueError, ["min_keep must be >= 0"]),
    ("min-keep-float", lambda e: _pai(e, min_keep=1.5), TypeError, ["min_keep must be an integer", "1.5"]),
    ("overrides-above-one", lambda e: _pai(e, sparsity_overrides={"d1": 1.0}), ValueError,
     ["sparsity_overrides['d1'] must be in [0, 1)"]),
    ("overrides-unknown", lambda e: _pai(e, sparsity_overrides={"nope": 0.5}), ValueError,
     ["Unknown layer name(s) ['nope'] in sparsity_overrides"]),
    ("overrides-pairs-twice", lambda e: _pai(e, sparsity_overrides=[("d1", 0.5), ("d1", 0.2)]), ValueError,
     ["sparsity_overrides names layer(s) ['d1'] more than once"]),
    ("overrides-float", lambda e: _pai(e, sparsity_overrides=0.5), TypeError, ["sparsity_overrides must be a dict"]),
    ("overrides-ambiguous-nested", lambda e: kprune.prune_at_init(e.nested, method="magnitude",
                                                                   sparsity_overrides={"fc": 0.5}, verbose=0),
     ValueError, ["sparsity_overrides names layer(s) ['fc']", "ambiguous"]),
    ("nested-same-names", lambda e: kprune.prune_at_init(e.nested, method="magnitude", verbose=0), ValueError,
     ["names must be unique", "rename"]),
    ("batches-zero", lambda e: _pai(e, batches=0), ValueError, ["batches must be >= 1", "got 0"]),
    ("batches-float", lambda e: _pai(e, batches=2.0), TypeError, ["batches must be an integer", "2.0"]),
    ("iterations-zero", lambda e: _pai(e, method="synflow", iterations=0), ValueError, ["iterations must be >= 1"]),
    ("batch-size-bool", lambda e: _pai(e, batch_size=True), TypeError, ["batch_size", "bools are not accepted"]),
    ("bn-mode-unknown", lambda e: _pai(e, bn_mode="eval"), ValueError, ["bn_mode must be one of 'inference', 'train'"]),
    ("include-bias-str", lambda e: _pai(e, include_bias="no"), TypeError, ["include_bias must be True or False", "'no'"]),
    ("verbose-str", lambda e: _pai(e, verbose="x"), ValueError, ["verbose must be one of"]),
    ("temperature-zero", lambda e: _pai(e, method="grasp", temperature=0), ValueError, ["temperature must be > 0", "200"]),
    ("temperature-nan", lambda e: _pai(e, method="grasp", temperature=NAN), ValueError, ["temperature must be a finite number"]),
    ("seed-str", lambda e: _pai(e, None, method="random", seed="a"), TypeError, ["seed must be an integer", "'a'"]),
    ("loss-not-callable", lambda e: _pai(e, loss=3), TypeError, ["loss must be a Keras loss or callable"]),
    ("nan-weights", lambda e: kprune.prune_at_init(e.nan_weights, method="magnitude", verbose=0), ValueError,
     ["The initial weights of layer 'd1' (kernel) holds 4 NaN"]),
    ("nan-weights-snip", lambda e: kprune.prune_at_init(e.nan_weights, (e.x, e.y), verbose=0), ValueError,
     ["initial weights of layer 'd1'"]),
    ("model-none", lambda e: kprune.prune_at_init(None, method="magnitude"), TypeError, ["Keras model", "NoneType"]),
    ("model-already-pruned", lambda e: kprune.prune_at_init(e.pruned, method="magnitude", verbose=0), ValueError,
     ["already pruned"]),
    ("init-scores-x-nan", lambda e: kprune.init_scores(e.mlp, (e.xn, e.y), verbose=0), ValueError, ["data's x holds 1 NaN"]),
    ("init-scores-labels", lambda e: kprune.init_scores(e.mlp, (e.x, e.y + 3), method="grasp", verbose=0), ValueError,
     ["class indices outside [0, 3)"]),
    ("init-scores-synflow-sparsity-nan", lambda e: kprune.init_scores(e.mlp, method="synflow", sparsity=NAN, verbose=0),
     ValueError, ["sparsity must be in [0, 1)"]),
]


@_table(AT_INIT)
def test_prune_at_init(env, call, error, words):
    _run_case(env, call, error, words)


# --------------------------------------------------------------------------
# update_masks / Pruner / callbacks
# --------------------------------------------------------------------------

LOOPS = [
    ("step-float", lambda e: kprune.update_masks(e.pruned, 2.7), TypeError,
     ["step must be an integer", "2.7 (float)", "int(optimizer.iterations)"]),
    ("step-np-float", lambda e: kprune.update_masks(e.pruned, np.float64(3.0)), TypeError, ["step must be an integer"]),
    ("step-int64-overflow", lambda e: kprune.update_masks(e.pruned, 2**63), ValueError,
     ["step must be <=", "9223372036854775808"]),
    ("step-negative", lambda e: kprune.update_masks(e.pruned, -1), ValueError, ["step must be >= 0", "-1"]),
    ("step-str", lambda e: kprune.update_masks(e.pruned, "3"), TypeError, ["step must be an integer", "'3' (str)"]),
    ("step-bool", lambda e: kprune.update_masks(e.pruned, True), TypeError, ["step", "bools are not accepted"]),
    ("step-none", lambda e: kprune.update_masks(e.pruned, None), TypeError, ["step must be an integer", "None"]),
    ("step-float-tensor", lambda e: kprune.update_masks(e.pruned, keras.Variable(2.0)), TypeError, ["step must be an integer"]),
    ("model-none", lambda e: kprune.update_masks(None, 0), TypeError, ["model must be a Keras model with PruneWrapper"]),
    ("model-unpruned", lambda e: kprune.update_masks(e.mlp, 0), ValueError,
     ["no PruneWrapper layers", "prune_low_magnitude"]),
    ("normalize-unknown", lambda e: kprune.update_masks(e.pruned, 0, normalize="l2"), ValueError,
     ["normalize must be one of None, 'lamp'", "'l2'"]),
    ("min-keep-negative", lambda e: kprune.update_masks(e.pruned, 0, min_keep=-1), ValueError, ["min_keep must be >= 0"]),
    ("min-keep-float", lambda e: kprune.update_masks(e.pruned, 0, min_keep=1.5), TypeError, ["min_keep must be an integer"]),
    ("pruner-model-str", lambda e: kprune.Pruner("model.keras"), TypeError, ["model must be a Keras model", "'model.keras' (str)"]),
    ("pruner-verbose", lambda e: kprune.Pruner(e.pruned, verbose="x"), ValueError, ["verbose must be one of"]),
    ("pruner-step-float", lambda e: kprune.Pruner(e.pruned).step(2.5), TypeError, ["n must be an integer", "2.5"]),
    ("pruner-step-negative", lambda e: kprune.Pruner(e.pruned).step(-1), ValueError, ["n must be >= 0"]),
    ("pruner-update-masks-float", lambda e: kprune.Pruner(e.pruned).update_masks(2.5), TypeError, ["step must be an integer"]),
    ("callback-normalize", lambda e: kprune.PruningCallback(normalize="x"), ValueError, ["normalize must be one of"]),
    ("callback-min-keep", lambda e: kprune.PruningCallback(min_keep=-1), ValueError, ["min_keep must be >= 0"]),
    ("callback-min-keep-float", lambda e: kprune.PruningCallback(min_keep=0.5), TypeError, ["min_keep must be an integer"]),
    ("callback-verbose", lambda e: kprune.PruningCallback(verbose="loud"), ValueError, ["verbose must be one of"]),
    ("summaries-log-dir-none", lambda e: kprune.PruningSummaries(None), ValueError,
     ["log_dir must be a non-empty path, got None", "PruningSummaries('logs/pruning')"]),
    ("summaries-log-dir-empty", lambda e: kprune.PruningSummaries(""), ValueError, ["log_dir must be a non-empty path"]),
    ("summaries-log-dir-blank", lambda e: kprune.PruningSummaries("  "), ValueError, ["log_dir must be a non-empty path"]),
    ("summaries-log-dir-int", lambda e: kprune.PruningSummaries(3), TypeError, ["log_dir must be a directory path", "3 (int)"]),
    ("summaries-freq-zero", lambda e: kprune.PruningSummaries("logs", update_freq=0), ValueError, ["update_freq must be >= 1"]),
    ("summaries-freq-str", lambda e: kprune.PruningSummaries("logs", update_freq="step"), ValueError,
     ["update_freq must be 'epoch', 'batch' or a positive integer", "'step'"]),
    ("summaries-freq-float", lambda e: kprune.PruningSummaries("logs", update_freq=1.5), ValueError, ["update_freq"]),
    ("summaries-freq-bool", lambda e: kprune.PruningSummaries("logs", update_freq=True), ValueError, ["update_freq"]),
]


@_table(LOOPS)
def test_loops_and_callbacks(env, call, error, words):
    _run_case(env, call, error, words)


def test_summaries_log_dir_none_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="log_dir"):
        kprune.PruningSummaries(None)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# structured
# --------------------------------------------------------------------------

STRUCTURED = [
    ("model-none-dict-ratio", lambda e: ChannelPruner(None, pruning_ratio={"c1": 0.5}), TypeError,
     ["needs a keras.Model", "NoneType"]),
    ("model-none", lambda e: ChannelPruner(None), TypeError, ["needs a keras.Model"]),
    ("model-str", lambda e: ChannelPruner("cnn.keras"), TypeError, ["needs a keras.Model", "str"]),
    ("ratio-nan", lambda e: ChannelPruner(e.cnn, pruning_ratio=NAN), ValueError,
     ["pruning_ratio must be in [0, 1) (the fraction of channels to remove", "nan"]),
    ("ratio-one", lambda e: ChannelPruner(e.cnn, pruning_ratio=1.0), ValueError, ["pruning_ratio must be in [0, 1)"]),
    ("ratio-negative", lambda e: ChannelPruner(e.cnn, pruning_ratio=-0.1), ValueError, ["pruning_ratio must be in [0, 1)"]),
    ("ratio-str", lambda e: ChannelPruner(e.cnn, pruning_ratio="0.5"), TypeError, ["pruning_ratio", "'0.5' (str)"]),
    ("ratio-bool", lambda e: ChannelPruner(e.cnn, pruning_ratio=True), TypeError, ["pruning_ratio", "True (bool)"]),
    ("ratio-unknown-layer", lambda e: ChannelPruner(e.cnn, pruning_ratio={"nope": 0.5}), ValueError,
     ["no layer named 'nope'", "'c1'"]),
    ("ratio-dict-value", lambda e: ChannelPruner(e.cnn, pruning_ratio={"c1": 1.5}), ValueError,
     ["pruning_ratio['c1'] must be in [0, 1)"]),
    ("ratio-dict-key-int", lambda e: ChannelPruner(e.cnn, pruning_ratio={3: 0.5}), TypeError,
     ["pruning_ratio: expected layer names or layers"]),
    ("ratio-dict-global", lambda e: ChannelPruner(e.cnn, pruning_ratio={"c1": 0.5}, global_pruning=True), ValueError,
     ["global_pruning=True takes a single float"]),
    ("round-to-zero", lambda e: ChannelPruner(e.cnn, round_to=0), ValueError, ["round_to must be >= 1", "None for no rounding"]),
    ("round-to-float", lambda e: ChannelPruner(e.cnn, round_to=2.5), TypeError, ["round_to must be an integer"]),
    ("min-channels-zero", lambda e: ChannelPruner(e.cnn, min_channels=0), ValueError, ["min_channels must be >= 1"]),
    ("min-channels-float", lambda e: ChannelPruner(e.cnn, min_channels=2.0), TypeError, ["min_channels must be an integer"]),
    ("global-normalize", lambda e: ChannelPruner(e.cnn, global_normalize="l2"), ValueError,
     ["global_normalize must be one of None, 'lamp'"]),
    ("global-pruning-str", lambda e: ChannelPruner(e.cnn, global_pruning="yes"), TypeError,
     ["global_pruning must be True or False"]),
    ("from-zero-str", lambda e: ChannelPruner(e.cnn, from_zero_channels=1), TypeError, ["from_zero_channels must be True or False"]),
    ("custom-objects-list", lambda e: ChannelPruner(e.cnn, custom_objects=[1]), TypeError, ["custom_objects must be a dict"]),
    ("importance-unknown", lambda e: ChannelPruner(e.cnn, importance="l3"), ValueError, ["importance must be 'l1', 'l2'", "'l3'"]),
    ("importance-int", lambda e: ChannelPruner(e.cnn, importance=3), TypeError, ["importance must be"]),
    ("importance-taylor-str", lambda e: get_importance("taylor"), ValueError, ["needs data", "TaylorImportance(x, y"]),
    ("verbose-str", lambda e: ChannelPruner(e.cnn, verbose="x"), ValueError, ["verbose must be one of"]),
    ("ignored-unknown", lambda e: ChannelPruner(e.cnn, ignored_layers=["nope"]), ValueError,
     ["ignored_layers: model 'cnn' has no layer named 'nope'"]),
    ("plan-ratio-nan", lambda e: ChannelPruner(e.cnn).plan(pruning_ratio=NAN), ValueError, ["pruning_ratio must be in [0, 1)"]),
    ("plan-ratio-dict-value", lambda e: ChannelPruner(e.cnn).plan(pruning_ratio={"c1": 2.0}), ValueError,
     ["pruning_ratio['c1']"]),
    ("prune-plan-str", lambda e: ChannelPruner(e.cnn).prune(plan="plan"), TypeError,
     ["plan must be a PruningPlan", "'plan' (str)"]),
    ("prune-plan-other-pruner", lambda e: ChannelPruner(e.cnn).prune(ChannelPruner(e.cnn).plan()), ValueError,
     ["plan was made by another ChannelPruner"]),
    ("masks-plan-int", lambda e: ChannelPruner(e.cnn).masks(plan=3), TypeError, ["plan must be a PruningPlan"]),
    ("iterative-steps-zero", lambda e: prune_iteratively(e.cnn, 0.5, steps=0), ValueError, ["steps must be >= 1"]),
    ("iterative-steps-float", lambda e: prune_iteratively(e.cnn, 0.5, steps=2.5), TypeError, ["steps must be an integer"]),
    ("iterative-ratio", lambda e: prune_iteratively(e.cnn, 1.5, steps=2), ValueError,
     ["pruning_ratio must be in [0, 1)", "got 1.5"]),
    ("iterative-fine-tune", lambda e: prune_iteratively(e.cnn, 0.5, steps=1, fine_tune=3), TypeError,
     ["fine_tune must be None or a callable fn(model, step)"]),
    ("iterative-model-none", lambda e: prune_iteratively(None, 0.5), TypeError, ["needs a keras.Model"]),
    ("callback-epochs-float", lambda e: ChannelPruningCallback(0.5, prune_epochs=[1.5]), TypeError,
     ["prune_epochs[0] must be an integer", "1.5"]),
    ("callback-epochs-twice", lambda e: ChannelPruningCallback(0.5, prune_epochs=[0, 0]), ValueError,
     ["prune_epochs lists an epoch twice"]),
    ("callback-epochs-empty", lambda e: ChannelPruningCallback(0.5, prune_epochs=[]), ValueError,
     ["prune_epochs must list at least one epoch"]),
    ("callback-epochs-int", lambda e: ChannelPruningCallback(0.5, prune_epochs=3), TypeError,
     ["prune_epochs must be a list of epoch indices"]),
    ("callback-ratio", lambda e: ChannelPruningCallback(1.0), ValueError, ["pruning_ratio must be in [0, 1)"]),
    ("magnitude-p", lambda e: MagnitudeImportance(p=3), ValueError, ["p must be 1 or 2", "3 (int)"]),
    ("magnitude-p-bool", lambda e: MagnitudeImportance(p=True), ValueError, ["p must be 1 or 2", "True (bool)"]),
    ("magnitude-roles-int", lambda e: MagnitudeImportance(roles=3), TypeError, ["roles must be a tuple of role names"]),
    ("magnitude-roles-empty", lambda e: MagnitudeImportance(roles=()), ValueError, ["roles must be a non-empty tuple"]),
    ("taylor-x-none", lambda e: TaylorImportance(None), TypeError, ["TaylorImportance needs input data x"]),
    ("taylor-batch-size", lambda e: TaylorImportance(e.img, np.zeros(4, int), batch_size=0), ValueError,
     ["batch_size must be >= 1"]),
    ("taylor-lengths", lambda e: TaylorImportance(e.img, np.zeros(3, int)), ValueError,
     ["x has 4 examples but y has 3"]),
    ("taylor-x-nan", lambda e: TaylorImportance(np.full((4, 8, 8, 3), np.nan), np.zeros(4, int)), ValueError,
     ["TaylorImportance x holds 768 NaN"]),
    ("taylor-loss-int", lambda e: TaylorImportance(e.img, np.zeros(4, int), loss=3), TypeError, ["loss must be a Keras loss"]),
    ("taylor-labels", lambda e: ChannelPruner(
        e.cnn, importance=TaylorImportance(e.img, np.full(4, 7), loss="sparse_categorical_crossentropy")).plan(),
     ValueError, ["TaylorImportance y holds class indices outside [0, 2)"]),
]


@_table(STRUCTURED)
def test_structured(env, call, error, words):
    _run_case(env, call, error, words)


# --------------------------------------------------------------------------
# masking, wrapper, reports, data
# --------------------------------------------------------------------------

OTHERS = [
    ("mask-sparsity-above-one", lambda e: kprune.compute_mask(np.ones(10), 1.5), ValueError, ["sparsity must be in [0, 1)"]),
    ("mask-sparsity-nan", lambda e: kprune.compute_mask(np.ones(10), NAN), ValueError, ["sparsity must be in [0, 1)", "nan"]),
    ("mask-sparsity-str", lambda e: kprune.compute_mask(np.ones(10), "0.5"), TypeError, ["sparsity must be a float", "'0.5'"]),
    ("mask-sparsity-negative", lambda e: kprune.compute_mask(np.ones(10), -0.5), ValueError, ["sparsity must be in [0, 1)"]),
    ("mask-scores-str", lambda e: kprune.compute_mask(np.array(["a", "b"]), 0.5), TypeError, ["scores must be a numeric array"]),
    ("mask-scores-none", lambda e: kprune.compute_mask(None, 0.5), TypeError, ["scores must be a numeric array", "None"]),
    ("mask-granularity-int", lambda e: kprune.compute_mask(np.ones(4), 0.5, granularity=3), ValueError, ["granularity must be"]),
    ("masks-scores-list", lambda e: kprune.compute_masks([np.ones(4)], 0.5), TypeError,
     ["scores must be a dict {key: score array}", "compute_mask"]),
    ("masks-min-keep-negative", lambda e: kprune.compute_masks({"a": np.ones(4)}, 0.5, scope="global", min_keep=-1),
     ValueError, ["min_keep must be >= 0"]),
    ("masks-min-keep-float", lambda e: kprune.compute_masks({"a": np.ones(4)}, 0.5, scope="global", min_keep=1.5),
     TypeError, ["min_keep must be an integer"]),
    ("masks-sparsity-one-global", lambda e: kprune.compute_masks({"a": np.ones(4)}, 1.0, scope="global"), ValueError,
     ["sparsity must be in [0, 1)"]),
    ("masks-sparsity-extra-key", lambda e: kprune.compute_masks({"a": np.ones(4)}, {"a": 0.5, "b": 0.5}), ValueError,
     ["sparsity has key(s) ['b'] that are not in scores"]),
    ("masks-sparsity-dict-nan", lambda e: kprune.compute_masks({"a": np.ones(4)}, {"a": NAN}), ValueError,
     ["sparsity['a'] must be in [0, 1)"]),
    ("masks-scope", lambda e: kprune.compute_masks({"a": np.ones(4)}, 0.5, scope="model"), ValueError, ["scope must be"]),
    ("masks-normalize", lambda e: kprune.compute_masks({"a": np.ones(4)}, 0.5, normalize="l2"), ValueError, ["normalize must be"]),
    ("block-int", lambda e: kprune.Block(4), TypeError, ["block_shape must be a pair of positive integers", "Block((4, 1))"]),
    ("block-zero", lambda e: kprune.Block((0, 1)), ValueError, ["block_shape must be two positive integers", "(0, 1)"]),
    ("block-bool", lambda e: kprune.Block((True, 2)), ValueError, ["block_shape must be two positive integers"]),
    ("block-float", lambda e: kprune.Block((2.0, 2)), ValueError, ["block_shape must be two positive integers"]),
    ("block-pool", lambda e: kprune.Block((2, 2), pool="sum"), ValueError, ["pool must be 'mean' or 'max'"]),
    ("nm-bool", lambda e: kprune.NM(True, 4), TypeError, ["n and m must be integers", "n=True"]),
    ("nm-float", lambda e: kprune.NM(2.0, 4), TypeError, ["n and m must be integers"]),
    ("nm-order", lambda e: kprune.NM(4, 2), ValueError, ["need 1 <= n < m", "n=4, m=2"]),
    ("channel-norm", lambda e: kprune.Channel("l3"), ValueError, ["norm must be 'l1' or 'l2'", "'l3'"]),
    ("wrapper-prune-bias-str", lambda e: kprune.PruneWrapper(keras.layers.Dense(3), prune_bias="no"), TypeError,
     ["prune_bias must be True or False", "'no'"]),
    ("wrapper-not-layer", lambda e: kprune.PruneWrapper(3), TypeError, ["PruneWrapper wraps a Keras layer", "int"]),
    ("wrapper-scope", lambda e: kprune.PruneWrapper(keras.layers.Dense(3), scope="model"), ValueError, ["scope must be"]),
    ("wrapper-schedule", lambda e: kprune.PruneWrapper(keras.layers.Dense(3), 0.5), TypeError, ["pruning_schedule must be"]),
    ("wrapper-not-prunable", lambda e: kprune.PruneWrapper(keras.layers.LayerNormalization()), ValueError, ["not prunable"]),
    ("report-none", lambda e: kprune.sparsity_report(None), TypeError, ["sparsity_report expects a Keras model or layer"]),
    ("flops-none", lambda e: kprune.count_flops(None), TypeError, ["needs a keras.Model", "NoneType"]),
    ("flops-per-layer-str", lambda e: kprune.count_flops(e.cnn, per_layer="yes"), TypeError, ["per_layer must be True or False"]),
    ("params-none", lambda e: kprune.count_params(None), TypeError, ["count_params needs a Keras model or layer"]),
    ("width-report-none", lambda e: kprune.width_report(None, e.cnn), TypeError, ["width_report: before must be a keras.Model"]),
    ("width-report-print-fn", lambda e: kprune.width_report(e.cnn, e.cnn, print_fn=3), TypeError,
     ["print_fn must be None or a callable"]),
    ("mnist-online-str", lambda e: kprune.data.load_mnist(online="no"), TypeError, ["online must be True or False", "'no'"]),
    ("mnist-flatten-str", lambda e: kprune.data.load_mnist(flatten="x"), TypeError, ["flatten must be True or False"]),
    ("mnist-seed-str", lambda e: kprune.data.load_mnist(seed="a"), TypeError, ["seed must be an integer"]),
    ("mnist-5k-fraction-nan", lambda e: kprune.data.load_mnist_5k(test_fraction=NAN), ValueError,
     ["test_fraction must be a finite number"]),
    ("mnist-5k-fraction-one", lambda e: kprune.data.load_mnist_5k(test_fraction=1.0), ValueError,
     ["test_fraction must be in (0, 1)"]),
    ("mnist-5k-fraction-str", lambda e: kprune.data.load_mnist_5k(test_fraction="0.2"), TypeError,
     ["test_fraction must be a number"]),
]


@_table(OTHERS)
def test_masking_wrapper_reports_data(env, call, error, words):
    _run_case(env, call, error, words)


def test_case_count():
    """The issue asks for at least 110 API cases in this file."""
    assert len(SCHEDULES + PLM + AT_INIT + LOOPS + STRUCTURED + OTHERS) >= 110


def test_cases_snapshot_the_models_they_use(env):
    """Model cases are checked on the model they call (not only the guard)."""
    assert _models_used(env, PLM[0][1]) == ["mlp"]
    assert _models_used(env, AT_INIT[0][1]) == ["mlp"]
    assert "nested" in _models_used(env, dict((r[0], r[1]) for r in PLM)["sparsity-ambiguous-nested"])
    assert "pruned" in _models_used(env, LOOPS[0][1])
    assert "cnn" in _models_used(env, STRUCTURED[3][1])


# --------------------------------------------------------------------------
# numbers that must be accepted: numpy scalars, 0-d tensors
# --------------------------------------------------------------------------


def test_numpy_scalars_are_numbers_in_schedules():
    s = kprune.ConstantSparsity(np.float32(0.8), begin_step=np.int64(0), frequency=np.int32(10))
    assert s.target_sparsity == pytest.approx(0.8) and s.frequency == 10
    assert type(s.frequency) is int
    # tfmot's guide: end_step = np.ceil(n / batch).astype(np.int32) * epochs
    end_step = np.ceil(100 / 32).astype(np.int32) * 2
    p = kprune.PolynomialDecay(np.float64(0.5), np.float32(0.8), np.int32(0), end_step)
    assert p.end_step == 8 and type(p.end_step) is int
    assert p.should_prune(np.int64(8)) and p.sparsity(np.int64(8)) == pytest.approx(0.8)
    assert kprune.PolynomialDecay(0.0, 0.5, 0, 8, power=np.float32(2.0)).power == 2.0


def test_numpy_scalars_are_numbers_in_prune_low_magnitude(env):
    pruned = kprune.prune_low_magnitude(env.mlp, sparsity={"d1": np.float32(0.25)})
    by_name = {w.layer.name: w for w in kprune.core.model_tree.find_wrappers(pruned)}
    assert by_name["d1"].pruning_schedule.target_sparsity == pytest.approx(0.25)
    # a pair list without repeats is a mapping
    pruned = kprune.prune_low_magnitude(env.mlp, sparsity=[("d1", 0.3)], ignore="out")
    assert [w.layer.name for w in kprune.core.model_tree.find_wrappers(pruned)] == ["d1"]


def test_integer_steps_accepted(env):
    model = kprune.prune_low_magnitude(_mlp("steps"), kprune.ConstantSparsity(0.5, frequency=2))
    assert kprune.update_masks(model, np.int64(0)) == ["d1", "out"]
    assert kprune.update_masks(model, keras.Variable(2, dtype="int64", trainable=False)) == ["d1", "out"]
    assert kprune.update_masks(model, np.array(4)) == ["d1", "out"]
    # The largest step the stored counter holds (int64; int32 on JAX without x64).
    largest = int(np.iinfo(kprune.core.wrapper.STEP_DTYPE).max)
    assert kprune.update_masks(model, largest) == ["d1", "out"]


def test_numpy_scalars_in_at_init_and_structured(env):
    pruned = kprune.prune_at_init(env.mlp, (env.x, env.y), "snip", np.float32(0.5),
                                  min_keep=np.int64(1), batches=np.int32(1), verbose=0)
    assert len(kprune.core.model_tree.find_wrappers(pruned)) == 2
    thin = ChannelPruner(env.cnn, pruning_ratio=np.float32(0.5), round_to=np.int64(2)).prune()
    assert thin.get_layer("c1").filters == 2
    summaries = kprune.PruningSummaries("logs", update_freq=np.int64(5))
    assert summaries.update_freq == 5


def test_channel_pruner_dict_keyed_by_layer_objects(env):
    """A `{layer: ratio}` dict prunes that layer (it used to prune nothing)."""
    layer = env.cnn.get_layer("c1")
    thin = ChannelPruner(env.cnn, pruning_ratio={layer: 0.5}).prune()
    assert thin.get_layer("c1").filters == 2 and thin.get_layer("c2").filters == 4
