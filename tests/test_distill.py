"""Distillation through keras.distillation, adaptive BN and EagleEye selection."""

import keras
import numpy as np
import pytest

import kprune
from kprune.methods import distill as distill_lib


def _mlp(units=4, name=None):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(units)], name=name)


def _data(n=32, classes=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, classes, n)


def _kl_loss(teacher_logits, student_logits, t):
    def soft(z):
        e = np.exp(z / t - (z / t).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = soft(teacher_logits), np.clip(soft(student_logits), 1e-7, 1)
    p = np.clip(p, 1e-7, 1)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)) * t * t)


def test_the_distillation_loss_uses_the_teachers_outputs():
    x, y = _data()
    student, t1, t2 = _mlp(), _mlp(), _mlp()
    s_out = keras.ops.convert_to_numpy(student(x))
    for teacher in (t1, t2):
        d = distill_lib.make_distiller(student, teacher, temperature=2.0, student_loss_weight=0.0)
        logs = d.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
        expected = _kl_loss(keras.ops.convert_to_numpy(teacher(x)), s_out, 2.0)
        assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-4)
    # Different teachers, different losses: the teacher's outputs are used.
    l1 = _kl_loss(keras.ops.convert_to_numpy(t1(x)), s_out, 2.0)
    l2 = _kl_loss(keras.ops.convert_to_numpy(t2(x)), s_out, 2.0)
    assert l1 != pytest.approx(l2, rel=1e-3)


def test_distill_trains_a_pruned_student_towards_the_teacher_and_restores_it():
    x, y = _data(64)
    teacher = _mlp()
    teacher_weights = [np.array(w) for w in teacher.get_weights()]
    student = kprune.prune_low_magnitude(_mlp(), kprune.ConstantSparsity(0.5, begin_step=0))
    before = _kl_loss(keras.ops.convert_to_numpy(teacher(x)), keras.ops.convert_to_numpy(student(x)), 3.0)
    student, history = distill_lib.distill(student, teacher, x, y, epochs=15, batch_size=16,
                                           student_loss_weight=0.0, optimizer=keras.optimizers.Adam(0.01),
                                           callbacks=[kprune.PruningCallback()])
    after = _kl_loss(keras.ops.convert_to_numpy(teacher(x)), keras.ops.convert_to_numpy(student(x)), 3.0)
    assert after < 0.5 * before
    assert teacher.trainable
    for a, b in zip(teacher.get_weights(), teacher_weights):
        np.testing.assert_array_equal(a, b)
    report = kprune.sparsity_report(student)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)


def test_softmax_models_are_rejected():
    soft = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    with pytest.raises(ValueError, match="softmax"):
        distill_lib.make_distiller(soft, _mlp())


def _bn_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="d1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(h))


def test_adaptive_bn_sets_the_mean_of_the_batch_statistics():
    model = _bn_model()
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(40, 6)).astype("float32")
    dense_weights = [np.array(w) for w in model.get_layer("d1").get_weights()]
    distill_lib.adaptive_bn(model, x, batches=4, batch_size=10)
    h = x @ dense_weights[0] + dense_weights[1]
    means = np.stack([h[i * 10:(i + 1) * 10].mean(0) for i in range(4)])
    variances = np.stack([h[i * 10:(i + 1) * 10].var(0) for i in range(4)])
    bn = model.get_layer("bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), means.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), variances.mean(0),
                               rtol=1e-3, atol=1e-3)
    assert bn.momentum == 0.99
    for a, b in zip(model.get_layer("d1").get_weights(), dense_weights):
        np.testing.assert_array_equal(a, b)


def test_eagleeye_picks_the_best_candidate():
    model = _bn_model()
    x = np.random.default_rng(2).normal(size=(64, 6)).astype("float32")
    candidates = distill_lib.sample_ratios(model, 3, max_ratio=0.75, seed=0)
    assert all(set(c) == {"d1"} for c in candidates)
    best, cand, scores = distill_lib.eagleeye_select(
        model, candidates, x, evaluate=lambda m: -abs(m.get_layer("d1").units - 5))
    assert best.get_layer("d1").units == max(
        (8 - round(8 * c["d1"]) for c in candidates), key=lambda u: -abs(u - 5))
    assert len(scores) == 3 and max(scores) == scores[candidates.index(cand)]
