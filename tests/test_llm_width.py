"""Grouped-query-aware head selection (kprune.llm.width.select_heads): invariants
over random layouts and scores (hypothesis); no KerasHub needed, every backend."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kprune.llm.width import select_heads


@st.composite
def layouts(draw):
    nkv = draw(st.integers(1, 6))
    group = draw(st.integers(1, 6))
    new_kv = draw(st.integers(1, nkv))
    new_group = draw(st.integers(1, group))
    q = draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=nkv * group, max_size=nkv * group))
    return nkv, group, new_kv, new_group, np.array(q)


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_kept_heads_are_whole_groups_with_the_same_count_and_the_best_scores(layout):
    nkv, group, new_kv, new_group, q = layout
    k = q.reshape(nkv, group).sum(1)
    heads, groups = select_heads(q, k, new_kv * new_group, new_kv)
    assert len(heads) == new_kv * new_group and len(groups) == new_kv
    assert np.all(np.diff(heads) > 0) and np.all(np.diff(groups) > 0)
    # New query head j reads new KV head j // new_group: the group it came from.
    np.testing.assert_array_equal(heads // group, np.repeat(groups, new_group))
    # No dropped group scores higher than a kept one; within a kept group likewise.
    dropped = np.setdiff1d(np.arange(nkv), groups)
    if len(dropped):
        assert k[dropped].max() <= k[groups].min()
    for g in groups:
        kept = heads[heads // group == g]
        rest = np.setdiff1d(np.arange(g * group, (g + 1) * group), kept)
        if len(rest):
            assert q[rest].max() <= q[kept].min()
