"""ClusterUCB numpy core: arm values computed by hand, masking, spherical k-means, cold start,
draw budget, bandit state round-trip, top-by-reward and the end-to-end loop."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from leadsel.select.clusterucb_core import (
    POLICIES,
    ClusterBandit,
    arm_values,
    bandit_draws,
    cold_start,
    pick_arm,
    run_clusterucb,
    thresh_hard_values,
    thresh_normal_values,
    top_by_reward,
    ucb1_values,
    ucb_beta_values,
)
from leadsel.select.spherical_kmeans import spherical_kmeans

INF = math.inf
SMALL = [[0.2, 0.4], [0.9], []]  # arm 0 drawn twice, arm 1 once, arm 2 never
R3 = [[0.1, 0.3, 0.5], [0.4, 0.6], [-0.2]]


def phi_upper(z: float) -> float:
    """P(Z > z) for a standard normal, by hand: 1 - (1 + erf(z / sqrt 2)) / 2."""
    return 1.0 - 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


# ------------------------------------------------------------------ arm values, by hand

def test_ucb_beta_by_hand():
    # arm 0: mean 0.3, population std sqrt(((-0.1)^2 + 0.1^2) / 2) = 0.1 -> 0.3 + 1 * 0.1 = 0.4
    # arm 1: one reward -> std 0 -> 0.9; arm 2: never drawn -> +inf
    np.testing.assert_allclose(ucb_beta_values(SMALL), [0.4, 0.9, INF])
    # beta = 2: 0.3 + 2 * 0.1 = 0.5
    np.testing.assert_allclose(ucb_beta_values(SMALL, beta=2.0), [0.5, 0.9, INF])
    # R3 arm 0: mean 0.3, std sqrt((0.04 + 0 + 0.04) / 3) = sqrt(0.08 / 3) = 0.16330 -> 0.46330
    #    arm 1: mean 0.5, std 0.1 -> 0.6; arm 2: -0.2 + 0 = -0.2
    np.testing.assert_allclose(ucb_beta_values(R3), [0.3 + math.sqrt(0.08 / 3), 0.6, -0.2])


def test_ucb1_by_hand():
    # n_total = 3 draws in all; arm 0: 0.3 + sqrt(2 ln 3 / 2) = 0.3 + 1.048147 = 1.348147
    # arm 1: 0.9 + sqrt(2 ln 3 / 1) = 0.9 + 1.482304 = 2.382304; arm 2: +inf
    np.testing.assert_allclose(ucb1_values(SMALL), [0.3 + math.sqrt(math.log(3)), 0.9 + math.sqrt(2 * math.log(3)), INF])
    np.testing.assert_allclose(ucb1_values(SMALL)[:2], [1.348147, 2.382304], atol=1e-6)
    # one draw in all: ln(1) = 0 -> no bonus
    np.testing.assert_allclose(ucb1_values([[0.5], []]), [0.5, INF])


def test_thresh_hard_by_hand():
    # pooled SMALL rewards sorted [0.2, 0.4, 0.9]; linear 0.75 quantile: position 0.75 * 2 = 1.5
    # -> 0.4 + 0.5 * (0.9 - 0.4) = 0.65. arm 0: none of {0.2, 0.4} >= 0.65 -> 0; arm 1: 1/1
    np.testing.assert_allclose(thresh_hard_values(SMALL), [0.0, 1.0, INF])
    # pooled R3 sorted [-0.2, 0.1, 0.3, 0.4, 0.5, 0.6]; position 0.75 * 5 = 3.75
    # -> t = 0.4 + 0.75 * (0.5 - 0.4) = 0.475. arm 0: {0.5} -> 1/3; arm 1: {0.6} -> 1/2; arm 2: 0
    np.testing.assert_allclose(thresh_hard_values(R3), [1 / 3, 1 / 2, 0.0])
    # "at or above": a reward equal to t counts. pooled [0, 0, 0, 1, 1] -> position 3 -> t = 1
    np.testing.assert_allclose(thresh_hard_values([[0.0, 1.0], [0.0, 0.0, 1.0]]), [0.5, 1 / 3])


def test_thresh_normal_by_hand():
    t = 0.475  # as in test_thresh_hard_by_hand
    # arm 0: N(0.3, 0.16330): z = (0.475 - 0.3) / 0.16330 = 1.07165 -> P(R > t) ~ 0.14194
    # arm 1: N(0.5, 0.1): z = (0.475 - 0.5) / 0.1 = -0.25 -> P ~ 0.59871
    # arm 2: one reward, std 0, mean -0.2 < t -> 0.0
    sd0 = math.sqrt(0.08 / 3)
    want = [phi_upper((t - 0.3) / sd0), phi_upper((t - 0.5) / 0.1), 0.0]
    np.testing.assert_allclose(thresh_normal_values(R3), want, rtol=1e-9)
    np.testing.assert_allclose(want[:2], [0.14194, 0.59871], atol=1e-5)
    # SMALL: t = 0.65; arm 0 N(0.3, 0.1): z = 3.5 -> ~2.326e-4; arm 1 std 0, mean 0.9 > t -> 1.0
    np.testing.assert_allclose(thresh_normal_values(SMALL), [phi_upper(3.5), 1.0, INF], rtol=1e-9)
    # std 0 with mean == t -> 0.5: every reward equals 0.5, so t = 0.5
    np.testing.assert_allclose(thresh_normal_values([[0.5, 0.5], [0.5]]), [0.5, 0.5])


def test_all_never_drawn_is_inf_and_bad_policy():
    for p in POLICIES:
        assert np.isinf(arm_values([[], []], p)).all()
    with pytest.raises(ValueError, match="unknown policy"):
        arm_values(SMALL, "ucb2")


# ------------------------------------------------------------------ masking and ties

@pytest.mark.parametrize("policy", POLICIES)
def test_exhausted_arm_is_masked(policy):
    b = ClusterBandit(3, policy)
    for arm, r in [(0, 0.2), (0, 0.4), (1, 0.9), (2, -0.5)]:
        b.update(arm, r)
    best = int(np.argmax(b.values()))
    mask = np.ones(3, dtype=bool)
    mask[best] = False  # the best arm is exhausted
    v = b.values(mask)
    assert v[best] == -INF and np.isfinite(v[mask]).all()
    for _ in range(5):
        assert b.select(mask) != best
    # a never-drawn (+inf) arm that is masked is not chosen either
    b2 = ClusterBandit(2, policy)
    b2.update(1, 0.0)
    assert b2.select() == 0 and b2.select(np.array([False, True])) == 1
    with pytest.raises(ValueError, match="every arm is masked"):
        b.select(np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        b.select(np.ones(2, dtype=bool))


def test_arm_values_mask_and_ties():
    v = arm_values(SMALL, "ucb_beta", mask=np.array([True, False, False]))
    np.testing.assert_allclose(v, [0.4, -INF, -INF])
    assert pick_arm(np.array([0.5, 0.7, 0.7])) == 1
    assert pick_arm(np.array([-INF, INF, INF])) == 1
    with pytest.raises(ValueError, match="every arm is masked"):
        pick_arm(np.array([-INF, -INF]))
    b = ClusterBandit(3, "ucb_beta")
    assert b.select() == 0  # all never drawn: +inf ties -> lowest index
    b.update(0, 0.3)
    b.update(1, 0.3)
    b.update(2, 0.3)
    assert b.select() == 0  # equal values -> lowest index


def test_update_rejects_bad_rewards():
    b = ClusterBandit(2, "ucb1")
    for bad in (1.5, -1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="reward"):
            b.update(0, bad)
    with pytest.raises(ValueError, match="arm"):
        b.update(2, 0.0)
    b.update(0, 1.0 + 1e-12)  # float noise is clipped
    assert b.rewards() == [[1.0], []]


def test_bandit_state_round_trip_continues_identically():
    rng = np.random.default_rng(5)
    b = ClusterBandit(4, "thresh_normal", beta=1.0, seed=3)
    mask = np.ones(4, dtype=bool)
    for _ in range(10):
        arm = b.select(mask)
        b.rng.integers(100)
        b.update(arm, float(rng.uniform(-1, 1)))
    state = json.loads(json.dumps(b.state_dict()))
    c = ClusterBandit(4, "thresh_normal", beta=1.0, seed=99)
    c.load_state_dict(state)
    assert c.rewards() == b.rewards()
    mask[2] = False
    for _ in range(30):  # past the 64-entry buffer growth too
        r = float(rng.uniform(-1, 1))
        arms = (b.select(mask), c.select(mask))
        assert arms[0] == arms[1]
        assert b.rng.integers(1000) == c.rng.integers(1000)
        b.update(arms[0], r)
        c.update(arms[1], r)
    np.testing.assert_array_equal(b.values(mask), c.values(mask))
    with pytest.raises(ValueError, match="state is for"):
        ClusterBandit(4, "ucb1").load_state_dict(state)


# ------------------------------------------------------------------ spherical k-means

TWO_DIRS = np.array([(1.0, 0.1), (2.0, 0.1), (0.1, 1.0), (0.2, 3.0), (3.0, 0.3), (0.1, 0.5)])


def test_spherical_kmeans_two_directions():
    results = [spherical_kmeans(TWO_DIRS, 2, seed=s) for s in range(6)]
    for labels, cent in results:
        # near-x rows {0, 1, 4}, near-y rows {2, 3, 5}; renumbered by first member -> row 0 in 0
        np.testing.assert_array_equal(labels, [0, 0, 1, 1, 0, 1])
        assert labels.dtype == np.int64
        np.testing.assert_allclose(np.linalg.norm(cent, axis=1), 1.0)
        assert cent[0, 0] > 0.9 and cent[1, 1] > 0.9
        # centroid = normalised mean of the normalised members
        xn = TWO_DIRS / np.linalg.norm(TWO_DIRS, axis=1, keepdims=True)
        m = xn[[0, 1, 4]].mean(axis=0)
        np.testing.assert_allclose(cent[0], m / np.linalg.norm(m))
    # scaling a row does not change anything (cosine)
    scaled = TWO_DIRS * np.array([[5.0], [1], [0.1], [2], [1], [7]])
    np.testing.assert_array_equal(spherical_kmeans(scaled, 2)[0], results[0][0])


def test_spherical_kmeans_deterministic_for_seed():
    x = np.random.default_rng(0).normal(size=(300, 8))
    a = spherical_kmeans(x, 5, seed=7)
    b = spherical_kmeans(x, 5, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.bincount(a[0]).min() > 0 and len(np.bincount(a[0])) == 5
    # first-member numbering: each cluster's lowest row index increases with the cluster id
    firsts = [int(np.flatnonzero(a[0] == c)[0]) for c in range(5)]
    assert firsts == sorted(firsts) and firsts[0] == 0
    np.testing.assert_allclose(np.linalg.norm(a[1], axis=1), 1.0, rtol=1e-12)


def test_spherical_kmeans_reseeds_empty_clusters():
    # three identical rows and one orthogonal; k = 3 forces duplicate initial centroids -> an
    # empty cluster, re-seeded with the farthest point of a cluster that keeps another member
    x = np.array([(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.0, 1.0)])
    for s in range(6):
        labels, cent = spherical_kmeans(x, 3, seed=s)
        np.testing.assert_array_equal(labels, [0, 1, 1, 2])
        np.testing.assert_allclose(cent, [(1, 0), (1, 0), (0, 1)])


def test_spherical_kmeans_errors():
    x = np.array([(1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
    with pytest.raises(ValueError, match="2 row"):
        spherical_kmeans(x, 2)
    with pytest.raises(ValueError, match="k must be"):
        spherical_kmeans(TWO_DIRS, 7)
    with pytest.raises(ValueError, match="not finite"):
        spherical_kmeans(np.array([(1.0, np.nan), (1.0, 0.0)]), 1)
    lab, cent = spherical_kmeans(TWO_DIRS.astype(np.float32), 2)
    assert cent.dtype == np.float32
    np.testing.assert_array_equal(lab, [0, 0, 1, 1, 0, 1])


# ------------------------------------------------------------------ cold start, budget, top

def test_cold_start_counts_and_no_duplicates():
    sizes = [10, 3, 25, 1, 100]
    labels = np.repeat(np.arange(5), sizes)
    np.random.default_rng(1).shuffle(labels)
    csp = 0.29  # floor(0.29 * |c|): 2, 0 -> 1, 7, 0 -> 1, 28.999999999999996 -> 29 (tolerant floor)
    idx = cold_start(labels, csp, np.random.default_rng(0))
    assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=5), [2, 1, 7, 1, 29])
    np.testing.assert_array_equal(idx, cold_start(labels, csp, 0))  # int seed = default_rng(seed)
    assert not np.array_equal(idx, cold_start(labels, csp, 1))
    # csp = 0: one per cluster; csp = 1: everything
    np.testing.assert_array_equal(np.bincount(labels[cold_start(labels, 0.0, 0)]), [1] * 5)
    assert sorted(cold_start(labels, 1.0, 0).tolist()) == list(range(len(labels)))


def test_bandit_draws():
    assert bandit_draws(100, 0.3, 0.1) == 20  # 100 * (0.3 - 0.1) = 19.999999999999996 -> 20
    assert bandit_draws(1000, 0.05, 0.1) == 0  # never negative
    assert bandit_draws(10, 1.0, 0.0, n_drawn=4) == 6  # capped by the undrawn samples
    assert bandit_draws(7, 0.5, 0.2) == 2  # floor(2.1)


def test_top_by_reward():
    idx = np.array([7, 3, 9, 1, 5])
    r = np.array([0.5, 0.9, 0.5, -0.2, 0.9])
    # reward desc, ties by index: (3, 0.9), (5, 0.9), (7, 0.5), (9, 0.5), (1, -0.2)
    np.testing.assert_array_equal(top_by_reward(idx, r, 3), [3, 5, 7])
    np.testing.assert_array_equal(top_by_reward(idx, r, 10), [3, 5, 7, 9, 1])
    assert top_by_reward(idx, r, 0).size == 0
    with pytest.raises(ValueError, match="duplicates"):
        top_by_reward(np.array([1, 1]), np.array([0.1, 0.2]), 1)


# ------------------------------------------------------------------ end to end

@pytest.mark.parametrize("policy", POLICIES)
def test_run_clusterucb_exhausts_best_cluster_without_crash(policy):
    labels = np.repeat(np.arange(4), [30, 5, 40, 25])  # cluster 1 (small) is the best
    good = np.where(labels == 1, 0.9, np.linspace(-0.5, 0.3, labels.size))
    n = labels.size
    drawn, rewards = run_clusterucb(labels, lambda ix: good[ix], budget=0.5, csp=0.1, policy=policy, seed=0)
    # cold start: max(floor(0.1*|c|), 1) = 3 + 1 + 4 + 2 = 10; then floor(100 * 0.4) = 40 draws
    assert len(drawn) == 10 + 40 and len(np.unique(drawn)) == len(drawn)
    np.testing.assert_array_equal(rewards, good[drawn])
    assert (labels[drawn] == 1).sum() == 5  # the best cluster was drawn dry, then masked
    again = run_clusterucb(labels, lambda ix: good[ix], budget=0.5, csp=0.1, policy=policy, seed=0)
    np.testing.assert_array_equal(drawn, again[0])
    # budget 1: every sample drawn exactly once, the last draws from whatever is left
    everything, _ = run_clusterucb(labels, lambda ix: good[ix], budget=1.0, csp=0.1, policy=policy, seed=1)
    assert sorted(everything.tolist()) == list(range(n))
    top = top_by_reward(drawn, rewards, 5)
    assert set(labels[top].tolist()) == {1}
