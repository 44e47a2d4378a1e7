import keras
import pytest

import kprune
from kprune.core.schedules import get_schedule


def test_polynomial_decay_matches_tfmot_test_points():
    s = kprune.PolynomialDecay(0.2, 0.8, begin_step=100, end_step=110, power=3, frequency=2)
    for step, expected in [(100, 0.2), (102, 0.4928), (105, 0.725), (110, 0.8)]:
        assert s.sparsity(step) == pytest.approx(expected, abs=1e-9)
    for step in (100, 102, 110):
        assert s.should_prune(step)
    for step in (101, 105, 111):
        assert not s.should_prune(step)


def test_polynomial_decay_is_zhu_gupta_formula():
    s = kprune.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=50, power=3, frequency=1)
    for t in range(0, 70):
        progress = min(1.0, max(0.0, (t - 10) / 40))
        assert s.sparsity(t) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - progress) ** 3)


def test_initial_sparsity_is_applied_at_begin_step():
    # tfmot never evaluates step 0; here the update at begin_step applies it.
    s = kprune.PolynomialDecay(0.5, 0.9, begin_step=0, end_step=100)
    assert s.should_prune(0)
    assert s(0) == (True, 0.5)


def test_end_step_is_always_an_update_step():
    s = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=250, frequency=100)
    assert [t for t in range(0, 400) if s.should_prune(t)] == [0, 100, 200, 250]
    assert s.next_update(201) == 250
    assert s.next_update(251) is None


def test_constant_sparsity():
    s = kprune.ConstantSparsity(0.8, begin_step=5, frequency=10)
    assert s(5) == (True, 0.8)
    assert s(6) == (False, 0.8)
    assert not s.should_prune(4)
    assert s.should_prune(1_000_005)
    bounded = kprune.ConstantSparsity(0.8, begin_step=0, end_step=20, frequency=10)
    assert [t for t in range(40) if bounded.should_prune(t)] == [0, 10, 20]


@pytest.mark.parametrize(
    "schedule",
    [
        kprune.ConstantSparsity(0.7, begin_step=3, end_step=90, frequency=7),
        kprune.PolynomialDecay(0.1, 0.95, begin_step=2, end_step=1000, power=2, frequency=50),
    ],
)
def test_config_round_trip(schedule):
    clone = type(schedule).from_config(schedule.get_config())
    assert clone == schedule
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored == schedule
    assert get_schedule(keras.saving.serialize_keras_object(schedule)) == schedule


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="target_sparsity"):
        kprune.ConstantSparsity(bad)
    with pytest.raises(ValueError, match="final_sparsity"):
        kprune.PolynomialDecay(0.0, bad, 0, 10)
    with pytest.raises(ValueError, match="initial_sparsity"):
        kprune.PolynomialDecay(bad, 0.5, 0, 10)


def test_end_step_before_begin_step():
    with pytest.raises(ValueError, match="end_step"):
        kprune.ConstantSparsity(0.5, begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="end_step"):
        kprune.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="end_step > begin_step"):
        kprune.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10)


@pytest.mark.parametrize("freq", [0, -3])
def test_frequency_must_be_positive(freq):
    with pytest.raises(ValueError, match="frequency"):
        kprune.ConstantSparsity(0.5, frequency=freq)
    with pytest.raises(ValueError, match="frequency"):
        kprune.PolynomialDecay(0.0, 0.5, 0, 10, frequency=freq)


def test_wrong_types():
    with pytest.raises(TypeError, match="target_sparsity"):
        kprune.ConstantSparsity("0.5")
    with pytest.raises(TypeError, match="begin_step"):
        kprune.ConstantSparsity(0.5, begin_step=1.5)
    with pytest.raises(TypeError, match="pruning_schedule"):
        get_schedule(0.5)
