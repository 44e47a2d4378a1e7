"""A model pruned halfway on one Keras backend loads and resumes on another.

`.keras` files are backend-neutral. The fixtures in tests/data/cross_backend
(written by its make.py on TensorFlow, JAX and torch) hold a model after 4
of 8 training batches of a schedule, and what the origin backend got for the
remaining 4. Each is loaded here, on whatever backend runs the suite, and
trained the same 4 batches.
"""

import os

import keras
import numpy as np
import pytest

import kprune
from kprune.core.model_tree import find_wrappers
from kprune.core.wrapping import strip_pruning

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "cross_backend")
ORIGINS = ("tensorflow", "jax", "torch")


def _arrays(npz, prefix):
    return [npz[k] for k in sorted((k for k in npz.files if k.startswith(prefix + "_")),
                                   key=lambda k: int(k.rsplit("_", 1)[1]))]


def _masks(model):
    return [keras.ops.convert_to_numpy(m) for w in find_wrappers(model) for m in w.masks]


@pytest.mark.parametrize("origin", ORIGINS)
def test_load_and_resume_a_model_pruned_on_another_backend(origin):
    npz = np.load(os.path.join(HERE, f"{origin}.npz"))
    path = os.path.join(HERE, f"{origin}.keras")
    if origin == "torch" and keras.backend.backend() != "torch":
        # Keras 3.15 saves a torch-compiled optimizer as its torch class
        # (keras.src.backend.torch.optimizers.torch_sgd), which loads only
        # where torch is installed: load without it and compile again. The
        # schedule still resumes at the right step, from the step the
        # wrappers stored.
        model = keras.saving.load_model(path, compile=False)
        model.compile(keras.optimizers.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    else:
        model = keras.saving.load_model(path)
    wrappers = find_wrappers(model)
    assert [w.step for w in wrappers] == [4, 4]  # 4 batches trained before the save
    for got, want in zip(_masks(model), _arrays(npz, "saved_mask")):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(model.get_weights(), _arrays(npz, "saved_weight")):
        np.testing.assert_array_equal(got, want)  # exact: the file holds these values

    model.fit(npz["x"], npz["y"], batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[kprune.PruningCallback()])
    assert [w.step for w in wrappers] == [8, 8]
    end_masks = _masks(model)
    for got, want in zip(end_masks, _arrays(npz, "end_mask")):
        np.testing.assert_array_equal(got, want)  # the same masks as the origin's own run
    for got, want in zip(model.get_weights(), _arrays(npz, "end_weight")):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # Exact zeros where pruned, and a plain model after stripping.
    kernels = [keras.ops.convert_to_numpy(w.prunable_weights[0]) for w in wrappers]
    for kernel, mask in zip(kernels, end_masks):
        assert np.all(kernel[mask == 0] == 0.0)
    plain = strip_pruning(model)
    assert not find_wrappers(plain)
    x = npz["x"][:4]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=0, atol=1e-6)
