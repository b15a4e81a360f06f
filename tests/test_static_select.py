"""Static baselines (leadsel.select.static, docs/algorithms.md §4): random, full, ifd, loss.

Expected subsets are written by hand from the spec: top ``budget`` by the score, ties broken by
sample id; ifd keeps only finite IFD <= 1 (IFD > 1: the prompt does not help, flagged).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from leadsel.select.base import PoolView, RoundStats
from leadsel.select.static import StaticSelector, static_subset


def subset(method, v, budget, seed):
    """The sorted subset (static_subset returns (subset, info))."""
    return static_subset(method, v, budget, seed)[0]


def view(n=None, ids=None, **scores):
    ids = ids if ids is not None else [f"s{i:03d}" for i in range(n)]
    return PoolView(list(ids), ["t"] * len(ids), {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()})


# ---------------------------------------------------------------- random and full

def test_random_size_distinct_sorted_and_seeded():
    v = view(100)
    a = subset("random", v, 10, seed=1)
    assert len(a) == 10 and len(set(a.tolist())) == 10
    assert a.tolist() == sorted(a.tolist())
    assert a.min() >= 0 and a.max() < 100
    assert subset("random", v, 10, seed=1).tolist() == a.tolist()
    # another seed gives another subset (two equal 10-subsets of 100: probability 1/C(100,10))
    assert subset("random", v, 10, seed=2).tolist() != a.tolist()


def test_random_budget_above_pool_takes_all():
    assert subset("random", view(5), 8, seed=0).tolist() == [0, 1, 2, 3, 4]


def test_random_is_roughly_uniform():
    # over 400 seeds, each of 10 samples is drawn with probability 3/10: expected 120 times,
    # binomial sd sqrt(400*0.3*0.7) = 9.2; allow 5 sd
    counts = np.zeros(10)
    for seed in range(400):
        counts[subset("random", view(10), 3, seed=seed)] += 1
    assert np.all(np.abs(counts - 120) < 46)


def test_full_is_the_whole_pool():
    assert subset("full", view(7), 2, seed=0).tolist() == [0, 1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- ifd

IFD_IDS = ["e", "b", "g", "a", "h", "c", "d", "f"]
IFD = [0.5, 1.2, 0.9, math.inf, math.nan, 0.9, 1.0, 0.2]
#      idx0 idx1 idx2 idx3     idx4     idx5 idx6 idx7
# valid (finite, <= 1): idx0 0.5, idx2 0.9 (id g), idx5 0.9 (id c), idx6 1.0, idx7 0.2


def test_ifd_top_budget_among_valid():
    v = view(ids=IFD_IDS, ifd=IFD)
    # 1.0 (idx6) first; the tie at 0.9 by id: "c" (idx5) before "g" (idx2)
    assert subset("ifd", v, 1, seed=0).tolist() == [6]
    assert subset("ifd", v, 2, seed=0).tolist() == [5, 6]
    assert subset("ifd", v, 3, seed=0).tolist() == [2, 5, 6]
    # then 0.5 (idx0), 0.2 (idx7); 1.2, inf and nan not while valid ones remain
    chosen, info = static_subset("ifd", v, 5, seed=0)
    assert chosen.tolist() == [0, 2, 5, 6, 7]
    assert info == {"filled_from_flagged": 0}


def test_ifd_too_few_valid_fills_from_flagged_lowest_ifd_first():
    # documented in static.py: the rest of the budget comes from the flagged samples of lowest IFD
    # (nan counts as inf), ties by id, and their number is recorded.
    # flagged: idx1 1.2 ("b"), idx3 inf ("a"), idx4 nan ("h") -> order idx1, then inf/nan tie by id:
    # "a" (idx3) before "h" (idx4)
    v = view(ids=IFD_IDS, ifd=IFD)
    chosen, info = static_subset("ifd", v, 6, seed=0)
    assert chosen.tolist() == [0, 1, 2, 5, 6, 7] and info == {"filled_from_flagged": 1}
    chosen, info = static_subset("ifd", v, 7, seed=0)
    assert chosen.tolist() == [0, 1, 2, 3, 5, 6, 7] and info == {"filled_from_flagged": 2}
    chosen, info = static_subset("ifd", v, 8, seed=0)
    assert chosen.tolist() == list(range(8)) and info == {"filled_from_flagged": 3}


# ---------------------------------------------------------------- loss

def test_loss_top_budget_by_u0_ties_by_id():
    v = view(ids=["d", "a", "c", "b", "e"], u0=[2.0, 3.0, 2.0, 2.0, 0.5])
    # 3.0 (idx1), then the tie at 2.0 by id: "b" (idx3), "c" (idx2), "d" (idx0)
    assert subset("loss", v, 1, seed=0).tolist() == [1]
    assert subset("loss", v, 2, seed=0).tolist() == [1, 3]
    assert subset("loss", v, 3, seed=0).tolist() == [1, 2, 3]
    assert subset("loss", v, 4, seed=0).tolist() == [0, 1, 2, 3]


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError):
        static_subset("lead", view(3), 1, seed=0)


def test_info_empty_for_other_methods():
    v = view(ids=["a", "b"], u0=[1.0, 2.0])
    for method in ("random", "full", "loss"):
        assert static_subset(method, v, 1, seed=0)[1] == {}


# ---------------------------------------------------------------- the selector

def stats(n):
    return RoundStats(sample_lrs=np.full(n, 1e-3), delta=0.5, grad_sum=None, n_steps=1)


def test_static_selector_plans_epochs_permutations_then_stops():
    v = view(ids=["d", "a", "c", "b", "e"], u0=[2.0, 3.0, 2.0, 2.0, 0.5])
    sel = StaticSelector("loss", v, 3, epochs=3, seed=5)
    assert sel.subset.tolist() == [1, 2, 3]
    orders = []
    for t in (1, 2, 3):
        plan = sel.plan(t)
        assert sorted(plan.tolist()) == [1, 2, 3]
        orders.append(plan.tolist())
        row = sel.observe(plan, np.ones(3), stats(3))
        # every sample is new in round 1 only
        assert row["n_new"] == (3 if t == 1 else 0)
    assert sel.plan(4) is None
    cols = sel.columns()
    assert cols["times_used"].tolist() == [0, 3, 3, 3, 0]
    assert cols["first_round"].tolist() == [-1, 1, 1, 1, -1]
    # same seed -> same orders
    again = StaticSelector("loss", v, 3, epochs=3, seed=5)
    assert [again.plan(t).tolist() for t in (1, 2, 3)] == orders


def test_static_selector_each_epoch_is_shuffled():
    # 20 samples: an epoch in sorted order, or two epochs in the same order, has probability 1/20!
    sel = StaticSelector("full", view(20), 20, epochs=3, seed=0)
    orders = [sel.plan(t).tolist() for t in (1, 2, 3)]
    assert all(sorted(o) == list(range(20)) for o in orders)
    assert all(o != list(range(20)) for o in orders)
    assert orders[0] != orders[1] != orders[2] != orders[0]


def test_static_selector_usage_after_one_round_and_state():
    sel = StaticSelector("full", view(4), 4, epochs=2, seed=0)
    plan = sel.plan(1)
    sel.observe(plan, np.ones(4), stats(4))
    assert sel.columns()["times_used"].tolist() == [1, 1, 1, 1]
    assert sel.columns()["first_round"].tolist() == [1, 1, 1, 1]
    other = StaticSelector("full", view(4), 4, epochs=2, seed=0)
    other.load_state_dict(sel.state_dict())
    # the restored generator gives the same round-2 order
    assert other.plan(2).tolist() == sel.plan(2).tolist()
    assert other.columns()["times_used"].tolist() == [1, 1, 1, 1]
