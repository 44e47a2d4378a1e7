"""Every keras.applications constructor prunes at 50%, verifies, saves and loads.

Small inputs (32x32; 75x75 / 71x71 where the model needs it) keep this fast;
`weights=None`, so nothing is downloaded.
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


@pytest.mark.parametrize("name", APPS)
def test_application_prunes_verifies_saves(name, tmp_path):
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
    np.testing.assert_allclose(loaded(x), thin(x), rtol=0, atol=1e-5)
