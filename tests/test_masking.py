"""Tests of the mask engine (kprune/masking.py) and of granularity/scope end to end.

* Property tests (hypothesis) of every granularity's invariants over random
  shapes and sparsities, of the exact kept counts and of the tie rule.
* Global scope: the exact budget, `min_keep`, LAMP.
* The same invariants after every batch of `model.fit` with a schedule.
* Bad input: a clear error, and the caller's model is left unchanged.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

import kprune  # noqa: E402
from kprune.core import masking, selection  # noqa: E402
from kprune.core.masking import NM, Block, Channel, Layout, Unstructured  # noqa: E402
from kprune.core.model_tree import find_wrappers  # noqa: E402

PROPS = settings(max_examples=100, deadline=None)
CONV = Layout(in_axis=-2, out_axis=-1)
sparsities = st.floats(0.0, 0.99, allow_nan=False)


def reference_top_k(scores, k):
    """The documented rule: numpy.argsort(-scores, kind='stable')[:k]."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    flat = np.where(np.isnan(flat), -np.inf, flat)
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[: max(int(k), 0)]] = True
    return keep.reshape(np.shape(scores))


@st.composite
def score_arrays(draw, min_rank=1, max_rank=4, min_side=1, max_side=9, ties=None):
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(min_side, max_side), min_size=rank, max_size=rank)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    with_ties = draw(st.booleans()) if ties is None else ties
    if with_ties:  # few distinct values: many ties
        scores = rng.integers(0, 4, size=shape).astype(np.float32)
    else:
        scores = rng.random(shape).astype(np.float32)
    return scores


# --------------------------------------------------------------------------
# Layer scope: invariants of each granularity
# --------------------------------------------------------------------------


@PROPS
@given(score_arrays(), sparsities)
def test_unstructured_exact_count_and_tie_rule(scores, s):
    mask = masking.compute_mask(scores, s, Unstructured())
    k = masking.kept_count(scores.size, s)
    assert mask.shape == scores.shape and mask.dtype == bool
    assert int(mask.sum()) == k == round(scores.size * (1 - s))
    np.testing.assert_array_equal(mask, reference_top_k(scores, k))


@PROPS
@given(score_arrays(), st.integers(-2, 800))
def test_select_top_k_matches_stable_argsort(scores, k):
    scores = scores.copy()
    if scores.size > 2:
        scores.reshape(-1)[1] = np.nan  # NaN ranks lowest
    np.testing.assert_array_equal(masking.select_top_k(scores, k), reference_top_k(scores, k))


def test_select_top_k_heavy_tie_at_minimum():
    # The fast path (select among values above the minimum) and the tie rule.
    rng = np.random.default_rng(0)
    x = rng.random(10_000).astype(np.float32)
    x[rng.random(x.size) < 0.8] = 0.0
    for k in (1, 2, 50, int(np.count_nonzero(x)), int(np.count_nonzero(x)) + 7, 9_999):
        np.testing.assert_array_equal(masking.select_top_k(x, k), reference_top_k(x, k))


@st.composite
def block_case(draw):
    scores = draw(score_arrays(min_rank=2, max_rank=4))
    rows, cols = int(np.prod(scores.shape[:-1])), scores.shape[-1]
    r = draw(st.integers(1, min(rows, 6)))
    c = draw(st.integers(1, min(cols, 4)))
    pool = draw(st.sampled_from(["mean", "max"]))
    return scores, Block((r, c), pool)


@PROPS
@given(block_case(), sparsities)
def test_block_all_or_nothing_and_group_count(case, s):
    scores, gran = case
    mask = masking.compute_mask(scores, s, gran)
    rows, cols = int(np.prod(scores.shape[:-1])), scores.shape[-1]
    r, c = gran.block_shape
    view = mask.reshape(rows, cols)
    kept_blocks = n_blocks = 0
    for i in range(0, rows, r):
        for j in range(0, cols, c):
            block = view[i:i + r, j:j + c]
            assert block.all() or not block.any(), "a block is partly pruned"
            kept_blocks += bool(block.all())
            n_blocks += 1
    assert kept_blocks == masking.kept_count(n_blocks, s)
    # Kept blocks are the best by pooled score, ties by block index.
    pooled, _ = gran.group_scores(scores)
    expected = reference_top_k(pooled, masking.kept_count(n_blocks, s))
    np.testing.assert_array_equal(gran.expand(expected, scores.shape), mask)


@st.composite
def nm_case(draw):
    m = draw(st.integers(2, 8))
    n = draw(st.integers(1, m - 1))
    rank = draw(st.sampled_from([2, 4]))
    length = draw(st.integers(m, 3 * m + 3))  # tail groups included
    if rank == 2:
        shape, layout = (length, draw(st.integers(1, 5))), Layout(0, -1)
    else:
        k = draw(st.integers(1, 3))
        shape, layout = (k, k, length, draw(st.integers(1, 4))), CONV
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        scores = rng.integers(0, 3, size=shape).astype(np.float32)
    else:
        scores = rng.random(shape).astype(np.float32)
    return scores, NM(n, m), layout


@PROPS
@given(nm_case(), sparsities)
def test_nm_groups_follow_the_schedule_rule(case, s):
    scores, gran, layout = case
    mask = masking.compute_mask(scores, s, gran, layout)
    z = min(gran.n, int(np.round(s * gran.m)))
    assert z == gran.zeros_per_group(s)
    moved_mask = np.moveaxis(mask, layout.in_axis, -1)
    moved_scores = np.moveaxis(scores, layout.in_axis, -1)
    length = moved_mask.shape[-1]
    full = (length // gran.m) * gran.m
    groups = moved_mask[..., :full].reshape(-1, gran.m)
    group_scores = moved_scores[..., :full].reshape(-1, gran.m)
    # Every full group has exactly z zeros: at least n once s reaches n/m.
    np.testing.assert_array_equal((~groups).sum(axis=1), z)
    if s >= gran.n / gran.m:
        assert ((~groups).sum(axis=1) >= gran.n).all()
    # Within a group, the lowest scores go first, ties keep the earlier index.
    for g, sc in zip(groups, group_scores):
        np.testing.assert_array_equal(g, reference_top_k(sc, gran.m - z))
    tail = length - full
    if tail:
        zt = min(tail, int(np.round(z * tail / gran.m)))
        tails = moved_mask[..., full:].reshape(-1, tail)
        np.testing.assert_array_equal((~tails).sum(axis=1), zt)


def test_nm_tail_group_example():
    # in = 6 = one group of 4 + a tail of 2; NM(2, 4) at 50%: 2 zeros in the
    # group, round(2 * 2 / 4) = 1 zero in the tail.
    scores = np.array([[4.0], [1.0], [3.0], [2.0], [0.5], [5.0]])
    mask = masking.compute_mask(scores, 0.5, NM(2, 4))
    np.testing.assert_array_equal(mask[:, 0], [True, False, True, False, False, True])


@st.composite
def channel_case(draw):
    rank = draw(st.sampled_from([2, 3, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    out_axis = draw(st.sampled_from([-1, -2]))
    seed = draw(st.integers(0, 2**32 - 1))
    scores = np.random.default_rng(seed).random(shape).astype(np.float32)
    return scores, Channel(draw(st.sampled_from(["l1", "l2"]))), Layout(None, out_axis)


@PROPS
@given(channel_case(), sparsities)
def test_channel_whole_channels(case, s):
    scores, gran, layout = case
    mask = masking.compute_mask(scores, s, gran, layout)
    moved = np.moveaxis(mask, layout.out_axis, -1).reshape(-1, scores.shape[layout.out_axis])
    per_channel = moved.all(axis=0)
    assert (moved.all(axis=0) | ~moved.any(axis=0)).all(), "a channel is partly pruned"
    n_channels = scores.shape[layout.out_axis]
    assert int(per_channel.sum()) == masking.kept_count(n_channels, s)
    pooled, _ = gran.group_scores(scores, layout)
    np.testing.assert_array_equal(per_channel, reference_top_k(pooled, masking.kept_count(n_channels, s)))


# --------------------------------------------------------------------------
# Global scope
# --------------------------------------------------------------------------


@st.composite
def tensor_dicts(draw, positive=False):
    n = draw(st.integers(1, 5))
    out = {}
    for i in range(n):
        shape = tuple(draw(st.lists(st.integers(1, 12), min_size=2, max_size=2)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from([1e-3, 1.0, 100.0]))
        values = rng.random(shape) * scale
        if positive:
            values = values + 1e-6
        elif draw(st.booleans()):
            values = np.round(values * 3) / 3  # ties
        out[f"t{i}"] = values.astype(np.float32)
    return out


@PROPS
@given(tensor_dicts(), sparsities, st.integers(0, 3))
def test_global_exact_budget_and_min_keep(scores, s, min_keep):
    masks = masking.compute_masks(scores, s, scope="global", min_keep=min_keep)
    total = sum(v.size for v in scores.values())
    budget = masking.kept_count(total, s)
    reserved = sum(min(min_keep, v.size) for v in scores.values())
    kept = sum(int(m.sum()) for m in masks.values())
    for k, m in masks.items():
        assert m.shape == scores[k].shape
        assert int(m.sum()) >= min(min_keep, m.size)
    if budget >= reserved:
        assert kept == budget
    else:
        assert kept == reserved
    if min_keep == 0:  # one threshold, the tie rule over the concatenation
        flat = np.concatenate([v.reshape(-1) for v in scores.values()])
        got = np.concatenate([m.reshape(-1) for m in masks.values()])
        np.testing.assert_array_equal(got, reference_top_k(flat, budget))


@PROPS
@given(tensor_dicts(positive=True), st.floats(0.0, 0.999))
def test_lamp_never_empties_a_tensor(scores, s):
    total = sum(v.size for v in scores.values())
    if masking.kept_count(total, s) < len(scores):
        return  # fewer kept weights than tensors: impossible by definition
    masks = masking.compute_masks(scores, s, scope="global", normalize="lamp", min_keep=0)
    assert all(m.any() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == masking.kept_count(total, s)


def test_global_without_guard_can_collapse_a_layer_and_min_keep_prevents_it():
    scores = {"big": np.full((10, 10), 5.0), "small": np.full((4, 4), 0.01)}
    collapsed = masking.compute_masks(scores, 0.5, scope="global", min_keep=0)
    assert not collapsed["small"].any()
    guarded = masking.compute_masks(scores, 0.5, scope="global", min_keep=3)
    assert int(guarded["small"].sum()) == 3
    assert sum(int(m.sum()) for m in guarded.values()) == masking.kept_count(116, 0.5)


@PROPS
@given(tensor_dicts(), sparsities, st.sampled_from([Block((2, 2)), Block((3, 1), "max"), Channel("l1")]))
def test_global_structured_budget_within_half_a_group(scores, s, gran):
    masks = masking.compute_masks(scores, s, granularity=gran, scope="global", min_keep=1)
    total = sum(v.size for v in scores.values())
    budget = masking.kept_count(total, s)
    max_group = 0
    reserved = 0
    for k, v in scores.items():
        _, sizes = gran.group_scores(v)
        max_group = max(max_group, int(sizes.max()))
        reserved += int(sizes[np.argmax(gran.group_scores(v)[0])])
        m = masks[k]
        assert m.any()
        np.testing.assert_array_equal(gran.expand(gran.group_scores(m.astype(float))[0] > 0, v.shape), m)
    kept = sum(int(m.sum()) for m in masks.values())
    if budget >= reserved:
        assert abs(kept - budget) <= max_group / 2


def test_global_budget_and_per_key_layer_sparsity():
    rng = np.random.default_rng(0)
    scores = {"a": rng.random((8, 8)), "b": rng.random((8, 8)), "c": rng.random((4, 4))}
    masks = masking.compute_masks({"a": scores["a"], "b": scores["b"]}, 0.75, scope="global")
    assert sum(int(m.sum()) for m in masks.values()) == 32
    # A dict with only per-key values is layer scope for those keys.
    layer = masking.compute_masks(scores, {"a": 0.5, "b": 0.25, "c": 0.0})
    assert [int(m.sum()) for m in layer.values()] == [32, 48, 16]


# --------------------------------------------------------------------------
# Through model.fit: invariants after every batch
# --------------------------------------------------------------------------


def small_model():
    return keras.Sequential([
        keras.Input((8, 8, 4)),
        keras.layers.Conv2D(8, 3, name="c1"),
        keras.layers.Conv2D(12, 3, name="c2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(20, name="d1"),
        keras.layers.Dense(10, name="d2"),
    ], name="small")


def check_pattern(gran, mask, layout, s):
    """The granularity's invariant for one mask at sparsity s (layer scope)."""
    if isinstance(gran, Block):
        pooled, _ = gran.group_scores(mask.astype(np.float32))
        assert np.isin(pooled, [0.0, 1.0]).all(), "a block is partly pruned"
    elif isinstance(gran, Channel):
        moved = np.moveaxis(mask, layout.out_axis, -1).reshape(-1, mask.shape[layout.out_axis])
        assert (moved.all(axis=0) | ~moved.any(axis=0)).all()
    elif isinstance(gran, NM):
        moved = np.moveaxis(mask, layout.in_axis, -1)
        full = (moved.shape[-1] // gran.m) * gran.m
        zeros = (~moved[..., :full].reshape(-1, gran.m)).sum(axis=1)
        np.testing.assert_array_equal(zeros, gran.zeros_per_group(s))


class InvariantChecker(keras.callbacks.Callback):
    """After every batch: pruned weights are exactly 0 and the masks obey the rules."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    @staticmethod
    def _sparsity(schedule, trained):
        # The masks a batch trained with: the last update at or before its
        # schedule step (the number of batches trained, counting it).
        updates = [u for u in range(trained + 1) if schedule.should_prune(u)]
        return schedule.sparsity(updates[-1]) if updates else 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1  # one fresh fit per checker: the batches trained so far
        wrappers = find_wrappers(self.model)
        kept = total = 0
        for w in wrappers:
            s = self._sparsity(w.pruning_schedule, self.batches)
            for var, mvar, layout in zip(w.prunable_weights, w.masks, w.layouts):
                value = keras.ops.convert_to_numpy(var)
                mask = keras.ops.convert_to_numpy(mvar)
                assert mvar.dtype == var.dtype
                assert np.isin(mask, [0, 1]).all()
                mask = mask.astype(bool)
                assert (value[~mask] == 0).all(), f"{w.name}: a pruned weight is not 0"
                check_pattern(w.granularity, mask, layout, s)
                if w.scope == "layer":
                    if isinstance(w.granularity, Unstructured):
                        assert int(mask.sum()) == masking.kept_count(mask.size, s)
                    elif not isinstance(w.granularity, NM):
                        pooled, _ = w.granularity.group_scores(mask.astype(np.float32), layout)
                        assert int((pooled > 0).sum()) == masking.kept_count(pooled.size, s)
                if w.scope == "global":
                    kept += int(mask.sum())
                    total += mask.size
        glob = [w for w in wrappers if w.scope == "global"]
        if glob and all(isinstance(w.granularity, Unstructured) for w in glob):
            s = self._sparsity(glob[0].pruning_schedule, self.batches)
            assert kept == masking.kept_count(total, s)


@pytest.mark.parametrize(
    "granularity,scope,ignore",
    [
        (None, "layer", None),
        (Block((4, 1)), "layer", None),
        (Block((2, 2), "max"), "layer", None),
        (NM(2, 4), "layer", None),
        (Channel("l1"), "layer", None),
        (None, "global", None),
        (Block((4, 1)), "global", None),
        (Channel("l2"), "global", None),
    ],
    ids=lambda v: repr(v),
)
def test_fit_keeps_invariants_after_every_batch(granularity, scope, ignore):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((96, 8, 8, 4)).astype("float32")
    y = rng.integers(0, 10, 96)
    final = 0.5 if isinstance(granularity, NM) else 0.8
    schedule = kprune.PolynomialDecay(0.0, final, begin_step=0, end_step=8, frequency=2)
    pruned = kprune.prune_low_magnitude(small_model(), schedule, granularity=granularity, scope=scope)
    pruned.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    checker = InvariantChecker()
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[kprune.PruningCallback(normalize="lamp" if scope == "global" else None), checker])
    assert checker.batches == 12
    wrappers = find_wrappers(pruned)
    assert all(w.step == 12 for w in wrappers)
    masks = [keras.ops.convert_to_numpy(m) for w in wrappers for m in w.masks]
    overall = 1 - sum(m.sum() for m in masks) / sum(m.size for m in masks)
    if granularity is None:
        assert overall == pytest.approx(final, abs=1e-3)
    elif isinstance(granularity, NM):
        assert overall == pytest.approx(0.5, abs=1e-9)
    else:
        assert overall == pytest.approx(final, abs=0.05)


def test_fit_with_overrides_ignore_and_lamp_min_keep():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.random((32, 8, 8, 4)).astype("float32")
    y = rng.integers(0, 10, 32)
    pruned = kprune.prune_low_magnitude(
        small_model(), kprune.ConstantSparsity(0.9, frequency=1), scope="global",
        sparsity={"c1": 0.25, "d2": None}, ignore=[],
    )
    names = {w.layer.name: w for w in find_wrappers(pruned)}
    assert set(names) == {"c1", "c2", "d1"}
    assert names["c1"].scope == "layer" and names["c2"].scope == "global"
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[kprune.PruningCallback(normalize="lamp", min_keep=5), InvariantChecker()])
    m = {n: keras.ops.convert_to_numpy(w.masks[0]) for n, w in names.items()}
    assert 1 - m["c1"].mean() == pytest.approx(0.25, abs=1 / m["c1"].size)
    glob = [m["c2"], m["d1"]]
    total = sum(a.size for a in glob)
    assert sum(int(a.sum()) for a in glob) == masking.kept_count(total, 0.9)
    assert all(a.sum() >= 5 for a in glob)


def test_nm_under_polynomial_schedule_steps_through_patterns():
    """NM follows the schedule: zeros per group go 0 -> 1 -> 2 for NM(2, 4)."""
    seen = set()

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            w = find_wrappers(self.model)[0]
            mask = keras.ops.convert_to_numpy(w.masks[0]).astype(bool)
            zeros = (~mask.reshape(-1, 4, mask.shape[-1]).transpose(0, 2, 1).reshape(-1, 4)).sum(1)
            assert len(set(zeros.tolist())) == 1  # the same pattern in every group
            seen.add(int(zeros[0]))

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="d")])
    pruned = kprune.prune_low_magnitude(
        model, kprune.PolynomialDecay(0.0, 0.5, 0, 10, power=1, frequency=1), granularity=NM(2, 4))
    pruned.compile("sgd", "mse")
    pruned.fit(np.ones((12, 16)), np.ones((12, 8)), batch_size=1, verbose=0,
               callbacks=[kprune.PruningCallback(), Record()])
    assert seen == {0, 1, 2}


# --------------------------------------------------------------------------
# Bad input: clear errors, the caller's model unchanged
# --------------------------------------------------------------------------


def snapshot(model):
    return (
        model.to_json(),
        [keras.ops.convert_to_numpy(v).copy() for v in model.weights],
        [l for l in model.layers],
        [getattr(l, "kernel", None) is not None and l.kernel.constraint for l in model.layers],
    )


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after[0] == before[0]
    for a, b in zip(after[1], before[1]):
        np.testing.assert_array_equal(a, b)
    assert all(a is b for a, b in zip(after[2], before[2]))
    assert after[3] == before[3]


def conv_on_rgb():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(2, 3, name="stem"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="head"),
    ], name="rgb")


@pytest.mark.parametrize(
    "build,kwargs,error,match",
    [
        (lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="tiny")]),
         {"granularity": Block((4, 1))}, ValueError, r"Block\(4, 1\) is larger than layer 'tiny'"),
        (conv_on_rgb, {"granularity": NM(2, 4)}, ValueError,
         r"NM\(2, 4\) needs at least m=4 weights along the input axis of layer 'stem'.*ignore=\['stem'\]"),
        (conv_on_rgb, {"scope": "global", "ignore": ["stem", "head"]}, ValueError,
         r"Every prunable layer .* excluded .*'stem', 'head'"),
        (conv_on_rgb, {"scope": "global", "ignore": [keras.layers.Conv2D, keras.layers.Dense]}, ValueError,
         r"Every prunable layer .* excluded"),
        (conv_on_rgb, {"sparsity": {"nope": 0.5}}, ValueError, r"Unknown layer name\(s\) \['nope'\]"),
        (conv_on_rgb, {"ignore": ["missing"]}, ValueError, r"Unknown layer name\(s\) \['missing'\]"),
        (conv_on_rgb, {"granularity": NM(2, 4), "scope": "global", "ignore": ["stem"]}, ValueError,
         r"per-group pattern; use scope='layer'"),
        (conv_on_rgb, {"sparsity": {"head": 1.5}}, ValueError, r"sparsity\['head'\]"),
        (lambda: keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4, name="emb")]),
         {"granularity": Channel()}, ValueError, r"Channel granularity needs an output-channel axis; layer 'emb'"),
        (conv_on_rgb, {"granularity": "diagonal"}, ValueError, r"granularity must be"),
    ],
    ids=["block-too-big", "nm-axis-too-short", "global-all-ignored-names", "global-all-ignored-types",
         "unknown-override", "unknown-ignore", "nm-global", "bad-override-value", "channel-embedding",
         "unknown-granularity"],
)
def test_bad_input_clear_error_and_model_unchanged(build, kwargs, error, match):
    model = build()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5), **kwargs)
    assert_unchanged(model, before)


@pytest.mark.parametrize("n,m", [(4, 4), (5, 4), (0, 4)])
def test_nm_needs_n_below_m(n, m):
    with pytest.raises(ValueError, match=r"NM: need 1 <= n < m"):
        NM(n, m)


def test_nm_schedule_not_ending_at_the_pattern_warns():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    with pytest.warns(UserWarning, match=r"ends with 2 zero\(s\) per group of 4 \(sparsity 0.5\)"):
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.9), granularity=NM(2, 4))
    with pytest.warns(UserWarning, match=r"ends with 1 zero\(s\) per group of 4"):
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.3), granularity=NM(2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kprune.prune_low_magnitude(model, kprune.ConstantSparsity(0.5), granularity=NM(2, 4))


# ---------------------------------------------------------------------------
# Large inputs: the sampled bracket gives exactly the documented selection
# ---------------------------------------------------------------------------


def _reference_top_k(arrays, k):
    flat = np.concatenate([selection.clean_scores(a).reshape(-1) for a in arrays])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    out, offset = [], 0
    for a in arrays:
        out.append(keep[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return out


@pytest.mark.parametrize("case", ["normal", "pruned_zeros", "few_values", "sorted", "periodic", "nan"])
@pytest.mark.parametrize("fraction", [0.03, 0.2, 0.5, 0.97])
def test_large_selection_equals_stable_argsort(case, fraction):
    rng = np.random.default_rng(hash(case) % 2**32)
    n = 4 * selection.DIRECT_SELECTION + 12345  # takes the sampled path
    if case == "normal":
        x = rng.normal(size=n)
    elif case == "pruned_zeros":
        x = np.abs(rng.normal(size=n)).astype(np.float32)
        x[rng.random(n) < 0.8] = 0
    elif case == "few_values":
        x = rng.integers(0, 5, size=n).astype(np.float64)
    elif case == "sorted":
        x = np.sort(rng.normal(size=n))
    elif case == "periodic":
        x = np.tile(rng.normal(size=4096), n // 4096 + 1)[:n]
    else:
        x = rng.normal(size=n)
        x[::7] = np.nan
    cut = (n // 3) // 7 * 7
    arrays = [x[:cut].reshape(-1, 7), x[cut:]]
    k = int(fraction * sum(a.size for a in arrays))
    got = masking.select_top_k_many(arrays, k)
    want = _reference_top_k(arrays, k)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_global_scope_without_concatenation_keeps_min_keep():
    rng = np.random.default_rng(0)
    scores = {"big": rng.normal(size=(700, 1000)) + 10, "small": rng.normal(size=(30, 30))}
    masks = masking.compute_masks(scores, 0.9, scope="global", min_keep=5)
    assert int(masks["small"].sum()) == 5  # the reserved items, the collapse guard
    assert int(masks["big"].sum() + masks["small"].sum()) == masking.kept_count(700 * 1000 + 900, 0.9)


# ------------------------------------------------------- granularity strings


@pytest.mark.parametrize("name, expected", [
    ("unstructured", masking.Unstructured()),
    ("block", masking.Block((4, 1))),
    ("NM", masking.NM(2, 4)),
    ("channel", masking.Channel("l2")),
])
def test_granularity_strings_mean_the_documented_defaults(name, expected):
    got = masking.get_granularity(name)
    assert type(got) is type(expected) and got.get_config() == expected.get_config()


def test_unknown_granularity_string_lists_every_accepted_string():
    with pytest.raises(ValueError) as e:
        masking.get_granularity("blocks")
    for name in ("'unstructured'", "'block'", "'nm'", "'channel'", "'blocks'"):
        assert name in str(e.value)


def test_granularity_strings_are_documented():
    import pathlib

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "granularity.md").read_text()
    for name in ('"block"', '"nm"', '"channel"', "Block((4, 1))", "NM(2, 4)", 'Channel("l2")'):
        assert name in doc


# --------------------------------------------------------------------------
# Incremental selection: a hint (the last threshold) changes time, not masks
# --------------------------------------------------------------------------


@PROPS
@given(
    st.lists(score_arrays(max_rank=2, max_side=40), min_size=1, max_size=3),
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 0.2)), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_hinted_selection_equals_a_fresh_one(arrays, steps, seed):
    # A training loop: the scores drift a little between updates and the
    # kept fraction changes; each hinted selection (the hint carries the last
    # threshold and how far it moved) equals a selection from scratch, with
    # the tie rule, over ties, zeros (pruned weights) and NaN.
    rng = np.random.default_rng(seed)
    hint = masking.ThresholdHint()
    arrays = [a.copy() for a in arrays]
    total = sum(a.size for a in arrays)
    for keep_fraction, drift in steps:
        for a in arrays:
            a += drift * rng.standard_normal(a.shape).astype(a.dtype) * (rng.random(a.shape) < 0.5)
            a[rng.random(a.shape) < 0.3] = 0.0
        if arrays[0].size > 3:
            arrays[0].reshape(-1)[3] = np.nan
        k = int(round(keep_fraction * total))
        got = masking.select_top_k_many(arrays, k, hint)
        want = np.split(reference_top_k(np.concatenate([a.reshape(-1) for a in arrays]), k),
                        np.cumsum([a.size for a in arrays])[:-1])
        for g, w, a in zip(got, want, arrays):
            np.testing.assert_array_equal(g, w.reshape(a.shape))


def test_hinted_selection_on_large_tensors_and_a_wrong_hint():
    # Above the direct-selection size, with a hint that is far off (it is
    # widened, then abandoned for the sampled bracket), and one that is exact.
    rng = np.random.default_rng(3)
    n = 4 * selection.DIRECT_SELECTION + 777
    x = np.abs(rng.standard_normal(n)).astype(np.float32)
    x[rng.random(n) < 0.7] = 0.0
    for value, width in ((1e6, 0.0), (-5.0, 1e-9), (0.3, 1e-4), (0.0, 0.0)):
        for k in (1, n // 10, int(np.count_nonzero(x)), int(np.count_nonzero(x)) + 5, n - 1):
            hint = masking.ThresholdHint()
            hint.value, hint.width = value, width
            np.testing.assert_array_equal(masking.select_top_k(x, k, hint), reference_top_k(x, k))
            assert hint.value == float(np.sort(x)[::-1][k - 1])


@PROPS
@given(
    st.integers(2, 9),
    st.integers(1, 40),
    st.integers(0, 8),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_nm_pairwise_rank_matches_the_stable_sort(m, rows, k, ties, seed):
    # Short groups are ranked by pairwise comparison, not sorted: the same
    # keep set as a stable argsort, ties to the earlier index.
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 3, (rows, m)) if ties else rng.random((rows, m))
    values = values.astype(np.float64)
    values[rng.random(values.shape) < 0.1] = -np.inf  # NaN, cleaned
    k = min(k, m)
    got = masking._keep_top_along_last(values, k)
    for g, v in zip(got, values):
        np.testing.assert_array_equal(g, reference_top_k(v, k))


@pytest.mark.parametrize("gran", [Unstructured(), Block((2, 2)), NM(2, 4), Channel("l1")],
                         ids=repr)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_compute_masks_with_a_memo_equals_without(gran, scope):
    # The memo kept between a training loop's updates: same masks, every
    # granularity, both scopes, as the weights drift and the sparsity grows.
    rng = np.random.default_rng(0)
    scores = {"a": rng.random((16, 8)), "b": rng.random((3, 3, 8, 12))}
    layouts = {"a": masking.DENSE_LAYOUT, "b": CONV}
    memo = masking.SelectionMemo()
    for s in (0.3, 0.35, 0.35, 0.5, 0.62, 0.62, 0.8):
        if scope == "global" and not gran.supports_global:
            break
        for v in scores.values():
            v += 0.01 * rng.standard_normal(v.shape)
        kwargs = {"granularity": gran, "layouts": layouts, "scope": scope}
        got = masking.compute_masks(scores, s, memo=memo, **kwargs)
        want = masking.compute_masks(scores, s, **kwargs)
        for key in scores:
            np.testing.assert_array_equal(got[key], want[key])
