"""Bandits over clusters (leadsel.bandit): hand-computed values, masking, errors, state round trips.

Expected numbers are written as literals; the comment above each shows the derivation.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from leadsel.bandit import BANDITS, Bandit, make_bandit

NAMES = ["exp3", "exp3s", "ucb1", "ucb_beta", "thompson", "uniform"]
ALL3 = np.ones(3, dtype=bool)


def probs(b: Bandit, mask: np.ndarray) -> np.ndarray:
    return np.array(b.summary(mask)["arm_probs"])


def values(b: Bandit, mask: np.ndarray) -> list:
    return b.summary(mask)["arm_values"]


# ---------------------------------------------------------------- registry and construction

def test_registry_names_and_protocol():
    assert sorted(BANDITS) == sorted(NAMES)
    for name in NAMES:
        b = make_bandit(name, 4, seed=0)
        assert isinstance(b, Bandit)
        assert b.name == name and b.n_arms == 4


def test_make_bandit_unknown_name_lists_names():
    with pytest.raises(ValueError) as err:
        make_bandit("exp4", 3, seed=0)
    for name in NAMES:
        assert name in str(err.value)


def test_make_bandit_unknown_parameter_is_named():
    with pytest.raises(TypeError, match="c"):
        make_bandit("exp3", 3, seed=0, c=2.0)
    with pytest.raises(TypeError, match="temperature"):
        make_bandit("uniform", 3, seed=0, temperature=1.0)
    assert make_bandit("exp3", 3, seed=0, gamma=0.2).summary(ALL3)  # known parameter passes


@pytest.mark.parametrize("name,params", [
    ("exp3", {"gamma": 0.0}), ("exp3", {"gamma": 1.5}), ("exp3", {"gamma": -0.1}),
    ("exp3", {"gamma": float("nan")}), ("exp3", {"gamma": True}), ("exp3", {"gamma": "0.1"}),
    ("exp3s", {"alpha": -0.01}), ("exp3s", {"alpha": 1.5}), ("exp3s", {"gamma": 0.0}),
    ("ucb1", {"c": 0.0}), ("ucb1", {"c": float("inf")}), ("ucb_beta", {"beta": -1.0}),
    ("thompson", {"prior_var": 0.0}), ("thompson", {"noise_var": -1.0}),
    ("thompson", {"prior_mean": float("inf")}),
])
def test_invalid_parameters_raise(name, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        make_bandit(name, 3, seed=0, **params)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_n_arms(name):
    for n in (0, -1, 2.0):
        with pytest.raises(ValueError, match="n_arms"):
            make_bandit(name, n, seed=0)


# ---------------------------------------------------------------- masks and inputs (all classes)

@pytest.mark.parametrize("name", NAMES)
def test_all_masked_raises(name):
    b = make_bandit(name, 3, seed=0)
    with pytest.raises(ValueError, match="no arm available"):
        b.select(np.zeros(3, dtype=bool))


@pytest.mark.parametrize("name", NAMES)
def test_bad_mask_raises(name):
    b = make_bandit(name, 3, seed=0)
    for bad in (np.ones(4, dtype=bool), np.array([1, 1, 1]), np.array([0, 2])):
        with pytest.raises(ValueError, match="mask"):
            b.select(bad)


@pytest.mark.parametrize("name", NAMES)
def test_masked_arm_never_chosen(name):
    b = make_bandit(name, 4, seed=3)
    mask = np.array([True, False, True, True])
    rewards = np.random.default_rng(1)
    for _ in range(200):
        arm = b.select(mask)
        assert arm != 1
        b.update(arm, float(rewards.uniform(-1, 1)))


@pytest.mark.parametrize("name", NAMES)
def test_reward_range_checked(name):
    b = make_bandit(name, 2, seed=0)
    for bad in (1.5, -1.01, float("nan"), float("inf")):
        arm = b.select(np.ones(2, dtype=bool))
        with pytest.raises(ValueError, match="reward"):
            b.update(arm, bad)
    b.update(b.select(np.ones(2, dtype=bool)), 1.0 + 1e-12)  # float noise at the bound is clipped
    with pytest.raises(ValueError, match="arm"):
        b.update(5, 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_summary_is_json_plain(name):
    b = make_bandit(name, 3, seed=0)
    mask = np.array([True, True, False])
    for _ in range(4):
        b.update(b.select(mask), 0.25)
    s = b.summary(mask)
    key = "arm_probs" if name in ("exp3", "exp3s", "uniform") else "arm_values"
    assert list(s) == [key] and len(s[key]) == 3
    assert all(v is None or type(v) is float for v in s[key])
    assert s[key][2] in (0.0, None)  # masked arm
    json.dumps(s)


# ---------------------------------------------------------------- EXP3

def test_exp3_fresh_then_one_update():
    b = make_bandit("exp3", 3, seed=0, gamma=0.1)
    # all weights 1: p_i = 0.9 * 1/3 + 0.1/3 = 1/3
    np.testing.assert_allclose(probs(b, ALL3), [1 / 3] * 3, rtol=0, atol=1e-15)
    a = b.select(ALL3)
    b.update(a, 0.5)
    # xhat = 0.5 / (1/3) = 1.5; w_a = exp(0.1 * 1.5 / 3) = exp(0.05) = 1.0512710963760241
    # p_a = 0.9 * exp(0.05) / (exp(0.05) + 2) + 0.1/3 = 0.34341524898551873
    # p_other = 0.9 / (exp(0.05) + 2) + 0.1/3 = 0.3282923755072406
    expected = np.full(3, 0.3282923755072406)
    expected[a] = 0.34341524898551873
    np.testing.assert_allclose(probs(b, ALL3), expected, rtol=1e-12)


def test_exp3_negative_reward():
    b = make_bandit("exp3", 2, seed=5, gamma=0.2)
    a = b.select(np.ones(2, dtype=bool))
    b.update(a, -1.0)
    # p = 1/2, xhat = -2, w_a = exp(0.2 * -2 / 2) = exp(-0.2)
    # p_a = 0.8 * exp(-0.2) / (exp(-0.2) + 1) + 0.2/2 = 0.46013280215001773; p_other = 0.5398671978499824
    expected = np.full(2, 0.5398671978499824)
    expected[a] = 0.46013280215001773
    np.testing.assert_allclose(probs(b, np.ones(2, dtype=bool)), expected, rtol=1e-12)


def test_exp3_mask_probabilities_and_full_k_update():
    b = make_bandit("exp3", 3, seed=0, gamma=0.1)
    mask = np.array([True, False, True])
    # K_active = 2: p = 0.9 * 1/2 + 0.1/2 = 0.5 on arms 0 and 2, 0 on arm 1
    np.testing.assert_allclose(probs(b, mask), [0.5, 0.0, 0.5], rtol=0, atol=1e-15)
    a = b.select(mask)
    assert a in (0, 2)
    b.update(a, 1.0)
    # xhat = 1 / 0.5 = 2; the update divides by K = n_arms = 3 (not K_active): w_a = exp(0.1 * 2 / 3) = exp(1/15)
    # p_a = 0.9 * exp(1/15) / (exp(1/15) + 1) + 0.1/2 = 0.5149944469124703; p_other = 0.4850055530875297
    p = probs(b, mask)
    assert p[1] == 0.0 and p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[a] == pytest.approx(0.5149944469124703, rel=1e-12)
    assert p[2 - a] == pytest.approx(0.4850055530875297, rel=1e-12)
    chosen = {b.select(mask) for _ in range(500)}  # select without update just re-draws
    assert chosen == {0, 2}


def test_exp3_update_must_follow_select_of_that_arm():
    b = make_bandit("exp3", 3, seed=0)
    with pytest.raises(ValueError, match="select"):
        b.update(0, 0.5)  # nothing selected yet
    a = b.select(ALL3)
    with pytest.raises(ValueError, match="select"):
        b.update((a + 1) % 3, 0.5)
    b.update(a, 0.5)
    with pytest.raises(ValueError, match="select"):
        b.update(a, 0.5)  # one update per select


@pytest.mark.parametrize("name", ["exp3", "exp3s"])
def test_exp3_long_run_stays_finite(name):
    b = make_bandit(name, 4, seed=0, gamma=0.05)
    mask = np.ones(4, dtype=bool)
    for _ in range(5000):
        a = b.select(mask)
        b.update(a, 1.0 if a == 0 else -1.0)
    p = probs(b, mask)
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    assert p.min() >= 0.05 / 4 - 1e-12  # exploration floor gamma / K_active


# ---------------------------------------------------------------- EXP3.S

def test_exp3s_one_update():
    b = make_bandit("exp3s", 3, seed=0, gamma=0.1, alpha=0.01)
    np.testing.assert_allclose(probs(b, ALL3), [1 / 3] * 3, rtol=1e-12)
    a = b.select(ALL3)
    b.update(a, 0.5)
    # old weights 1, sum_j w_j = 3, share = e * 0.01 / 3 * 3 = 0.01 e
    # w_a = exp(0.05) + 0.01 e = 1.0784539146605146; w_other = 1 + 0.01 e = 1.0271828182845905
    # p_a = 0.9 * w_a / (w_a + 2 w_other) + 0.1/3 = 0.3431528129817984; p_other = 0.3284235935091008
    expected = np.full(3, 0.3284235935091008)
    expected[a] = 0.3431528129817984
    np.testing.assert_allclose(probs(b, ALL3), expected, rtol=1e-12)


def test_exp3s_alpha_zero_is_exp3():
    e3, e3s = make_bandit("exp3", 4, seed=9), make_bandit("exp3s", 4, seed=9, alpha=0.0)
    mask = np.array([True, True, False, True])
    for t in range(30):
        a = e3.select(mask)
        assert e3s.select(mask) == a
        r = float(np.sin(t + a))
        e3.update(a, r)
        e3s.update(a, r)
    np.testing.assert_allclose(probs(e3s, mask), probs(e3, mask), rtol=1e-12)


# ---------------------------------------------------------------- UCB1

def test_ucb1_untried_first_then_index():
    b = make_bandit("ucb1", 3, seed=0, c=2.0)
    b.update(0, 1.0)
    b.update(0, 0.0)
    b.update(1, 0.5)
    assert b.select(ALL3) == 2  # never pulled
    mask = np.array([True, True, False])
    # n = 3; arm 0: 0.5 + sqrt(2 ln 3 / 2) = 1.548147073968205; arm 1: 0.5 + sqrt(2 ln 3 / 1) = 1.9823038073675112
    v = values(b, mask)
    assert v[0] == pytest.approx(1.548147073968205, rel=1e-12)
    assert v[1] == pytest.approx(1.9823038073675112, rel=1e-12)
    assert v[2] is None
    assert b.select(mask) == 1
    b.update(2, -1.0)
    # n = 4; arm 0: 0.5 + sqrt(ln 4) = 1.6774100225154747; arm 1: 0.5 + sqrt(2 ln 4) = 2.1651092223153956;
    # arm 2: -1 + sqrt(2 ln 4) = 0.6651092223153954
    assert values(b, ALL3) == pytest.approx([1.6774100225154747, 2.1651092223153956, 0.6651092223153954], rel=1e-12)


def test_ucb1_ties_and_untried_lowest_index():
    b = make_bandit("ucb1", 4, seed=0)
    assert b.select(np.array([False, True, True, True])) == 1  # several untried: lowest available
    assert values(b, np.ones(4, dtype=bool)) == [None] * 4
    for arm in range(4):
        b.update(arm, 0.5)
    assert b.select(np.ones(4, dtype=bool)) == 0  # all equal -> lowest index
    assert b.select(np.array([False, False, True, True])) == 2


# ---------------------------------------------------------------- UCB-beta

def test_ucb_beta_mean_plus_std():
    b = make_bandit("ucb_beta", 2, seed=0, beta=1.0)
    both = np.ones(2, dtype=bool)
    assert b.select(both) == 0
    b.update(0, 1.0)
    b.update(0, 0.0)
    assert b.select(both) == 1  # arm 1 untried
    b.update(1, 0.5)
    # arm 0: mean 0.5, population std of [1, 0] = 0.5 -> 1.0; arm 1: 0.5 + 0 = 0.5
    assert values(b, both) == [1.0, 0.5]
    assert b.select(both) == 0
    b2 = make_bandit("ucb_beta", 2, seed=0, beta=2.0)
    for arm, r in [(0, 1.0), (0, 0.0), (1, 0.5)]:
        b2.update(arm, r)
    assert values(b2, both) == [1.5, 0.5]  # 0.5 + 2 * 0.5


def test_ucb_beta_constant_rewards_have_no_bonus():
    b = make_bandit("ucb_beta", 2, seed=0)
    for _ in range(3):
        b.update(0, 0.1)
    b.update(1, -0.3)
    b.update(1, 0.3)
    # arm 0: mean 0.1, std 0; arm 1: mean 0, std 0.3
    assert values(b, np.ones(2, dtype=bool)) == pytest.approx([0.1, 0.3], abs=1e-12)


# ---------------------------------------------------------------- Thompson

def test_thompson_posterior():
    b = make_bandit("thompson", 3, seed=0, prior_mean=0.0, prior_var=1.0, noise_var=0.25)
    b.update(0, 1.0)
    b.update(0, 0.5)
    b.update(1, -1.0)
    mean, precision = b.posterior()
    # arm 0: precision = 1 + 2/0.25 = 9, mean = (0 + 1.5/0.25)/9 = 6/9
    # arm 1: precision = 1 + 4 = 5, mean = (-1/0.25)/5 = -0.8; arm 2: prior, precision 1, mean 0
    np.testing.assert_allclose(precision, [9.0, 5.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(mean, [0.6666666666666666, -0.8, 0.0], rtol=1e-15)
    assert values(b, np.array([True, True, False])) == pytest.approx([0.6666666666666666, -0.8, None])


def test_thompson_prior_parameters():
    b = make_bandit("thompson", 2, seed=0, prior_mean=0.5, prior_var=2.0, noise_var=0.25)
    b.update(0, 1.0)
    b.update(0, 0.5)
    mean, precision = b.posterior()
    # arm 0: precision = 1/2 + 8 = 8.5, mean = (0.5/2 + 6) / 8.5 = 0.7352941176470589; arm 1: prior (0.5, 0.5)
    np.testing.assert_allclose(precision, [8.5, 0.5], rtol=1e-15)
    np.testing.assert_allclose(mean, [0.7352941176470589, 0.5], rtol=1e-15)


def test_thompson_prefers_clear_winner_and_draws_independent_of_mask():
    b = make_bandit("thompson", 2, seed=0)
    for _ in range(100):
        b.update(0, 1.0)
        b.update(1, -1.0)
    # means +-400/401, sd 1/sqrt(401) ~ 0.05: arm 1 winning is a ~28-sigma event
    assert all(b.select(np.ones(2, dtype=bool)) == 0 for _ in range(200))
    x, y = make_bandit("thompson", 4, seed=11), make_bandit("thompson", 4, seed=11)
    x.select(np.ones(4, dtype=bool))
    y.select(np.array([False, True, False, False]))
    assert x.state_dict()["rng"] == y.state_dict()["rng"]


# ---------------------------------------------------------------- uniform

def test_uniform_over_available():
    b = make_bandit("uniform", 4, seed=0)
    mask = np.array([True, False, True, True])
    assert probs(b, mask).tolist() == [1 / 3, 0.0, 1 / 3, 1 / 3]
    assert {b.select(mask) for _ in range(300)} == {0, 2, 3}
    assert probs(b, np.zeros(4, dtype=bool)).tolist() == [0.0] * 4


# ---------------------------------------------------------------- state round trip

def _play(b: Bandit, rounds: range) -> list:
    """Select/update for the given rounds (arm 3 exhausted from round 4 on); log choices and summaries."""
    log = []
    for t in rounds:
        mask = np.array([True, True, True, t < 4])
        arm = b.select(mask)
        b.update(arm, float(np.cos(1.7 * t + arm)))  # deterministic rewards in [-1, 1]
        log.append((arm, b.summary(mask)))
    return log


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_through_json(name):
    a = make_bandit(name, 4, seed=7)
    _play(a, range(6))
    state = json.loads(json.dumps(a.state_dict()))
    b = make_bandit(name, 4, seed=12345)  # another seed: the generator state must come from the snapshot
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert _play(b, range(6, 40)) == _play(a, range(6, 40))


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_between_select_and_update(name):
    a = make_bandit(name, 4, seed=2)
    _play(a, range(3))
    arm = a.select(np.ones(4, dtype=bool))
    b = make_bandit(name, 4, seed=0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    a.update(arm, -0.5)
    b.update(arm, -0.5)  # exp3/exp3s: the pending (arm, p) travelled with the state
    assert _play(b, range(3, 30)) == _play(a, range(3, 30))


def test_load_state_mismatch_raises():
    state = make_bandit("exp3", 3, seed=0).state_dict()
    with pytest.raises(ValueError):
        make_bandit("exp3s", 3, seed=0).load_state_dict(state)
    with pytest.raises(ValueError):
        make_bandit("exp3", 4, seed=0).load_state_dict(state)
    with pytest.raises(ValueError):
        make_bandit("exp3", 3, seed=0, gamma=0.2).load_state_dict(state)
