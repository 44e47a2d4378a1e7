"""tfmot's published pruning guides, as scripts that run on either side.

Each script is the code of a tfmot guide section (the comprehensive guide,
"Pruning in Keras", "Pruning for on-device inference with XNNPACK", "2:4
sparsity"), kept as the guide writes it. It runs with the names of the
guide's import lines bound by the runner:

* in the Keras 3 test process: `tfmot = kprune.tfmot`, `keras = keras`;
* in the tf_keras subprocess of tests/test_tfmot_parity.py: `tfmot =
  tensorflow_model_optimization`, `keras = tf_keras`.

What the runner provides instead of the guides' data and file set-up (the
guides download MNIST/CIFAR-10, and save weights in TF's `.tf` checkpoint
format, which Keras 3 no longer writes): `x_train`, `y_train`, `N` (the
number of training steps), `pretrained_weights` (a weights file in the
side's own format, for `base_model.load_weights(...)`), and
`train(model, callbacks)`, a `fit` of one epoch of `N` batches of one sample
(four executions of `N / 4` steps) at learning rate 0 (so every mask update sees the same weights on both sides
and masks depend only on the weights and the schedule). Each script leaves
the pruned model in `model_for_pruning`.

Lines changed from the guides (all for Keras 3 itself, none for kprune) are
marked `# Keras 3:`.
"""

import textwrap

COMMON = textwrap.dedent(
    """
    input_shape = [20]

    def setup_model():
      model = keras.Sequential([
          keras.layers.Dense(20, input_shape=input_shape),
          keras.layers.Flatten()
      ])
      return model
    """
)

SCRIPTS = {
    # comprehensive guide: "Prune whole model", then fit with the callbacks.
    "whole_model": """
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended.

model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])
""",
    # comprehensive guide: "Prune some layers" with clone_model.
    "clone_dense": """
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy

# Helper function uses `prune_low_magnitude` to make only the
# Dense layers train with pruning.
def apply_pruning_to_dense(layer):
  if isinstance(layer, keras.layers.Dense):
    return tfmot.sparsity.keras.prune_low_magnitude(layer)
  return layer

model_for_pruning = keras.models.clone_model(
    base_model,
    clone_function=apply_pruning_to_dense,
)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])
""",
    # comprehensive guide: a custom layer with PrunableLayer (bias pruned too).
    "custom_layer": """
class MyDenseLayer(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):

  def get_prunable_weights(self):
    # Prune bias also, though that usually harms model accuracy too much.
    return [self.kernel, self.bias]

model_for_pruning = keras.Sequential([
  tfmot.sparsity.keras.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
  keras.layers.Flatten()
])
model_for_pruning.layers[0].layer.set_weights(pretrained_list)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])
""",
    # "Pruning in Keras": PolynomialDecay, UpdatePruningStep + PruningSummaries.
    "polynomial_summaries": """
end_step = np.ceil(N / 1).astype(np.int32) * 1
pruning_params = {
      'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50,
                                                               final_sparsity=0.80,
                                                               begin_step=0,
                                                               end_step=end_step)
}
base_model = setup_model()
base_model.load_weights(pretrained_weights)
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model, **pruning_params)

logdir = log_dir
callbacks = [
  tfmot.sparsity.keras.UpdatePruningStep(),
  tfmot.sparsity.keras.PruningSummaries(log_dir=logdir),
]
train(model_for_pruning, callbacks)
""",
    # comprehensive guide: the custom training loop driven by hand.
    "custom_loop": """
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

# Boilerplate
loss = keras.losses.categorical_crossentropy
optimizer = keras.optimizers.SGD(0.0)  # the guide: Adam(); 0 keeps weights equal on both sides
unused_arg = -1
epochs = N
batches = 1 # example is hardcoded so that the number of batches cannot change.

# Non-boilerplate.
model_for_pruning.optimizer = optimizer
step_callback = tfmot.sparsity.keras.UpdatePruningStep()
step_callback.set_model(model_for_pruning)
log_callback = tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir) # Log sparsity and other metrics in Tensorboard.
log_callback.set_model(model_for_pruning)

step_callback.on_train_begin() # run pruning callback
for _ in range(epochs):
  log_callback.on_epoch_begin(epoch=unused_arg) # run pruning callback
  for _ in range(batches):
    step_callback.on_train_batch_begin(batch=unused_arg) # run pruning callback

    with tf.GradientTape() as tape:
      logits = model_for_pruning(x_train, training=True)
      loss_value = loss(y_train, logits)
      grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
      optimizer.apply_gradients(zip(grads, model_for_pruning.trainable_variables))

  step_callback.on_epoch_end(batch=unused_arg) # run pruning callback
""",
    # comprehensive guide: block sparsity.
    "block_1x16": """
base_model = setup_model()
base_model.load_weights(pretrained_weights)

# For using intrinsics on a CPU with 128-bit registers, together with 8-bit
# quantized weights, a 1x16 block size is nice because the block perfectly
# fits into the register.
pruning_params = {'block_size': [1, 16]}
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model, **pruning_params)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])
""",
    # XNNPACK guide: the fixed (accepted) model with PruneForLatencyOnXNNPack.
    "xnnpack": """
fixed_dense_model = keras.Sequential([
    keras.layers.InputLayer(input_shape=(32, 32, 3)),
    keras.layers.ZeroPadding2D(padding=1),
    keras.layers.Conv2D(
        filters=8,
        kernel_size=(3, 3),
        strides=(2, 2),
        padding='valid'),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.DepthwiseConv2D(kernel_size=(3, 3), padding='same'),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.Conv2D(filters=16, kernel_size=(1, 1)),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.ZeroPadding2D(padding=1),
    keras.layers.DepthwiseConv2D(
        kernel_size=(3, 3), strides=(2, 2), padding='valid'),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.Conv2D(filters=32, kernel_size=(1, 1)),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.GlobalAveragePooling2D(keepdims=True),
    keras.layers.Flatten(),
    keras.layers.Dense(10)
])
fixed_dense_model.set_weights(xnnpack_weights)

end_step = N
pruning_params = {
      'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.25,
                                                               final_sparsity=0.75,
                                                               begin_step=0,
                                                               end_step=end_step),
      'pruning_policy': tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
}
prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
model_for_pruning = prune_low_magnitude(fixed_dense_model, **pruning_params)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()], images=True)
""",
    # 2:4 guide: sparsity_m_by_n on layers of a Sequential.
    "m_by_n": """
prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
pruning_params_2_by_4 = {
    'sparsity_m_by_n': (2, 4),
}
pruning_params_sparsity_0_5 = {
    'pruning_schedule': tfmot.sparsity.keras.ConstantSparsity(target_sparsity=0.5,
                                                              begin_step=0,
                                                              frequency=100)
}
model_for_pruning = keras.Sequential([
    prune_low_magnitude(
        keras.layers.Dense(
            16, activation='relu',
            input_shape=input_shape,
            name="pruning_sparsity_0_5"),
        **pruning_params_sparsity_0_5),
    prune_low_magnitude(
        keras.layers.Dense(
            8, activation='relu',
            name="structural_pruning_dense"),
        **pruning_params_2_by_4),
    keras.layers.Dense(20)
])
set_kernels(model_for_pruning)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])
""",
}

# Guide sections with no masks to compare (run by tests/test_tfmot_compat.py).
EXTRA_SCRIPTS = {
    # comprehensive guide: checkpoint and deserialize in prune_scope (.h5).
    "checkpoint": """
import tempfile
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

_, keras_model_file = tempfile.mkstemp('.h5')

# Checkpoint: saving the optimizer is necessary (include_optimizer=True is the default).
model_for_pruning.save(keras_model_file, include_optimizer=True)

# Deserialize model.
with tfmot.sparsity.keras.prune_scope():
  loaded_model = keras.models.load_model(keras_model_file)
""",
    # comprehensive guide: strip_pruning and the gzipped size.
    "strip_gzip": """
import tempfile

def get_gzipped_model_size(model):
  # Returns size of gzipped model, in bytes.
  import os
  import zipfile

  _, keras_file = tempfile.mkstemp('.h5')
  model.save(keras_file, include_optimizer=False)

  _, zipped_file = tempfile.mkstemp('.zip')
  with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
    f.write(keras_file)

  return os.path.getsize(zipped_file)

base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)
train(model_for_pruning, [tfmot.sparsity.keras.UpdatePruningStep()])

model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)

print("final model")
model_for_export.summary()

print("\\n")
size_unstripped = get_gzipped_model_size(model_for_pruning)
size_stripped = get_gzipped_model_size(model_for_export)
print("Size of gzipped pruned model without stripping: %.2f bytes" % (size_unstripped))
print("Size of gzipped pruned model with stripping: %.2f bytes" % (size_stripped))
""",
}

# The XNNPACK guide's first model: GlobalAveragePooling2D without keepdims
# (accepted by tfmot 0.8.1, whose check does not look at keepdims at the end),
# and a stem that does not fit (padding='same', no ZeroPadding2D): rejected.
XNNPACK_MISFIT = """
dense_model = keras.Sequential([
    keras.layers.InputLayer(input_shape=(32, 32, 3)),
    keras.layers.Conv2D(filters=8, kernel_size=(3, 3), strides=(2, 2), padding='same'),
    keras.layers.ReLU(),
    keras.layers.Conv2D(filters=16, kernel_size=(1, 1)),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(10)
])
prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
pruning_params = {'pruning_policy': tfmot.sparsity.keras.PruneForLatencyOnXNNPack()}
try:
  model_for_pruning = prune_low_magnitude(dense_model, **pruning_params)
  error = None
except ValueError as e:
  error = str(e)
"""


def make_data(n_steps, xnnpack_shapes, m_by_n_shapes, seed=0):
    """The runner's inputs, as numpy arrays (the same on both sides)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "N": n_steps,
        "x": rng.standard_normal((n_steps, 20)).astype("float32"),
        "y": rng.standard_normal((n_steps, 20)).astype("float32"),
        "xi": rng.random((n_steps, 32, 32, 3)).astype("float32"),
        "yi": rng.standard_normal((n_steps, 10)).astype("float32"),
        # setup_model(): Dense(20) on 20 inputs.
        "W": [rng.standard_normal((20, 20)).astype("float32"),
              rng.standard_normal((20,)).astype("float32")],
        "XW": [rng.standard_normal(s).astype("float32") if len(s) > 1
               else (1.0 + 0.1 * rng.standard_normal(s)).astype("float32")
               for s in xnnpack_shapes],
        "K": [rng.standard_normal(s).astype("float32") for s in m_by_n_shapes],
    }


def run_script(name, tfmot, keras, tf, np, data, side, workdir):
    """Runs SCRIPTS[name] with the guide's names bound; returns its namespace.

    `side` gives what differs between Keras 3 and tf_keras:
    `weights_suffix` (".weights.h5" / ".h5") and `set_kernels(model, kernels)`
    (sets the kernels of the pruned layers, in model order).
    """
    import os

    ns = {"tfmot": tfmot, "keras": keras, "tf": tf, "np": np, "N": data["N"],
          "x_train": data["x"], "y_train": data["y"],
          "log_dir": os.path.join(workdir, name + "_logs")}
    exec(COMMON, ns)
    base = ns["setup_model"]()
    base.set_weights(data["W"])
    path = os.path.join(workdir, name + side.weights_suffix)
    base.save_weights(path)
    ns["pretrained_weights"] = path
    ns["pretrained_list"] = data["W"]
    ns["xnnpack_weights"] = data["XW"]
    ns["set_kernels"] = lambda model: side.set_kernels(model, data["K"])

    def train(model, callbacks, images=False):
        x, y = (data["xi"], data["yi"]) if images else (data["x"], data["y"])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse",
                      steps_per_execution=max(1, len(x) // 4))
        model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)

    ns["train"] = train
    scripts = {**SCRIPTS, **EXTRA_SCRIPTS, "xnnpack_misfit": XNNPACK_MISFIT}
    exec(scripts[name], ns)
    return ns
