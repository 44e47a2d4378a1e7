"""kprune.llm.distill on a plain-Keras decoder (every backend; no KerasHub needed):
the student moves towards the teacher's next-token distributions, the teacher
is unchanged, an interrupted run resumes from its backup and ends where an
uninterrupted run ends, and progress goes through kprune.utils.progress."""

import keras
import numpy as np
import pytest

from kprune import llm

VOCAB, SEQ = 17, 9


def _decoder(width, seed):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(VOCAB, width)(ids)
    a = keras.layers.MultiHeadAttention(2, width // 2)(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization()(h + a)
    h = h + keras.layers.Dense(width)(keras.layers.Dense(2 * width, activation="gelu")(h))
    return keras.Model({"token_ids": ids, "padding_mask": mask}, keras.layers.Dense(VOCAB)(h))


def _text(n=32, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.integers(0, VOCAB, (n, 1))
    return ((start + np.arange(SEQ) * 3) % VOCAB).astype("int32")  # a learnable pattern


def _kl(teacher, student, ids):
    x, _ = llm.lm_batches(ids)
    p = keras.ops.convert_to_numpy(keras.ops.softmax(teacher(x), -1)).astype(np.float64)
    q = keras.ops.convert_to_numpy(keras.ops.softmax(student(x), -1)).astype(np.float64)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), -1)))


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_distillation_moves_the_student_towards_the_teacher_and_leaves_the_teacher(capsys):
    teacher, student = _decoder(16, 0), _decoder(8, 1)
    ids = _text()
    before_teacher = _weights(teacher)
    before = _kl(teacher, student, ids)
    out, history = llm.distill(student, teacher, ids, epochs=3, batch_size=16,
                               optimizer=keras.optimizers.Adam(2e-2), verbose=1, shuffle=False)
    assert out is student
    after = _kl(teacher, student, ids)
    assert after < 0.7 * before, (before, after)
    for a, b in zip(before_teacher, _weights(teacher)):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable
    printed = capsys.readouterr().out
    assert "Distillation" in printed and "6/6" in printed and "done" in printed
    assert len(history.history["loss"]) == 3


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_an_interrupted_run_resumes_from_its_backup(tmp_path):
    ids = _text()
    teacher = _decoder(16, 0)
    kwargs = {"epochs": 2, "batch_size": 16, "verbose": 0, "shuffle": False}
    whole = _decoder(8, 1)
    llm.distill(whole, teacher, ids, optimizer=keras.optimizers.SGD(0.1), **kwargs)

    student = _decoder(8, 1)
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        llm.distill(student, teacher, ids, optimizer=keras.optimizers.SGD(0.1), backup_dir=backup,
                    callbacks=[_StopAt(1)], **kwargs)
    resumed = _decoder(8, 1)  # a fresh process would rebuild the student from scratch
    _, history = llm.distill(resumed, teacher, ids, optimizer=keras.optimizers.SGD(0.1),
                             backup_dir=backup, **kwargs)
    assert history.epoch == [1]  # epoch 0 came from the backup
    for a, b in zip(_weights(whole), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_input_is_refused_in_kprune_words():
    teacher, student = _decoder(16, 0), _decoder(8, 1)
    with pytest.raises(ValueError, match="integer token ids"):
        llm.distill(student, teacher, np.zeros((4, SEQ), "float32"))
    with pytest.raises(ValueError, match="sequence >= 2"):
        llm.distill(student, teacher, np.zeros((4, 1), "int32"))
    with pytest.raises(ValueError, match="temperature"):
        llm.distill(student, teacher, _text(), temperature=0)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    other = keras.Model({"token_ids": ids, "padding_mask": mask},
                        keras.layers.Dense(VOCAB + 1)(keras.layers.Embedding(VOCAB, 4)(ids)))
    with pytest.raises(ValueError, match="vocabularies differ"):
        llm.distill(other, teacher, _text())
