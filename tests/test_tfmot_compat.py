"""`kprune.tfmot`: tfmot's pruning guides run on Keras 3 with one changed import.

The guide scripts live in tests/tfmot_guide.py (shared with the parity test,
which runs them with tfmot itself in a tf_keras subprocess). Here they run
in-process with `import kprune.tfmot as tfmot`, for a few steps, and the
tests check what each guide section promises. Then the features tfmot users
rely on, in kprune's own API too: lists of layers, `input_shape=` through
the wrapper, hand-driven callbacks, the XNNPACK policy, tfmot's keywords.
"""

import inspect
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
import tensorflow as tf  # noqa: E402

import kprune  # noqa: E402
import kprune.tfmot as tfmot  # noqa: E402  (the one changed line)
import tfmot_guide  # noqa: E402
from kprune.core import masking  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

K = tfmot.sparsity.keras
L = keras.layers
STEPS = 3


class _Side:
    weights_suffix = ".weights.h5"

    @staticmethod
    def set_kernels(model, kernels):
        for w, k in zip(find_wrappers(model), kernels):
            w.layer.kernel.assign(k)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _sparsity(mask):
    m = _np(mask)
    return 1 - m.sum() / m.size


@pytest.fixture(scope="module")
def data():
    ns = {"keras": keras, "tfmot": tfmot}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(tfmot_guide.SCRIPTS["xnnpack"].split("fixed_dense_model.set_weights")[0], ns)
    shapes = [tuple(w.shape) for w in ns["fixed_dense_model"].get_weights()]
    return tfmot_guide.make_data(STEPS, shapes, [(20, 16), (16, 8)])


def run(name, data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 warns on the guides' input_shape=
        return tfmot_guide.run_script(name, tfmot, keras, tf, np, data, _Side, str(tmp_path))


def test_never_imports_tensorflow_model_optimization():
    assert "tensorflow_model_optimization" not in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0", "")
    assert keras.__version__.startswith("3.")


def test_the_eleven_names_with_tfmot_signatures():
    names = ["prune_low_magnitude", "prune_scope", "strip_pruning", "UpdatePruningStep",
             "PruningSummaries", "PruningSchedule", "ConstantSparsity", "PolynomialDecay",
             "PrunableLayer", "PruningPolicy", "PruneForLatencyOnXNNPack"]
    assert sorted(K.__all__) == sorted(names)
    sig = inspect.signature(K.prune_low_magnitude)
    assert list(sig.parameters) == ["to_prune", "pruning_schedule", "block_size",
                                    "block_pooling_type", "pruning_policy", "sparsity_m_by_n",
                                    "kwargs"]
    p = sig.parameters
    assert p["pruning_schedule"].default.get_config() == {
        "class_name": "ConstantSparsity", "config": kprune.ConstantSparsity(0.5, 0).get_config()}
    assert (p["block_size"].default, p["block_pooling_type"].default) == ((1, 1), "AVG")
    assert p["pruning_policy"].default is None and p["sparsity_m_by_n"].default is None
    assert str(inspect.signature(K.ConstantSparsity)) == (
        "(target_sparsity, begin_step, end_step=-1, frequency=100)")
    assert str(inspect.signature(K.PolynomialDecay)) == (
        "(initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100)")
    assert str(inspect.signature(K.PruningSummaries)) == "(log_dir, update_freq='epoch', **kwargs)"
    assert str(inspect.signature(K.UpdatePruningStep)) == "()"
    assert str(inspect.signature(K.prune_scope)) == "()"
    assert K.PrunableLayer is kprune.PrunableLayer


@pytest.mark.parametrize("name", ["clustering"])  # quantization: kprune.tfmot.quantization (issue 27)
def test_quantization_and_clustering_point_to_keras(name):
    with pytest.raises(AttributeError, match=r"sparsity \(pruning\) only.*model.quantize"):
        getattr(tfmot, name)


def test_whole_model(data, tmp_path):
    ns = run("whole_model", data, tmp_path)
    model, base = ns["model_for_pruning"], ns["base_model"]
    (w,) = find_wrappers(model)
    assert [type(l).__name__ for l in model.layers] == ["PruneWrapper", "Flatten"]
    # the wrapper holds the schedule passed: here tfmot's default ConstantSparsity(0.5, 0)
    assert type(w.pruning_schedule) is K.ConstantSparsity
    assert w.pruning_schedule == K.ConstantSparsity(0.5, 0)
    assert int(_np(w.masks[0]).sum()) == masking.kept_count(400, 0.5)
    assert w.step == STEPS
    # a copy: the caller's model keeps its dense weights
    np.testing.assert_array_equal(_np(base.layers[0].kernel), data["W"][0])


def test_clone_model_with_clone_function(data, tmp_path):
    ns = run("clone_dense", data, tmp_path)
    model = ns["model_for_pruning"]
    assert [type(l).__name__ for l in model.layers] == ["PruneWrapper", "Flatten"]
    (w,) = find_wrappers(model)
    kept = _np(w.masks[0]).astype(bool)
    np.testing.assert_array_equal(_np(w.layer.kernel)[kept], data["W"][0][kept])
    assert _sparsity(w.masks[0]) == 0.5


def test_custom_prunable_layer_prunes_kernel_and_bias(data, tmp_path):
    ns = run("custom_layer", data, tmp_path)
    model = ns["model_for_pruning"]
    (w,) = find_wrappers(model)
    assert [v.name for v in w.prunable_weights] == ["kernel", "bias"]
    assert [_sparsity(m) for m in w.masks] == [0.5, 0.5]


def test_polynomial_decay_with_summaries_in_fit(data, tmp_path):
    ns = run("polynomial_summaries", data, tmp_path)
    (w,) = find_wrappers(ns["model_for_pruning"])
    # end_step came as a numpy int32 (np.ceil(...).astype(np.int32)), as in the guide
    assert w.pruning_schedule == K.PolynomialDecay(0.5, 0.8, 0, STEPS)
    assert _sparsity(w.masks[0]) == pytest.approx(0.8)
    assert os.listdir(ns["logdir"])


def _scalars(log_dir):
    out = {}
    for root, _, files in os.walk(log_dir):
        for f in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                for v in event.summary.value:
                    out.setdefault(v.tag, []).append(
                        (event.step, float(tf.make_ndarray(v.tensor))))
    return out


def test_hand_driven_custom_loop_advances_the_step(data, tmp_path):
    ns = run("custom_loop", data, tmp_path)
    model = ns["model_for_pruning"]
    (w,) = find_wrappers(model)
    assert w.step == STEPS == int(_np(model.optimizer.iterations))
    assert _sparsity(w.masks[0]) == 0.5
    tags = _scalars(ns["log_dir"])
    # log_callback.on_epoch_begin wrote at the step of each epoch's start
    assert [s for s, _ in tags[f"sparsity/{w.layer.name}"]] == [0, 1, 2]


def test_hand_driven_batch_begin_updates_masks_before_the_step():
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((8,)), L.Dense(8, name="d")]),
        kprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=3, frequency=1))
    (w,) = find_wrappers(model)
    cb = kprune.PruningCallback()
    cb.set_model(model)
    cb.on_train_begin()
    seen = []
    for step in range(4):
        cb.on_train_batch_begin(batch=-1)
        seen.append(round(_sparsity(w.masks[0]), 4))
        model(np.ones((1, 8), "float32"), training=True)
    cb.on_epoch_end(-1)
    # the k-th batch (from 1) trains with the masks of step k, as in tfmot
    expected = [masking.kept_count(64, w.pruning_schedule.sparsity(s)) for s in range(1, 5)]
    assert seen == [round(1 - k / 64, 4) for k in expected]
    assert w.step == 4


def test_fit_still_advances_once_per_batch():
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), L.Dense(4)]), kprune.ConstantSparsity(0.5))
    model.compile("sgd", "mse")
    model.fit(np.ones((5, 4)), np.ones((5, 4)), batch_size=1, epochs=2, verbose=0,
              callbacks=K.UpdatePruningStep())  # a single callback, as the 2:4 guide passes it
    assert find_wrappers(model)[0].step == 10


def test_strip_pruning_and_gzipped_size(data, tmp_path):
    ns = run("strip_gzip", data, tmp_path)
    model_for_export = ns["model_for_export"]
    assert [type(l).__name__ for l in model_for_export.layers] == ["Dense", "Flatten"]
    assert model_for_export.get_config() == ns["base_model"].get_config()
    assert (_np(model_for_export.layers[0].kernel) == 0).sum() == 200
    assert ns["size_stripped"] < ns["size_unstripped"]


def test_checkpoint_and_load_in_prune_scope(data, tmp_path):
    ns = run("checkpoint", data, tmp_path)
    saved, loaded = ns["model_for_pruning"], ns["loaded_model"]
    assert [type(l) for l in loaded.layers] == [type(l) for l in saved.layers]
    for a, b in zip(loaded.weights, saved.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    # kprune registers its classes: no scope needed
    assert keras.models.load_model(ns["keras_model_file"]).count_params() == saved.count_params()


def test_block_1x16(data, tmp_path):
    ns = run("block_1x16", data, tmp_path)
    (w,) = find_wrappers(ns["model_for_pruning"])
    assert w.granularity == kprune.Block((1, 16), pool="mean")
    m = _np(w.masks[0]).astype(bool)
    for block in (m[:, :16], m[:, 16:]):
        assert np.all(block.all(axis=1) | ~block.any(axis=1))


def test_xnnpack_policy_accepts_the_guide_model(data, tmp_path):
    ns = run("xnnpack", data, tmp_path)
    model = ns["model_for_pruning"]
    wrapped = [w.layer for w in find_wrappers(model)]
    assert [(l.kernel_size, l.filters) for l in wrapped] == [((1, 1), 16), ((1, 1), 32)]
    assert all(_sparsity(w.masks[0]) == 0.75 for w in find_wrappers(model))


def test_xnnpack_policy_rejects_a_model_that_does_not_fit(data, tmp_path):
    ns = run("xnnpack_misfit", data, tmp_path)
    assert "layer 'conv2d" in ns["error"] and "padding 'same'" in ns["error"]


def test_m_by_n_2_4(data, tmp_path):
    ns = run("m_by_n", data, tmp_path)
    first, nm = find_wrappers(ns["model_for_pruning"])
    assert ns["model_for_pruning"].layers[0] is first  # input_shape= went through
    assert _sparsity(first.masks[0]) == 0.5
    m = _np(nm.masks[0]).reshape(4, 4, 8)  # (in=16 as 4 groups of 4, out)
    assert np.all(m.sum(axis=1) == 2)
    np.testing.assert_array_equal(_np(nm.layer.kernel)[m.reshape(16, 8) == 0], 0)


def test_m_by_n_ignores_the_schedule_with_a_warning():
    with pytest.warns(UserWarning, match="applied once at the first training step"):
        w = K.prune_low_magnitude(L.Dense(8), K.PolynomialDecay(0.2, 0.8, 0, 10),
                                  sparsity_m_by_n=(2, 4))
    assert w.pruning_schedule == kprune.ConstantSparsity(0.5, 0, end_step=0)
    assert w.granularity == kprune.NM(2, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"block_pooling_type": "MEAN"}, "Should be 'AVG' or 'MAX'"),
    ({"block_size": (1, 0)}, "block_size must be two positive integers"),
    ({"block_size": (1, 4), "sparsity_m_by_n": (2, 4)}, "not both"),
    ({"sparsity_m_by_n": "2:4"}, "tuple of two integers"),
])
def test_bad_keywords_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        K.prune_low_magnitude(L.Dense(8), **kwargs)


@pytest.mark.parametrize("log_dir", [None, ""])
def test_summaries_need_a_log_dir(log_dir):
    with pytest.raises(ValueError, match="non-empty string"):
        K.PruningSummaries(log_dir=log_dir)


def test_summaries_reject_tensorboard_arguments(tmp_path):
    with pytest.raises(TypeError, match="keras.callbacks.TensorBoard"):
        K.PruningSummaries(str(tmp_path), histogram_freq=1)


def test_tfmot_style_custom_schedule_drives_fit():
    class EveryOther(K.PruningSchedule):
        def __call__(self, step):
            return self._should_prune_in_step(step, 1, 5, 2), tf.constant(0.25) * tf.cast(
                (step + 1) // 2, tf.float32)

        def get_config(self):
            return {}

    schedule = EveryOther()
    assert [schedule.next_update(s) for s in range(7)] == [1, 1, 3, 3, 5, 5, None]
    model = K.prune_low_magnitude(keras.Sequential([keras.Input((8,)), L.Dense(8)]), schedule)
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 8)), batch_size=1, verbose=0,
              callbacks=[K.UpdatePruningStep()])
    # updates at steps 1 and 3 (4 batches: steps 0..4): sparsity 0.25 * 2
    assert _sparsity(find_wrappers(model)[0].masks[0]) == 0.5


# -- kprune's own API: the same features without the tfmot names ------------


def test_kprune_prunes_a_list_of_layers():
    layers = kprune.prune_low_magnitude(
        [L.InputLayer(shape=(6,)), L.Dense(4, name="a"), L.Dense(2, name="b")],
        kprune.ConstantSparsity(0.5))
    assert [type(l).__name__ for l in layers] == ["InputLayer", "PruneWrapper", "PruneWrapper"]
    model = keras.Sequential(layers)
    assert model.built and len(find_wrappers(model)) == 2


def test_kprune_list_with_an_unprunable_or_pruned_layer_raises():
    with pytest.raises(ValueError, match="'flat'.*not prunable"):
        kprune.prune_low_magnitude([L.Dense(4), L.Flatten(name="flat")])
    with pytest.raises(ValueError, match="item 0 .* already pruned"):
        kprune.prune_low_magnitude([kprune.PruneWrapper(L.Dense(4), kprune.ConstantSparsity(0.5))])
    with pytest.raises(TypeError, match="item 1"):
        kprune.prune_low_magnitude([L.Dense(4), keras.Sequential([L.Dense(2)])])


def test_kprune_wrapper_passes_input_shape_through():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = L.Dense(2, input_shape=(3,))
    model = keras.Sequential([kprune.PruneWrapper(inner, kprune.ConstantSparsity(0.5)), L.Dense(1)])
    assert model.built and model.input_shape == (None, 3)
    model = keras.Sequential([kprune.prune_low_magnitude(L.Dense(2), input_shape=(3,))])
    assert model.input_shape == (None, 3)
    with pytest.raises(TypeError, match="single layer only"):
        kprune.prune_low_magnitude(model, name="x")


def _mobilenet_v2_like(stem_padding="valid", extra=None):
    x = inp = keras.Input((32, 32, 3))
    if stem_padding == "valid":
        x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, strides=2, padding=stem_padding, name="stem")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for i, stride in enumerate([1, 2, 1]):
        skip = x
        y = L.Conv2D(16, 1, name=f"expand{i}")(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        if stride == 2:
            y = L.ZeroPadding2D(1)(y)
            y = L.DepthwiseConv2D(3, strides=2, padding="valid", name=f"dw{i}")(y)
        else:
            y = L.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(y)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        if extra is not None and i == 1:
            y = extra(y)
        y = L.Conv2D(8, 1, name=f"project{i}")(y)
        y = L.BatchNormalization()(y)
        x = L.Add()([skip, y]) if stride == 1 else y
    x = L.Conv2D(32, 1, name="head")(x)
    x = L.Activation("relu6")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x))


def test_kprune_xnnpack_policy_on_a_mobilenet_v2_like_model():
    model = _mobilenet_v2_like()
    pruned = kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.8),
                                        pruning_policy=kprune.PruneForLatencyOnXNNPack())
    assert sorted(w.layer.name for w in find_wrappers(pruned)) == sorted(
        [f"expand{i}" for i in range(3)] + [f"project{i}" for i in range(3)] + ["head"])


@pytest.mark.parametrize("extra, match", [
    (lambda y: L.MaxPooling2D(1, name="pool")(y), "layer 'pool' \\(MaxPooling2D\\)"),
    (lambda y: L.DepthwiseConv2D(3, strides=2, padding="valid", name="dwbad")(y),
     "layer 'dwbad'.*ZeroPadding2D"),
    (lambda y: L.Activation("hard_swish", name="hs")(y), "layer 'hs'.*hard_silu"),
    (lambda y: L.Conv2D(16, 3, padding="same", name="c3")(y), "layer 'c3'.*1x1 with stride 1"),
])
def test_kprune_xnnpack_policy_names_the_first_layer_that_does_not_fit(extra, match):
    model = _mobilenet_v2_like(extra=extra)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        kprune.prune_low_magnitude(model, pruning_policy=kprune.PruneForLatencyOnXNNPack())
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_kprune_xnnpack_policy_needs_the_stem_and_the_pooling():
    with pytest.raises(ValueError, match="layer 'stem'.*padding 'same'"):
        kprune.prune_low_magnitude(_mobilenet_v2_like(stem_padding="same"),
                                   pruning_policy=kprune.PruneForLatencyOnXNNPack())
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, strides=2, padding="valid")(L.ZeroPadding2D(1)(inp))
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(L.Conv2D(4, 1)(x))))
    with pytest.raises(ValueError, match="output 'out'.*GlobalAveragePooling2D"):
        kprune.prune_low_magnitude(model, pruning_policy=kprune.PruneForLatencyOnXNNPack())
    with pytest.raises(ValueError, match="whole model"):
        kprune.prune_low_magnitude(L.Conv2D(4, 1), pruning_policy=kprune.PruneForLatencyOnXNNPack())


def test_hand_driven_begin_and_end_with_batch_minus_one_count_each_step_once():
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), L.Dense(4)]), kprune.ConstantSparsity(0.5))
    cb = K.UpdatePruningStep()
    cb.set_model(model)
    cb.on_train_begin()
    for _ in range(3):
        cb.on_train_batch_begin(batch=-1)
        model(np.ones((1, 4), "float32"), training=True)
        cb.on_train_batch_end(batch=-1)
    cb.on_epoch_end(batch=-1)
    assert find_wrappers(model)[0].step == 3


@settings(max_examples=30, deadline=None)
@given(begin=st.integers(0, 30), length=st.integers(-1, 40), frequency=st.integers(1, 12),
       start=st.integers(0, 80))
def test_tfmot_style_schedule_finds_the_same_updates_as_kprune(begin, length, frequency, start):
    end = -1 if length < 0 else begin + length

    class Same(K.PruningSchedule):  # tfmot's ConstantSparsity written as a custom schedule
        def __call__(self, step):
            return self._should_prune_in_step(step, begin, end, frequency), 0.5

        def get_config(self):
            return {}

    ours = Same()
    # tfmot's update steps, without kprune's extra update at end_step
    reference = [s for s in range(start, start + 200)
                 if s >= begin and (end < 0 or s <= end) and (s - begin) % frequency == 0]
    assert ours.next_update(start) == (reference[0] if reference else None)
