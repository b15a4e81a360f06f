"""The ranking every selector shares (score descending, ties by id, NaN last) and the
bookkeeping that keeps a round's cost to its cluster: checked against the direct computations."""
from __future__ import annotations

import numpy as np
import pytest

from leadsel.config import BanditConfig, LeadConfig
from leadsel.data.columns import Strings
from leadsel.select.base import PoolView, RoundStats, UsageTracker, id_ranks, ranked
from leadsel.select.lead import LeadSelector


def reference(cand, score, ids):
    """The definition, directly: lexsort by (-score, id rank) over the whole pool; NaN last."""
    rank = id_ranks(ids)
    return cand[np.lexsort((rank[cand], -score[cand]))]


def test_hand_example():
    ids = ["b", "a", "d", "c", "e"]
    score = np.array([2.0, 2.0, np.nan, 5.0, np.nan])
    # 5.0 (c, idx3); the tie at 2.0 by id: a (idx1), b (idx0); NaN last, by id: d (idx2), e (idx4)
    assert ranked(np.arange(5), score, ids).tolist() == [3, 1, 0, 2, 4]
    assert ranked(np.arange(5), score, ids, k=2).tolist() == [3, 1]
    assert ranked(np.array([0, 1, 4]), score, ids, k=5).tolist() == [1, 0, 4]


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_definition_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    ids = Strings.of([f"s{rng.integers(10**6)}-{i}" for i in range(n)])
    score = rng.integers(0, 40, size=n).astype(float)          # many ties
    score[rng.random(n) < 0.05] = np.nan
    cand = np.sort(rng.choice(n, size=1800, replace=False))
    full = reference(cand, score, list(ids))
    assert np.array_equal(ranked(cand, score, ids), full)
    for k in (1, 7, 500, 1799, 1800, 5000):
        assert np.array_equal(ranked(cand, score, ids, k=k), full[:k])


def test_usage_counts_distinct_samples_as_recorded():
    u = UsageTracker(10)
    assert u.record(np.array([1, 2, 2, 3]), 1) == 4          # index 2 twice: two trainings of a new sample
    assert u.unique_used == 3
    u.record(np.array([3, 4]), 2)
    assert u.unique_used == 4 and u.unique_used == int(np.count_nonzero(u.times_used))
    v = UsageTracker(10)
    v.load_state_dict(u.state_dict())
    assert v.unique_used == 4


def test_lead_bookkeeping_equals_recomputing_it():
    """Over a run with max_uses 2, the per-cluster eligible counts and the cached IDU quantiles
    equal what a full pass over the pool gives, round after round and after a restore."""
    rng = np.random.default_rng(0)
    n, k = 600, 4
    view = PoolView([f"s{i}" for i in range(n)], [["a", "b", "c"][i % 3] for i in range(n)],
                    {"u0": rng.gamma(2.0, 1.0, size=n)})
    cfg = LeadConfig(bandit=BanditConfig(name="uniform"), rate=0.2, max_uses=2, gradient_sketch=0)
    sel = LeadSelector(view, cfg, rng.integers(0, k, size=n), budget=n, rounds=40, seed=3)
    for t in range(1, 41):
        plan = sel.plan(t)
        if plan is None:
            break
        row = sel.observe(plan, rng.gamma(2.0, 1.0, size=len(plan)),
                          RoundStats(np.full(len(plan), 1e-3), 0.01, rng.normal(size=8), 1))
        ok = sel.usage.times_used < 2
        assert sel.eligible_left().tolist() == np.bincount(sel.cluster[ok], minlength=k).tolist()
        direct = {str(c): [round(float(q), 5) for q in np.quantile(sel.idu[sel.cluster == c], sel.QUANTILES)]
                  for c in range(k)}
        assert row["idu_quantiles"] == direct
    assert t > 10 and sel.plan(t + 1) is None
    again = LeadSelector(view, cfg, sel.cluster, budget=n, rounds=40, seed=3)
    again.load_state_dict(sel.state_dict())
    assert again.eligible_left().tolist() == sel.eligible_left().tolist()
