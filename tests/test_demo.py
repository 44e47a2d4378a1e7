"""kprune.cli.demo's training recipe: schedule and learning rate of each phase."""

import dataclasses

import keras
import pytest

from kprune.cli import demo


def test_demo_recipe_ramps_over_the_first_third_then_recovers():
    recipe = demo.DEMO_RECIPE
    total, end, frequency = recipe.steps(63)
    assert total == 63 * recipe.prune_epochs
    schedule = recipe.schedule(0.9, 63)
    assert schedule.end_step == end == round(total / 3)
    assert frequency == end // 20
    assert schedule.sparsity(0) == 0.0
    assert schedule.sparsity(end) == pytest.approx(0.9)
    assert schedule.next_update(end + 1) is None  # recovery: masks stay put
    assert total - end >= 2 * end  # twice as long recovering as ramping


def test_constant_learning_rate_is_a_float():
    optimizer = demo.DEMO_RECIPE.optimizer(63)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(1e-3)


def test_cosine_decay_ends_at_the_final_fraction_at_the_last_step():
    recipe = dataclasses.replace(demo.DEMO_RECIPE, decay="cosine", final_lr_fraction=0.1)
    lr = recipe.learning_rate_schedule(10)
    total, _, _ = recipe.steps(10)
    assert float(lr(0)) == pytest.approx(1e-3)
    assert float(lr(total)) == pytest.approx(1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("decay", "linear", "decay must be None or 'cosine', got 'linear'"),
    ("prune_epochs", 0, "prune_epochs must be an integer >= 1, got 0"),
    ("ramp_fraction", 1.5, r"ramp_fraction must be in \(0, 1\], got 1.5"),
    ("learning_rate", 0.0, "learning_rate must be > 0, got 0.0"),
    ("final_lr_fraction", -0.1, r"final_lr_fraction must be in \[0, 1\], got -0.1"),
])
def test_bad_recipe_field_names_the_parameter(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(demo.DEMO_RECIPE, **{field: value})
