"""JAX: pruning during `fit` under `keras.distribution.DataParallel`.

The JAX counterpart of test_distributed.py's tf.distribute tests. Two CPU
devices need `XLA_FLAGS=--xla_force_host_platform_device_count=2` before JAX
starts, so the run happens in a child process; it trains the same pruned
model on the same batches with and without the distribution and compares.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, keras, numpy as np
    import kprune
    from kprune.core.model_tree import find_wrappers

    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 12)).astype("float32")
    y = rng.integers(0, 4, size=(128,)).astype("int32")
    init = [rng.normal(0, 0.4, s).astype("float32") for s in [(12, 32), (32,), (32, 4), (4,)]]

    def run(distribution):
        keras.distribution.set_distribution(distribution)
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(4)])
        model.set_weights(init)
        pruned = kprune.prune_low_magnitude(
            model, kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12, frequency=3))
        pruned.compile(keras.optimizers.SGD(0.1),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                   callbacks=[kprune.PruningCallback()])
        wrappers = find_wrappers(pruned)
        masks = [np.asarray(keras.ops.convert_to_numpy(m)) for w in wrappers for m in w.masks]
        kernels = [np.asarray(keras.ops.convert_to_numpy(w.prunable_weights[0])) for w in wrappers]
        zeros_ok = all(bool(np.all(k[m == 0] == 0)) for k, m in zip(kernels, masks))
        devices = len(wrappers[0].prunable_weights[0].value.sharding.device_set)
        keras.distribution.set_distribution(None)
        return masks, [np.asarray(w) for w in pruned.get_weights()], [w.step for w in wrappers], zeros_ok, devices

    m1, w1, s1, z1, d1 = run(None)
    m2, w2, s2, z2, d2 = run(keras.distribution.DataParallel(devices=jax.devices()))
    print(json.dumps({
        "masks_equal": all(bool(np.array_equal(a, b)) for a, b in zip(m1, m2)),
        "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
        "steps": [s1, s2],
        "exact_zeros": [z1, z2],
        "devices": [d1, d2],
        "sparsity": [float(1 - m.mean()) for m in m2],
    }))
    """
)


@pytest.mark.backends("jax", reason="keras.distribution.DataParallel over 2 CPU devices is JAX's; "
                                     "TensorFlow's tf.distribute is tested in test_distributed.py")
def test_data_parallel_masks_equal_one_device():
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps"] == [[16, 16], [16, 16]]
    assert result["exact_zeros"] == [True, True]
    assert result["devices"] == [1, 2]  # the second run's weights live on both devices
    assert result["masks_equal"], result
    assert result["max_weight_diff"] < 1e-5, result
    assert all(abs(s - 0.8) < 0.01 for s in result["sparsity"]), result
