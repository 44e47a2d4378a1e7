import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

#: Test modules that exercise TensorFlow itself (TFLite export, tf.distribute,
#: tf.summary, tfmot in a tf_keras subprocess, GradientTape loops). They run
#: on the TensorFlow backend; on JAX and torch they are not collected, and the
#: report header lists them (nothing is skipped silently).
TENSORFLOW_ONLY = {
    "test_tflite_export.py",
    "test_tflite_export_fuzz.py",
    "test_tflite_export_reliability.py",
    "test_report.py",  # `kprune report` reads .tflite files too
    "test_distributed.py",
    "test_tfmot_parity.py",
    "test_tfmot_compat.py",
    "test_summaries.py",
    "test_custom_loop.py",
    "test_cli.py",
    "test_notebooks.py",
    # keras-hub installs tensorflow-text, hence TensorFlow: tested there.
    "test_kerashub.py",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow: needs TensorFlow itself (tf.data, tf.lite, GradientTape); "
        "deselected, and counted as such, on the JAX and torch backends",
    )
    config.addinivalue_line(
        "markers",
        "backends(*names, reason=...): runs only on these Keras backends; "
        "deselected, and counted as such, on the others (the reason says why)",
    )


def pytest_report_header(config):
    if BACKEND == "tensorflow":
        return f"kprune tests on Keras backend: {BACKEND} (all tests)"
    return (
        f"kprune tests on Keras backend: {BACKEND}; TensorFlow-only modules not "
        f"collected: {', '.join(sorted(TENSORFLOW_ONLY))}; tests marked "
        f"'tensorflow' are deselected"
    )


def pytest_ignore_collect(collection_path, config):
    if BACKEND != "tensorflow" and collection_path.name in TENSORFLOW_ONLY:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    def excluded(item):
        if BACKEND != "tensorflow" and item.get_closest_marker("tensorflow"):
            return True
        only = item.get_closest_marker("backends")
        return only is not None and BACKEND not in only.args

    dropped = [item for item in items if excluded(item)]
    if dropped:
        items[:] = [item for item in items if not excluded(item)]
        config.hook.pytest_deselected(items=dropped)


def gradients(fn, variables, *args):
    """`d fn(*args) / d variables` as numpy arrays, on any Keras backend."""
    from kprune import backend

    return backend.grad_fn(fn, list(variables), compiled=False)(*args)[1]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


def weights_of(model):
    """Deep copy of every variable of a model, for "unchanged" checks."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def assert_unchanged(model, before_weights, before_config):
    assert model.get_config() == before_config
    after = weights_of(model)
    assert len(after) == len(before_weights)
    for a, b in zip(after, before_weights):
        np.testing.assert_array_equal(a, b)


def small_cnn(num_classes=10, input_shape=(28, 28, 1)):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="fc1"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="small_cnn",
    )


def small_mlp(inputs=20, classes=5):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(64, activation="relu", name="d1"),
            keras.layers.Dense(32, activation="relu", name="d2"),
            keras.layers.Dense(classes, name="d3"),
        ],
        name="mlp",
    )


def toy_data(n=256, inputs=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    y = (np.abs(x[:, :classes]).argmax(axis=1)).astype("int64")
    return x, y


class ExactZeros(keras.callbacks.Callback):
    """Checks after every batch that each pruned weight is exactly 0."""

    def on_train_batch_end(self, batch, logs=None):
        from kprune.core.model_tree import find_wrappers

        for group in find_wrappers(self.model):
            for w, m in zip(group.prunable_weights, group.masks):
                w, m = keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(m)
                assert np.all(w[m == 0] == 0), (group.label, batch)
