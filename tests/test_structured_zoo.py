"""Every keras.applications constructor prunes at 50%, verifies, saves and loads.

Small inputs (32x32; 75x75 / 71x71 where the model needs it) keep this fast;
`weights=None`, so nothing is downloaded.

Which backend runs which constructor in CI (every one runs on some backend
in every CI run; the handlers are backend-neutral):

* torch runs all of them except NASNet (Keras 3.15 refuses NASNet on torch):
  with no tracing, torch builds, prunes and verifies these models fastest;
* TensorFlow runs the two NASNets and, as a check of the same handlers on
  the export backend, EfficientNetB0 and MobileNetV3Small;
* JAX runs none here (it traces every layer of every model: the 10-model
  set took 9 of its 15 minutes); tests/test_structured_pruner.py prunes
  MobileNetV2 and ResNet50 on JAX.

`KPRUNE_ZOO=all` runs every constructor on any backend.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kprune.structured import ChannelPruner  # noqa: E402
from kprune.structured.verify import random_inputs  # noqa: E402

APPS = sorted(n for n in dir(keras.applications) if n[0].isupper())
SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
# (MobileNetV2 and ResNet50 are also pruned in test_structured_pruner.py.)
TENSORFLOW_SET = {"NASNetMobile", "NASNetLarge", "EfficientNetB0", "MobileNetV3Small"}
ALL = os.environ.get("KPRUNE_ZOO") == "all"


@pytest.mark.backends("tensorflow", "torch", reason="the zoo runs on torch (all but NASNet) and TensorFlow "
                                                    "(NASNet and two more); JAX traces every layer, see the module docstring")
@pytest.mark.parametrize("name", APPS)
def test_application_prunes_verifies_saves(name, tmp_path):
    backend = keras.backend.backend()
    if name.startswith("NASNet") and backend == "torch":
        pytest.skip("Keras 3.15 refuses NASNet on the torch backend (its own outstanding bug); "
                    "NASNetMobile and NASNetLarge run on TensorFlow")
    if backend == "tensorflow" and name not in TENSORFLOW_SET and not ALL:
        pytest.skip("runs on the torch backend in CI; KPRUNE_ZOO=all runs it here")
    size = SIZE.get(name, 32)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10)
    pruner = ChannelPruner(model, pruning_ratio=0.5)
    thin = pruner.prune()  # verify=True: raises unless thin == channel-zeroed original
    assert pruner.verified_difference <= 1e-4
    assert thin.count_params() < 0.75 * model.count_params(), pruner.report()
    path = str(tmp_path / "thin.keras")
    thin.save(path)
    x = random_inputs(model)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(thin(x)), rtol=0, atol=1e-5)
