"""LEAD's online stage (leadsel.select.lead, docs/algorithms.md §1.2-1.4) on hand-made pools.

Plans are compared as sorted index lists (a plan is handed back in a shuffled training order).
Every expected utility, reward and correction is a literal worked out by hand; the comment above it
shows the arithmetic. Where the arm must be known, the selector's bandit is replaced by a scripted
one (a test double with the same interface) or the pool has a single cluster.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from leadsel.config import BanditConfig, LeadConfig
from leadsel.select.base import PoolView, RoundStats
from leadsel.select.lead import LeadSelector

ROW_KEYS = {"arm", "reward", "reward_norm", "D", "beta", "cos_phi", "delta", "n_new", "tasks"}


def make(ids, sources, u0, clusters, *, budget=1000, rounds=50, seed=0, bandit="uniform", **lead):
    cfg = LeadConfig(bandit=BanditConfig(name=bandit), **lead)
    view = PoolView(list(ids), list(sources), {"u0": np.asarray(u0, dtype=np.float64)})
    return LeadSelector(view, cfg, np.asarray(clusters), budget, rounds, seed)


def stats_for(plan, lr=0.1, delta=0.0, grad=(0.0,)):
    lrs = np.array([lr[int(i)] for i in plan]) if isinstance(lr, dict) else np.full(len(plan), float(lr))
    grad = None if grad is None else np.asarray(grad, dtype=np.float64)
    return RoundStats(sample_lrs=lrs, delta=delta, grad_sum=grad, n_steps=1)


def step(sel, t, losses, lr=0.1, delta=0.0, grad=(0.0,)):
    """plan round t, check it is exactly the keys of ``losses`` (a dict index -> loss), observe."""
    plan = sel.plan(t)
    assert plan is not None
    assert sorted(plan.tolist()) == sorted(losses)
    row = sel.observe(plan, np.array([losses[int(i)] for i in plan]), stats_for(plan, lr, delta, grad))
    return row


class ScriptedBandit:
    """Pulls the arms of a script in order; records the masks it was shown and the rewards."""
    name = "scripted"

    def __init__(self, arms, n_arms):
        self.script, self.n_arms = list(arms), n_arms
        self.masks, self.rewards = [], []

    def select(self, mask):
        self.masks.append(np.asarray(mask).tolist())
        arm = self.script.pop(0)
        assert mask[arm], "the script pulls a masked arm"
        return arm

    def update(self, arm, reward):
        self.rewards.append((arm, reward))

    def summary(self, mask):
        return {"arm_probs": [1.0 if m else 0.0 for m in np.asarray(mask).tolist()]}


# ---------------------------------------------------------------- fine level: top-k per stratum

def test_topk_per_cluster_task_stratum_ties_by_id():
    # one cluster, task x (5 samples) and task y (3 samples); rate 0.5:
    # x takes ceil(0.5*5) = 3, y takes ceil(0.5*3) = 2
    ids = ["x3", "x1", "x2", "x0", "x4", "y2", "y0", "y1"]
    src = ["x", "x", "x", "x", "x", "y", "y", "y"]
    u0 = [5.0, 5.0, 5.0, 1.0, 9.0, 2.0, 2.0, 7.0]
    sel = make(ids, src, u0, [0] * 8, rate=0.5)
    plan = sel.plan(1)
    # x: 9.0 (idx4), then the tie at 5.0 broken by id: x1 (idx1), x2 (idx2); x3 (idx0) is left out
    # y: 7.0 (idx7), then the tie at 2.0: y0 (idx6) before y2 (idx5)
    assert sorted(plan.tolist()) == [1, 2, 4, 6, 7]
    row = sel.observe(plan, np.ones(5), stats_for(plan))
    assert row["tasks"] == {"x": 3, "y": 2}
    assert row["arm"] == 0 and row["n_new"] == 5


def test_stratum_size_is_per_cluster_and_task():
    # cluster 0: task x, 2 samples -> ceil(0.25*2) = 1; cluster 1: task x, 10 samples -> ceil(2.5) = 3
    ids = [f"s{i:02d}" for i in range(12)]
    u0 = [1.0, 2.0] + [float(v) for v in range(10)]            # cluster 1: idx2..11, u0 0..9
    sel = make(ids, ["x"] * 12, u0, [0, 0] + [1] * 10, rate=0.25)
    sel.bandit = ScriptedBandit([1, 0], 2)
    # cluster 1 top 3 by u0: idx11 (9), idx10 (8), idx9 (7)
    step(sel, 1, {11: 1.0, 10: 1.0, 9: 1.0})
    # cluster 0 top 1: idx1 (2.0)
    step(sel, 2, {1: 1.0})


def test_max_uses_eligibility_and_end_when_nothing_is_eligible():
    # one stratum of 5, rate 0.4 -> ceil(2.0) = 2 a round, max_uses 2
    sel = make([f"s{i}" for i in range(5)], ["t"] * 5, [5.0, 4.0, 3.0, 2.0, 1.0], [0] * 5,
               rate=0.4, max_uses=2)
    # a loss of 10 keeps the trained samples on top: IDU = 0.9*10 + 0.1*IDU_prev >= 9
    high = lambda *ix: {i: 10.0 for i in ix}
    step(sel, 1, high(0, 1))
    step(sel, 2, high(0, 1))
    # idx0, idx1 were trained twice: never planned again although their IDU is the highest
    assert sel.idu[0] > 9 and sel.idu[1] > 9
    step(sel, 3, high(2, 3))
    step(sel, 4, high(2, 3))
    # one eligible sample left in the stratum: the round takes it alone
    step(sel, 5, high(4))
    step(sel, 6, high(4))
    assert sel.plan(7) is None
    assert sel.columns()["times_used"].tolist() == [2, 2, 2, 2, 2]


def test_exhausted_cluster_is_masked_out():
    # two clusters of two, rate 1 (whole cluster a round), max_uses 1
    for seed in range(6):
        sel = make(["a", "b", "c", "d"], ["t"] * 4, [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1],
                   rate=1.0, max_uses=1, seed=seed)
        p1 = sel.plan(1)
        arm1 = int(sel.cluster[p1[0]])
        assert sorted(p1.tolist()) == ([0, 1] if arm1 == 0 else [2, 3])
        row1 = sel.observe(p1, np.ones(2), stats_for(p1))
        assert row1["arm"] == arm1 and row1["arm_probs"] == [0.5, 0.5]
        p2 = sel.plan(2)
        # cluster arm1 has no eligible sample left: the other one is pulled, the mask shows it
        assert sorted(p2.tolist()) == ([2, 3] if arm1 == 0 else [0, 1])
        row2 = sel.observe(p2, np.ones(2), stats_for(p2))
        assert row2["arm"] == 1 - arm1
        assert row2["arm_probs"] == ([0.0, 1.0] if arm1 == 0 else [1.0, 0.0])
        assert sel.plan(3) is None


def test_plan_none_after_the_last_round():
    sel = make(["a", "b"], ["t", "t"], [1.0, 2.0], [0, 0], rate=0.5, rounds=2)
    # round 1: idx1 (2.0); IDU1 = 0.9*0 + 0.1*2 = 0.2 < 1.0 -> round 2 takes idx0
    step(sel, 1, {1: 0.0})
    step(sel, 2, {0: 1.0})
    assert sel.plan(3) is None


# ---------------------------------------------------------------- budget

def test_budget_keeps_reused_samples_and_best_new_ones():
    # rate 0.5 of 6 -> 3 a round; budget 4 distinct samples
    ids = ["s0", "s1", "s2", "s4", "s3", "s5"]
    sel = make(ids, ["t"] * 6, [6.0, 5.0, 4.0, 3.0, 3.0, 1.0], [0] * 6, rate=0.5, budget=4)
    # round 1: top 3 = idx0, idx1, idx2 (3 new <= 4 left); D = 0, b = 0.1:
    # IDU0 = 0.9*10 + 0.1*6 = 9.6, IDU1 = 0.9*0 + 0.1*5 = 0.5, IDU2 = 0.1*4 = 0.4
    row = step(sel, 1, {0: 10.0, 1: 0.0, 2: 0.0})
    assert row["n_new"] == 3
    np.testing.assert_allclose(sel.idu, [9.6, 0.5, 0.4, 3.0, 3.0, 1.0], atol=1e-12)
    # round 2: top 3 = idx0 (9.6), then the tie at 3.0 by id: "s3" (idx4) then "s4" (idx3).
    # 1 slot left for the 2 new ones: keep idx4 (tie on IDU broken by id); idx0 (reused) stays
    row = step(sel, 2, {0: 1.0, 4: 1.0})
    assert row["n_new"] == 1
    assert sel.usage.unique_used == 4
    assert sel.plan(3) is None


def test_budget_keeps_highest_idu_across_tasks():
    # one cluster, task x: a (2.0), b (1.0); task y: c (5.0), d (0.5); rate 0.5 -> 1 per task:
    # a and c. Budget 1: keep the new one of highest IDU, c (5.0 > 2.0), whatever the task order
    sel = make(["a", "b", "c", "d"], ["x", "x", "y", "y"], [2.0, 1.0, 5.0, 0.5], [0] * 4, rate=0.5, budget=1)
    row = step(sel, 1, {2: 1.0})
    assert row["tasks"] == {"y": 1}
    assert sel.plan(2) is None


def test_proportional_trim_keeps_each_tasks_share_of_the_new_samples():
    # one cluster; task x: x0..x5 with U0 9..4, task y: y0, y1 with U0 1.0, 0.5; rate 1 -> all 8
    # picked in round 1, budget 4. idu trim: the 4 of highest IDU, all of task x (x0..x3).
    # proportional: x has 6 of the 8 new, y 2: quotas 4*6/8 = 3 and 4*2/8 = 1 -> x0, x1, x2 and y0
    ids = ["x0", "x1", "x2", "x3", "x4", "x5", "y0", "y1"]
    src = ["x"] * 6 + ["y"] * 2
    u0 = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 1.0, 0.5]
    sel = make(ids, src, u0, [0] * 8, rate=1.0, budget=4)
    assert sorted(sel.plan(1).tolist()) == [0, 1, 2, 3]
    sel = make(ids, src, u0, [0] * 8, rate=1.0, budget=4, trim="proportional")
    row = step(sel, 1, {0: 1.0, 1: 1.0, 2: 1.0, 6: 1.0})
    assert row["tasks"] == {"x": 3, "y": 1}


def test_task_quotas_by_largest_remainder():
    from leadsel.select.lead import task_quotas

    assert task_quotas([6, 2], 4).tolist() == [3, 1]
    # 4 * (5, 5, 1) / 11 = 1.82, 1.82, 0.36: floors 1, 1, 0, the 2 left to the largest remainders
    assert task_quotas([5, 5, 1], 4).tolist() == [2, 2, 0]
    # equal remainders (2/3 each): the lower task indices first
    assert task_quotas([1, 1, 1], 2).tolist() == [1, 1, 0]
    assert task_quotas([3, 0, 1], 4).tolist() == [3, 0, 1]


def test_exp3_gamma_from_the_number_of_arms_and_rounds():
    from leadsel.bandit import exp3_gamma

    # sqrt(8 ln 8 / ((e - 1) 20)) = sqrt(16.6355 / 34.3656) = sqrt(0.484075) = 0.695755
    assert exp3_gamma(8, 20) == pytest.approx(0.695755, abs=1e-6)
    # sqrt(2 ln 2 / (e - 1)) = sqrt(1.386294 / 1.718282) = sqrt(0.806789) = 0.898215; 3 arms, 1 round: > 1, so 1
    assert exp3_gamma(2, 1) == pytest.approx(0.898215, abs=1e-6)
    assert exp3_gamma(3, 1) == 1.0 and exp3_gamma(1, 5) == 1.0
    cfg = LeadConfig(bandit=BanditConfig(name="exp3", gamma_from_rounds=True))
    view = PoolView([f"s{i}" for i in range(8)], ["t"] * 8, {"u0": np.arange(8.0)})
    sel = LeadSelector(view, cfg, np.arange(8) % 4, 10, 20, 0)
    # 4 arms, 20 rounds: sqrt(4 ln 4 / (1.718282 * 20)) = sqrt(5.545177 / 34.36564) = sqrt(0.161359) = 0.401694
    assert sel.bandit.gamma == pytest.approx(0.401694, abs=1e-6)
    assert LeadSelector(view, LeadConfig(bandit=BanditConfig(name="exp3")), np.arange(8) % 4, 10, 20, 0).bandit.gamma == 0.1


def test_round1_delta_uses_the_rounds_own_delta():
    # one cluster of 2, rate 1; round 1 trains both with lr 0.1, delta 2.0, b = 0.1:
    # paper: D = 0 -> IDU = 0.9 * L + 0.1 * U0 = 0.9 * 3 + 0.1 * 5 = 3.2 and 0.9 * 1 + 0.1 * 4 = 1.3
    # round1_delta: D = 2.0 -> IDU = 0.9 * (3 - 0.1 * 2) + 0.5 = 3.02 and 0.9 * (1 - 0.2) + 0.4 = 1.12
    for flag, want, D in ((False, [3.2, 1.3], 0.0), (True, [3.02, 1.12], 2.0)):
        sel = make(["a", "b"], ["t", "t"], [5.0, 4.0], [0, 0], rate=1.0, round1_delta=flag)
        row = step(sel, 1, {0: 3.0, 1: 1.0}, lr=0.1, delta=2.0)
        np.testing.assert_allclose(sel.idu, want, atol=1e-12)
        assert row["D"] == D and row["rule"] == ("round1_own_delta" if flag else "round1")


def test_budget_cuts_the_first_round():
    # budget 2 < the 3 a round would take: the 2 of highest U0
    sel = make(["a", "b", "c", "d", "e", "f"], ["t"] * 6, [1.0, 6.0, 2.0, 5.0, 4.0, 0.0], [0] * 6,
               rate=0.5, budget=2)
    step(sel, 1, {1: 1.0, 3: 1.0})
    assert sel.plan(2) is None


# ---------------------------------------------------------------- observe: IDU, reward, correction

# Pool of the hand-worked run: cluster 0 = idx0..3 (a0..a3), cluster 1 = idx4..7 (b0..b3), one task,
# rate 0.5 -> 2 a round, b = 0.1. Arms scripted 0, 1, 0, 1, 0.
IDS = ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]
U0 = [4.0, 3.0, 2.0, 1.0, 8.0, 6.0, 5.0, 0.5]
G1, G2, G3, G4 = [1.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.0, 1.0, 0.0], [3.0, 4.0, 0.0]


def run_four_rounds(beta_reference):
    sel = make(IDS, ["t"] * 8, U0, [0, 0, 0, 0, 1, 1, 1, 1], rate=0.5, max_uses=10,
               beta_reference=beta_reference)
    bandit = ScriptedBandit([0, 1, 0, 1, 0], 2)
    sel.bandit = bandit

    # round 1, arm 0: D = 0. top 2 by U0 = idx0 (4), idx1 (3)
    # IDU0 = 0.9*1.0 + 0.1*4 = 1.3; IDU1 = 0.9*2.5 + 0.1*3 = 2.55
    # reward = mean(4-1, 3-2.5) = 1.75; first reward -> 0
    r1 = step(sel, 1, {0: 1.0, 1: 2.5}, lr=0.5, delta=4.0, grad=G1)
    assert ROW_KEYS <= set(r1) and "arm_probs" in r1
    assert (r1["arm"], r1["D"], r1["beta"], r1["cos_phi"], r1["delta"], r1["n_new"]) == (0, 0.0, None, None, 4.0, 2)
    assert r1["reward"] == pytest.approx(1.75) and r1["reward_norm"] == 0.0
    assert r1["tasks"] == {"t": 2}
    np.testing.assert_allclose(sel.idu[:2], [1.3, 2.55], atol=1e-12)

    # round 2, arm 1, first visit: D = delta_1 = 4. top 2 = idx4 (8), idx5 (6); lr 0.1 -> lr*D = 0.4
    # IDU4 = 0.9*(7-0.4) + 0.1*8 = 5.94 + 0.8 = 6.74; IDU5 = 0.9*(5-0.4) + 0.1*6 = 4.14 + 0.6 = 4.74
    # reward = mean(8-7, 6-5) = 1.0; lo 1.0, hi 1.75 -> 2*(1-1)/0.75 - 1 = -1
    r2 = step(sel, 2, {4: 7.0, 5: 5.0}, lr=0.1, delta=9.0, grad=G2)
    assert (r2["arm"], r2["beta"], r2["cos_phi"], r2["delta"]) == (1, None, None, 9.0)
    assert r2["D"] == pytest.approx(4.0)
    assert r2["reward"] == pytest.approx(1.0) and r2["reward_norm"] == pytest.approx(-1.0)
    np.testing.assert_allclose(sel.idu[4:6], [6.74, 4.74], atol=1e-12)

    # round 3, arm 0 revisited: d_ref = delta_1 = 4, d_prev = delta_2 = 9,
    # cos(G1, G2) = 1/3 -> c = 6/3 = 2, beta = (9-2)/(13-4) = 7/9, D = 32/9 (test_idu)
    # cluster 0 by IDU: idx1 2.55, idx2 2.0, idx0 1.3, idx3 1.0 -> idx1, idx2
    # lr*D: 0.9*32/9 = 3.2 (idx1), 0.45*32/9 = 1.6 (idx2)
    # IDU1 = 0.9*(2.0-3.2) + 0.1*2.55 = -1.08 + 0.255 = -0.825
    # IDU2 = 0.9*(1.5-1.6) + 0.1*2.0 = -0.09 + 0.2 = 0.11
    # reward = mean(2.55-2.0, 2.0-1.5) = 0.525 (the IDU before, not U0); new min -> -1
    r3 = step(sel, 3, {1: 2.0, 2: 1.5}, lr={1: 0.9, 2: 0.45}, delta=1.0, grad=G3)
    assert r3["arm"] == 0 and r3["n_new"] == 1
    assert r3["beta"] == pytest.approx(7.0 / 9.0)
    assert r3["cos_phi"] == pytest.approx(1.0 / 3.0)
    assert r3["D"] == pytest.approx(32.0 / 9.0)
    assert r3["reward"] == pytest.approx(0.525) and r3["reward_norm"] == pytest.approx(-1.0)
    np.testing.assert_allclose(sel.idu[:4], [1.3, -0.825, 0.11, 1.0], atol=1e-12)
    cols = sel.columns()
    assert cols["times_used"].tolist() == [1, 2, 1, 0, 1, 1, 0, 0]
    assert cols["first_round"].tolist() == [1, 1, 3, -1, 2, 2, -1, -1]
    assert cols["cluster"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(cols["idu"], [1.3, -0.825, 0.11, 1.0, 6.74, 4.74, 5.0, 0.5], rtol=1e-6)

    # round 4, arm 1 revisited: d_ref = delta_2 = 9, d_prev = delta_3 = 1, cos(G2, G3) = 2/3
    # c = 3*2/3 = 2; beta = (1-2)/(10-4) < 0 -> 0; D = d_prev = 1
    # cluster 1 by IDU: idx4 6.74, idx6 5.0, idx5 4.74 -> idx4, idx6; lr 0.1 -> lr*D = 0.1
    # IDU4 = 0.9*(6-0.1) + 0.1*6.74 = 5.31 + 0.674 = 5.984; IDU6 = 0.9*(4-0.1) + 0.5 = 4.01
    # reward = mean(6.74-6, 5-4) = 0.87; lo 0.525, hi 1.75 -> 2*(0.87-0.525)/1.225 - 1 = 0.69/1.225 - 1
    r4 = step(sel, 4, {4: 6.0, 6: 4.0}, lr=0.1, delta=4.0, grad=G4)
    assert r4["arm"] == 1 and r4["beta"] == 0.0
    assert r4["cos_phi"] == pytest.approx(2.0 / 3.0)
    assert r4["D"] == pytest.approx(1.0)
    assert r4["reward"] == pytest.approx(0.87)
    assert r4["reward_norm"] == pytest.approx(0.69 / 1.225 - 1.0)
    np.testing.assert_allclose(sel.idu[[4, 6]], [5.984, 4.01], atol=1e-12)
    # the bandit was shown both arms every round and given the normalised rewards
    assert bandit.masks == [[True, True]] * 4
    assert [a for a, _ in bandit.rewards] == [0, 1, 0, 1]
    assert [r for _, r in bandit.rewards] == pytest.approx([0.0, -1.0, -1.0, 0.69 / 1.225 - 1.0])
    return sel


def test_observe_hand_worked_run_first_reference():
    sel = run_four_rounds("first")
    # round 5, arm 0: d_ref = delta of its FIRST visit (round 1) = 4, d_prev = delta_4 = 4,
    # cos(G1, G4) = 3/5 = 0.6: c = 4*0.6 = 2.4; beta = (4-2.4)/(8-4.8) = 0.5;
    # D = 0.25*4 + 0.25*4 + 2*0.25*2.4 = 3.2. Cluster 0 by IDU: idx0 1.3, idx3 1.0 -> idx0, idx3
    r5 = step(sel, 5, {0: 1.0, 3: 1.0}, delta=1.0, grad=G1)
    assert r5["arm"] == 0 and r5["rule"] == "mix"
    assert r5["cos_phi"] == pytest.approx(0.6)
    assert r5["beta"] == pytest.approx(0.5)
    assert r5["D"] == pytest.approx(3.2)


def test_observe_hand_worked_run_latest_reference():
    sel = run_four_rounds("latest")
    # round 5, arm 0: d_ref = delta of its LATEST visit (round 3) = 1, d_prev = 4,
    # cos(G3, G4) = 4/5 = 0.8: c = 2*0.8 = 1.6; beta = (4-1.6)/(5-3.2) = 2.4/1.8 > 1 -> 1; D = d_ref = 1
    r5 = step(sel, 5, {0: 1.0, 3: 1.0}, delta=1.0, grad=G1)
    assert r5["arm"] == 0
    assert r5["cos_phi"] == pytest.approx(0.8)
    assert r5["beta"] == 1.0
    assert r5["D"] == pytest.approx(1.0)


def test_round1_reward_and_utility_single_cluster():
    # one cluster, so the arm is 0; default b = 0.1; round 1: D = 0 whatever the delta
    sel = make(["p", "q", "r"], ["t"] * 3, [2.0, 5.0, 1.0], [0, 0, 0], rate=0.5)
    # ceil(0.5*3) = 2: idx1 (5), idx0 (2). IDU = 0.9*L + 0.1*U0: idx1 0.9*3 + 0.5 = 3.2, idx0 0.9*1 + 0.2 = 1.1
    # reward = mean(5-3, 2-1) = 1.5
    row = step(sel, 1, {1: 3.0, 0: 1.0}, lr=1.0, delta=7.0, grad=[1.0])
    assert row["D"] == 0.0 and row["reward"] == pytest.approx(1.5) and row["reward_norm"] == 0.0
    np.testing.assert_allclose(sel.idu, [1.1, 3.2, 1.0], atol=1e-12)
    # round 2 revisits cluster 0 right after its reference visit: d_ref = d_prev = 7, cos = 1
    # -> denominator 7+7-2*7 = 0 -> beta 0, D = 7; lr 0.1 -> lr*D = 0.7
    # idx1 (3.2), idx0 (1.1): IDU1 = 0.9*(2-0.7) + 0.32 = 1.17 + 0.32 = 1.49
    #                         IDU0 = 0.9*(1-0.7) + 0.11 = 0.27 + 0.11 = 0.38
    row = step(sel, 2, {1: 2.0, 0: 1.0}, lr=0.1, delta=1.0, grad=[2.0])
    assert row["beta"] == 0.0 and row["cos_phi"] == pytest.approx(1.0) and row["D"] == pytest.approx(7.0)
    np.testing.assert_allclose(sel.idu, [0.38, 1.49, 1.0], atol=1e-12)


def test_detrended_reward_subtracts_the_running_baseline():
    # reward_baseline rho = 0.5. Three rounds on one cluster of 6 (rate 1/3 -> 2 a round, one use each);
    # raw rewards mean(before - L) with before = U0 for never-trained samples:
    #   round 1: idx0 (U0 6), idx1 (5): losses 5, 4 -> raw 1.0; baseline none yet -> b = 1.0, detrended 0
    #   round 2: idx2 (4), idx3 (3): losses 1, 0 -> raw 3.0; detrended 3 - 1 = 2; b = 0.5*1 + 0.5*3 = 2
    #   round 3: idx4 (2), idx5 (1): losses 1.5, 0.5 -> raw 0.5; detrended 0.5 - 2 = -1.5; b = 1.25
    # scaled by min/max so far: 0 (equal), +1 (lo 0 hi 2), 2*(-1.5+1.5)/3.5 - 1 = -1 (lo -1.5 hi 2)
    sel = make([f"s{i}" for i in range(6)], ["t"] * 6, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0] * 6,
               rate=1 / 3, max_uses=1, reward="detrended", reward_baseline=0.5)
    rows = [step(sel, 1, {0: 5.0, 1: 4.0}), step(sel, 2, {2: 1.0, 3: 0.0}), step(sel, 3, {4: 1.5, 5: 0.5})]
    assert [r["reward"] for r in rows] == pytest.approx([1.0, 3.0, 0.5])
    assert [r["reward_baseline"] for r in rows] == pytest.approx([1.0, 1.0, 2.0])
    assert [r["reward_norm"] for r in rows] == pytest.approx([0.0, 1.0, -1.0])
    assert sel.baseline.value == pytest.approx(1.25)
    # the paper's reward on the same rounds: 0, +1 (lo 1 hi 3), 2*(0.5-0.5)/2.5 - 1 = -1
    sel = make([f"s{i}" for i in range(6)], ["t"] * 6, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0] * 6,
               rate=1 / 3, max_uses=1)
    rows = [step(sel, 1, {0: 5.0, 1: 4.0}), step(sel, 2, {2: 1.0, 3: 0.0}), step(sel, 3, {4: 1.5, 5: 0.5})]
    assert [r["reward_norm"] for r in rows] == pytest.approx([0.0, 1.0, -1.0])


def test_detrended_and_consumed_rewards_rank_a_round_differently():
    # raw rewards 1, 3, 2 (rho 0.5): consumed scales round 3 to 2*(2-1)/2 - 1 = 0;
    # detrended: 0, 3 - 1 = 2, 2 - 2 = 0 (b after round 2: 0.5*1 + 0.5*3 = 2) -> 2*(0-0)/2 - 1 = -1
    def three(**kw):
        sel = make([f"s{i}" for i in range(6)], ["t"] * 6, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0] * 6,
                   rate=1 / 3, max_uses=1, **kw)
        return [step(sel, 1, {0: 5.0, 1: 4.0}), step(sel, 2, {2: 1.0, 3: 0.0}),
                step(sel, 3, {4: 0.0, 5: -1.0})][-1]["reward_norm"]
    assert three() == pytest.approx(0.0)
    assert three(reward="detrended", reward_baseline=0.5) == pytest.approx(-1.0)


def test_reward_baseline_state_round_trips():
    from leadsel.select.idu import RewardBaseline

    b = RewardBaseline(0.25)
    assert b(2.0) == 2.0 and b(6.0) == 2.0            # b = 2, then 0.75*2 + 0.25*6 = 3
    c = RewardBaseline(0.25)
    c.load_state_dict(b.state_dict())
    assert c(0.0) == pytest.approx(3.0) and c.value == pytest.approx(2.25)   # 0.75*3 + 0


def test_middle_cold_start_ranks_each_tasks_median_first():
    from leadsel.select.idu import cold_start

    # task x: U0 1, 2, 3, 10 -> median 2.5 -> 2.5 - |U0 - 2.5| = 1.0, 2.0, 2.0, -5.0
    # task y: U0 4, nan, 6 -> median of the finite 5 -> 4.0, nan, 4.0
    u0 = np.array([1.0, 2.0, 3.0, 10.0, 4.0, np.nan, 6.0])
    task = np.array([0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(cold_start(u0, task, "middle"), [1.0, 2.0, 2.0, -5.0, 4.0, np.nan, 4.0])
    np.testing.assert_array_equal(cold_start(u0, task, "u0"), u0)
    # the selector starts from it: one cluster, rate 0.5 -> 2 of task x: idx1, idx2 (2.0 each, ties by id),
    # where the paper's cold start takes the two highest U0, idx3 (10) and idx2 (3)
    ids, src = [f"s{i}" for i in range(7)], ["x"] * 4 + ["y"] * 3
    sel = make(ids, src, u0, [0] * 7, rate=0.5, cold_start="middle")
    assert sorted(sel.plan(1).tolist()) == [1, 2, 4, 6]
    assert sorted(make(ids, src, u0, [0] * 7, rate=0.5).plan(1).tolist()) == [2, 3, 4, 6]


def test_negative_delta_clamped_and_counted_in_the_row():
    sel = make(["a", "b", "c", "d"], ["t"] * 4, [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], rate=0.5)
    sel.bandit = ScriptedBandit([0, 1, 0], 2)
    step(sel, 1, {1: 1.0}, delta=-1.0, grad=[1.0, 0.0])       # the step raised the loss
    step(sel, 2, {3: 1.0}, delta=4.0, grad=[1.0, 1.0])
    # round 3 revisits cluster 0: d_ref = -1, d_prev = 4, cos([1,0],[1,1]) = 1/sqrt 2
    # c = sqrt(max(-1,0)*4)*cos = 0; denominator -1+4-0 = 3; beta = 4/3 -> 1; D = 1*(-1) = -1
    # cluster 0 by IDU: idx1 0.9*1.0 + 0.1*2.0 = 1.1 (round 1), idx0 1.0 -> idx1;
    # lr 0.5: U_hat = 2.0 - 0.5*(-1) = 2.5; IDU1 = 0.9*2.5 + 0.1*1.1 = 2.25 + 0.11 = 2.36
    row = step(sel, 3, {1: 2.0}, lr=0.5, delta=1.0, grad=[0.0, 1.0])
    assert row["rule"] == "mix" and row["clamped"] == 1
    assert row["beta"] == 1.0 and row["D"] == pytest.approx(-1.0)
    assert sel.idu[1] == pytest.approx(2.36)


def test_first_visit_correction_is_previous_delta_in_row():
    sel = make(["a", "b", "c", "d"], ["t"] * 4, [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], rate=0.5)
    sel.bandit = ScriptedBandit([1, 0], 2)
    step(sel, 1, {3: 1.0}, delta=2.5, grad=[1.0])
    # round 2 visits cluster 0 for the first time: D = delta_1 = 2.5; lr 0.2 -> 0.5
    # idx1 (u0 2): IDU = 0.9*(1.0-0.5) + 0.1*2 = 0.45 + 0.2 = 0.65
    row = step(sel, 2, {1: 1.0}, lr=0.2, delta=3.0, grad=[1.0])
    assert (row["rule"], row["beta"], row["cos_phi"]) == ("first_visit", None, None)
    assert row["D"] == pytest.approx(2.5)
    assert sel.idu[1] == pytest.approx(0.65)


def test_observe_without_plan_raises():
    sel = make(["a"], ["t"], [1.0], [0], rate=1.0)
    with pytest.raises(RuntimeError):
        sel.observe(np.array([0]), np.array([1.0]), stats_for([0]))


# ---------------------------------------------------------------- ablations

def test_no_idu_ablation_raw_loss_no_correction():
    sel = make(["a", "b", "c", "d"], ["t"] * 4, [4.0, 3.0, 2.0, 1.0], [0] * 4, rate=0.5, idu=False)
    # round 1: IDU = raw loss (b = 0.1 is ignored): [1.0, 2.5]; reward = mean(4-1, 3-2.5) = 1.75
    r1 = step(sel, 1, {0: 1.0, 1: 2.5}, lr=0.5, delta=4.0, grad=None)
    assert r1["D"] == 0 and r1["beta"] is None and r1["cos_phi"] is None
    assert r1["reward"] == pytest.approx(1.75)
    assert sel.idu.tolist() == [1.0, 2.5, 2.0, 1.0]
    # round 2: idx1 (2.5), idx2 (2.0); D stays 0 although delta_1 = 4 and lr 0.5 (no -lr*D)
    # reward = mean(2.5-0.5, 2.0-3.0) = mean(2, -1) = 0.5
    r2 = step(sel, 2, {1: 0.5, 2: 3.0}, lr=0.5, delta=9.0, grad=None)
    assert r2["D"] == 0 and r2["beta"] is None
    assert r2["reward"] == pytest.approx(0.5)
    assert sel.idu.tolist() == [1.0, 0.5, 3.0, 1.0]


def test_no_task_ablation_one_stratum_per_cluster():
    # one cluster: task x = idx0..3 (4), task y = idx4..5 (2); u0 [9, 2, 3, 1 | 8, 7]; rate 0.3
    ids, src, u0 = list("abcdef"), ["x", "x", "x", "x", "y", "y"], [9.0, 2.0, 3.0, 1.0, 8.0, 7.0]
    # stratified: x takes ceil(1.2) = 2 -> idx0, idx2; y takes ceil(0.6) = 1 -> idx4
    sel = make(ids, src, u0, [0] * 6, rate=0.3)
    assert step(sel, 1, {0: 1.0, 2: 1.0, 4: 1.0})["tasks"] == {"x": 2, "y": 1}
    # unstratified: ceil(0.3*6) = ceil(1.8) = 2 over the whole cluster -> idx0 (9), idx4 (8)
    sel = make(ids, src, u0, [0] * 6, rate=0.3, stratify=False)
    assert step(sel, 1, {0: 1.0, 4: 1.0})["tasks"] == {"all": 2}


# ---------------------------------------------------------------- softmax sampling

def softmax_pool(seed, **kw):
    ids = [f"s{i:02d}" for i in range(20)]
    u0 = np.linspace(0.0, 3.0, 20)
    return make(ids, ["t"] * 20, u0, [0] * 10 + [1] * 10, rate=0.3, seed=seed, sampling="softmax", **kw)


def test_softmax_same_seed_same_picks_distinct_members_of_the_arm():
    a, b = softmax_pool(3), softmax_pool(3)
    for t in range(1, 6):
        pa, pb = a.plan(t), b.plan(t)
        assert pa.tolist() == pb.tolist()
        # ceil(0.3*10) = 3 distinct members of one cluster
        assert len(pa) == 3 and len(set(pa.tolist())) == 3
        assert len(set(a.cluster[pa].tolist())) == 1
        assert (a.usage.times_used[pa] < a.cfg.max_uses).all()
        losses = np.asarray(a.idu[pa]) * 0.5
        ra = a.observe(pa, losses, stats_for(pa, delta=0.3, grad=[1.0, float(t)]))
        rb = b.observe(pb, losses, stats_for(pb, delta=0.3, grad=[1.0, float(t)]))
        assert ra == rb
        assert ra["arm"] == int(a.cluster[pa[0]])


def test_softmax_tiny_temperature_is_topk():
    # exp(IDU/tau) with tau -> 0 puts all the mass on the highest IDU: the top-3 of the arm
    sel = softmax_pool(0, temperature=1e-6)
    plan = sel.plan(1)
    arm = int(sel.cluster[plan[0]])
    # u0 increases with the index: cluster 0's top 3 = idx 7, 8, 9; cluster 1's = 17, 18, 19
    assert sorted(plan.tolist()) == ([7, 8, 9] if arm == 0 else [17, 18, 19])


def test_softmax_pick_frequency_follows_exp_idu():
    # two samples, one pick: P(idx0) = e^ln3 / (e^ln3 + e^0) = 3/4 (tau = 1)
    hits = 0
    n = 1000
    for seed in range(n):
        sel = make(["a", "b"], ["t", "t"], [math.log(3.0), 0.0], [0, 0], rate=0.5, seed=seed,
                   sampling="softmax")
        hits += int(sel.plan(1)[0] == 0)
    # binomial sd = sqrt(0.75*0.25/1000) = 0.0137; allow 5 sd
    assert abs(hits / n - 0.75) < 0.07


# ---------------------------------------------------------------- state round trip

def feed(sel, t, plan):
    losses = 0.5 * sel.idu[plan] + 0.01 * plan
    lrs = 1e-3 * (1.0 + np.arange(len(plan)))
    st = RoundStats(sample_lrs=lrs, delta=0.5 * t - 0.7, grad_sum=np.array([float(t), 1.0, (-1.0) ** t]), n_steps=2)
    return sel.observe(plan, losses, st)


@pytest.mark.parametrize("bandit", ["exp3", "ucb1", "thompson"])
@pytest.mark.parametrize("sampling", ["topk", "softmax"])
def test_state_round_trip_continues_identically(bandit, sampling):
    ids = [f"s{i:02d}" for i in range(24)]
    src = ["x", "y"] * 12
    u0 = np.random.default_rng(7).uniform(0.5, 3.0, 24)
    clusters = np.repeat([0, 1, 2], 8)

    def fresh():
        return make(ids, src, u0, clusters, rate=0.25, max_uses=2, rounds=10, seed=11, bandit=bandit,
                    sampling=sampling)

    sel = fresh()
    for t in (1, 2):
        feed(sel, t, sel.plan(t))
    snap = copy.deepcopy(sel.state_dict())
    other = fresh()
    other.load_state_dict(snap)
    for t in (3, 4, 5):
        pa, pb = sel.plan(t), other.plan(t)
        assert pa is not None and pa.tolist() == pb.tolist()
        assert feed(sel, t, pa) == feed(other, t, pb)
    ca, cb = sel.columns(), other.columns()
    for k in ("cluster", "idu", "times_used", "first_round"):
        np.testing.assert_array_equal(ca[k], cb[k])


# ---------------------------------------------------------------- columns

def test_columns_before_and_after():
    sel = make(["a", "b", "c"], ["t"] * 3, [1.0, 3.0, 2.0], [0, 1, 1], rate=0.5)
    cols = sel.columns()
    assert cols["cluster"].tolist() == [0, 1, 1]
    assert cols["times_used"].tolist() == [0, 0, 0]
    assert cols["first_round"].tolist() == [-1, -1, -1]
    np.testing.assert_allclose(cols["idu"], [1.0, 3.0, 2.0])
    sel.bandit = ScriptedBandit([1], 2)
    # cluster 1 = idx1, idx2: ceil(0.5*2) = 1 -> idx1 (3.0); IDU = 0.9*2 + 0.3 = 2.1
    step(sel, 1, {1: 2.0})
    cols = sel.columns()
    assert cols["times_used"].tolist() == [0, 1, 0]
    assert cols["first_round"].tolist() == [-1, 1, -1]
    np.testing.assert_allclose(cols["idu"], [1.0, 2.1, 2.0], rtol=1e-6)


def test_requires_u0():
    with pytest.raises(ValueError):
        LeadSelector(PoolView(["a"], ["t"], {}), LeadConfig(), np.array([0]), 1, 1, 0)
