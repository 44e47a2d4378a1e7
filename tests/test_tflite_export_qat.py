"""Int8 export of quantization-aware models (tflite_export/qat.py), TensorFlow leg.

* tfmot's PQAT guide (prune -> strip -> quantize_annotate_model ->
  quantize_apply(Default8BitPrunePreserveQuantizeScheme) -> fit ->
  TFLiteConverter with Optimize.DEFAULT) runs through `import kprune.tfmot as
  tfmot`, and the int8 file keeps every pruned zero (read with
  `tflite_export.inspect`).
* The int8 file against the fake-quantized Keras model on the 1,000 test
  digits of `kprune.data`: argmax agreement >= 99%, and max |tflite - keras|
  at most one step of the output tensor's quantization scale.
* Block(16, 1) Dense kernels run TFLite's sparse int8 kernel; the messages
  for a model Keras quantized, a QAT model exported as float, and a layer QAT
  left float.
"""

import keras
import numpy as np
import pytest

import kprune
from kprune import data, quantization

pytestmark = pytest.mark.tensorflow
L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def tf():
    import tensorflow  # noqa: PLC0415  (TensorFlow leg only)

    return tensorflow


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist_5k()


def _int8_kernels(tflite, model):
    """`{layer name: (keras kernel, int8 kernel in Keras layout)}` for every quantized kernel."""
    import tflite_export  # noqa: PLC0415
    from tflite_export.inspection import tensor_values  # noqa: PLC0415

    report = tflite_export.inspect(tflite)
    int8 = [t for t in report.weights if t.dtype == "int8"]
    values = tensor_values(tflite, [t.index for t in int8])
    out = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Wrapper) or getattr(layer, "weight_quantizer", None) is None:
            continue
        kernel = keras.ops.convert_to_numpy(layer.layer.kernel)
        if kernel.ndim == 2:
            want_shape, to_keras = kernel.T.shape, lambda v: v.T
        else:
            want_shape = (kernel.shape[-1],) + kernel.shape[:-1]
            to_keras = lambda v: np.transpose(v, (1, 2, 3, 0))  # noqa: E731
        found = [t for t in int8 if t.shape == want_shape]
        assert len(found) == 1, (layer.name, want_shape, [t.shape for t in int8])
        out[layer.name] = (kernel, to_keras(values[found[0].index]))
    return out


def test_tfmot_pqat_guide_keeps_every_pruned_zero_in_the_int8_file(tf, mnist):
    import kprune.tfmot as tfmot  # the one changed line: import tensorflow_model_optimization as tfmot
    import tflite_export  # noqa: PLC0415

    (train_images, train_labels), _ = mnist
    train_images, train_labels = train_images[:1500, ..., 0], train_labels[:1500]  # guide: [N, 28, 28]
    # --- tfmot's PQAT guide (tensorflow.org/model_optimization/guide/combine/pqat_example),
    #     fewer epochs; Keras 3: InputLayer(shape=...) ---
    model = keras.Sequential([
        keras.layers.InputLayer(shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation=tf.nn.relu),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, validation_split=0.1, epochs=1, verbose=0)

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    pruning_params = {"pruning_schedule": tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)}
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    pruned_model = prune_low_magnitude(model, **pruning_params)
    opt = keras.optimizers.Adam(learning_rate=1e-5)
    pruned_model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])
    pruned_model.fit(train_images, train_labels, epochs=1, validation_split=0.1, callbacks=callbacks,
                     verbose=0)
    stripped_pruned_model = tfmot.sparsity.keras.strip_pruning(pruned_model)

    quant_aware_annotate_model = tfmot.quantization.keras.quantize_annotate_model(stripped_pruned_model)
    pqat_model = tfmot.quantization.keras.quantize_apply(
        quant_aware_annotate_model, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    pqat_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    pqat_model.fit(train_images, train_labels, batch_size=500, epochs=1, validation_split=0.1, verbose=0)

    converter = tf.lite.TFLiteConverter.from_keras_model(pqat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    pqat_tflite_model = converter.convert()
    # --- end of the guide's code ---

    report = tflite_export.inspect(pqat_tflite_model)
    assert report.op_counts.get("CONV_2D") == 1 and report.op_counts.get("FULLY_CONNECTED") == 1
    kernels = _int8_kernels(pqat_tflite_model, pqat_model)
    assert len(kernels) == 2
    for name, (kernel, int8) in kernels.items():
        pruned = kernel == 0
        assert pruned.mean() == pytest.approx(0.5, abs=0.01), name  # PQAT kept the 50% zeros
        assert np.all(int8[pruned] == 0), name  # ... and the file keeps every one
        assert np.count_nonzero(int8[~pruned]) > 0.9 * np.count_nonzero(~pruned)


@pytest.fixture(scope="module")
def pqat_cnn(mnist):
    """A CNN pruned to 80% (Block(16, 1) on the Dense layers), then PQAT."""
    (x, y), _ = mnist
    x, y = x[:2000], y[:2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, use_bias=False, name="conv1"), L.BatchNormalization(name="bn1"), L.ReLU(name="relu1"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(16, 3, activation="relu", name="conv2"), L.MaxPooling2D(name="pool2"),
        L.Flatten(name="flatten"), L.Dense(64, activation="relu", name="fc1"), L.Dense(10, name="logits"),
    ])
    model.compile("adam", LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    pruned = kprune.prune_low_magnitude(
        model, kprune.ConstantSparsity(0.8, 0), granularity=kprune.Block((16, 1)),
        ignore=["conv1", "conv2", "logits"])
    pruned.compile("adam", LOSS, metrics=["accuracy"])
    pruned.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[kprune.PruningCallback()])
    qat = quantization.quantize_model(kprune.strip_pruning(pruned))
    qat.compile(keras.optimizers.Adam(3e-4), LOSS, metrics=["accuracy"])
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return qat


def test_int8_file_agrees_with_the_fake_quantized_model_on_1000_digits(pqat_cnn, mnist):
    import tflite_export  # noqa: PLC0415
    from tflite_export import qat as qat_export  # noqa: PLC0415

    _, (x_test, y_test) = mnist
    assert len(x_test) == 1000
    tflite = tflite_export.convert(pqat_cnn, quantize="int8")
    scale, _ = qat_export.output_quantization(tflite)
    got = qat_export.predict(tflite, x_test)
    want = keras.ops.convert_to_numpy(pqat_cnn(x_test, training=False))
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    diff = float(np.max(np.abs(got - want)))
    assert agreement >= 0.99, agreement
    # One output step at most (plus float32 rounding of the outputs themselves).
    rounding = 4 * float(np.finfo(np.float32).eps) * max(1.0, float(np.max(np.abs(want))))
    assert diff <= scale + rounding, (diff, scale)
    assert float(np.mean(got.argmax(1) == y_test)) > 0.7  # a trained model (short training)

    report = tflite_export.inspect(tflite)
    assert len(report.sparse_kernel_ops) == 1  # fc1: 1x16 block-sparse int8, TFLite's sparse kernel
    for name, (kernel, int8) in _int8_kernels(tflite, pqat_cnn).items():
        assert np.all(int8[kernel == 0] == 0), name


def test_export_messages(pqat_cnn, mnist):
    import tflite_export  # noqa: PLC0415
    from tflite_export import qat as qat_export  # noqa: PLC0415

    (x, _), _ = mnist
    with pytest.raises(ValueError, match="quantization-aware.*quantize='int8'"):
        tflite_export.convert(pqat_cnn, quantize=None)
    # What convert() checks first (tested here without running the converter again).
    with pytest.warns(UserWarning, match="representative_data is ignored"):
        assert qat_export.check_model(pqat_cnn, "int8", x[:10])

    keras_int8 = keras.Sequential([keras.Input((16,)), L.Dense(8, name="dense_q")])
    keras_int8.quantize("int8")
    with pytest.raises(ValueError, match="'dense_q'.*model.quantize\\('int8'\\).*kprune.quantization"):
        tflite_export.convert(keras_int8, quantize="int8", representative_data=np.zeros((4, 16), "float32"))

    inp = keras.Input((6, 4))
    out = quantization.quantize_annotate_layer(L.Dense(3, name="head"))(L.GRU(5, name="gru")(inp))
    qat = quantization.quantize_apply(keras.Model(inp, out))
    with pytest.warns(UserWarning, match="'gru' \\(GRU\\) is not quantization-aware"):
        assert qat_export.check_model(qat, "int8")
