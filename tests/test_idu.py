"""IDU building blocks (leadsel.select.idu, docs/algorithms.md §1.3 and §1.2.5).

Every expected number is a literal worked out by hand from the spec's formulas; the comment above
each assertion shows the arithmetic. Notation: a = d_ref, b = d_prev, c = sqrt(max(a,0) max(b,0)) cos.

    beta* = (b - c) / (a + b - 2c), clipped to [0, 1], denominator 0 -> 0
    D     = beta^2 a + (1 - beta)^2 b + 2 beta (1 - beta) c
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from leadsel.select.idu import (
    RewardScale,
    beta_star,
    correction,
    cosine,
    mixed_D,
    updated_idu,
)

# ---------------------------------------------------------------- beta* and D

def test_beta_star_zero_at_the_lower_edge():
    # a=4, b=1, cos=0.5: c = sqrt(4*1)*0.5 = 1; beta = (1-1)/(4+1-2) = 0/3 = 0
    beta, clamped = beta_star(4.0, 1.0, 0.5)
    assert beta == 0.0 and clamped == 0
    # D(0) = 0*4 + 1*1 + 0 = 1 = d_prev
    assert mixed_D(4.0, 1.0, 0.5, 0.0) == pytest.approx(1.0)


def test_beta_star_interior_orthogonal():
    # a=1, b=4, cos=0: c = 0; beta = 4/(1+4) = 0.8
    beta, clamped = beta_star(1.0, 4.0, 0.0)
    assert beta == pytest.approx(0.8) and clamped == 0
    # D = 0.64*1 + 0.04*4 + 0 = 0.64 + 0.16 = 0.8
    assert mixed_D(1.0, 4.0, 0.0, 0.8) == pytest.approx(0.8)


def test_beta_star_interior_with_cosine():
    # a=4, b=9, cos=1/3: c = sqrt(36)/3 = 2; beta = (9-2)/(4+9-4) = 7/9
    beta, clamped = beta_star(4.0, 9.0, 1.0 / 3.0)
    assert beta == pytest.approx(7.0 / 9.0) and clamped == 0
    # D = 49/81*4 + 4/81*9 + 2*(7/9)*(2/9)*2 = (196 + 36 + 56)/81 = 288/81 = 32/9
    assert mixed_D(4.0, 9.0, 1.0 / 3.0, 7.0 / 9.0) == pytest.approx(32.0 / 9.0)
    # swapping the roles of the two deltas swaps beta: (4-2)/9 = 2/9
    assert beta_star(9.0, 4.0, 1.0 / 3.0)[0] == pytest.approx(2.0 / 9.0)


def test_beta_star_minimises_D_on_a_grid():
    # the interior beta of the previous test is the minimum of D over [0, 1] (D is convex here:
    # a + b - 2c = 9 > 0); D(7/9) = 32/9 = 3.5556 and D(0) = 9, D(1) = 4, D(0.5) = 1+2.25+1 = 4.25
    assert mixed_D(4.0, 9.0, 1.0 / 3.0, 0.0) == pytest.approx(9.0)
    assert mixed_D(4.0, 9.0, 1.0 / 3.0, 1.0) == pytest.approx(4.0)
    assert mixed_D(4.0, 9.0, 1.0 / 3.0, 0.5) == pytest.approx(4.25)
    for beta in np.linspace(0.0, 1.0, 101):
        assert mixed_D(4.0, 9.0, 1.0 / 3.0, float(beta)) >= 32.0 / 9.0 - 1e-12


def test_mixed_D_given_beta():
    # a=4, b=9, cos=0.5, beta=0.5: c = 6*0.5 = 3; D = 0.25*4 + 0.25*9 + 2*0.25*3 = 1 + 2.25 + 1.5 = 4.75
    assert mixed_D(4.0, 9.0, 0.5, 0.5) == pytest.approx(4.75)
    # beta=1 -> D = d_ref; beta=0 -> D = d_prev
    assert mixed_D(4.0, 9.0, 0.5, 1.0) == pytest.approx(4.0)
    assert mixed_D(4.0, 9.0, 0.5, 0.0) == pytest.approx(9.0)


def test_beta_star_clipped_above_one():
    # a=1, b=9, cos=0.5: c = 3*0.5 = 1.5; (9-1.5)/(10-3) = 7.5/7 > 1 -> 1
    beta, clamped = beta_star(1.0, 9.0, 0.5)
    assert beta == 1.0 and clamped == 0
    # D(1) = d_ref = 1
    assert mixed_D(1.0, 9.0, 0.5, beta) == pytest.approx(1.0)


def test_beta_star_clipped_below_zero():
    # a=9, b=1, cos=0.5: c = 1.5; (1-1.5)/(10-3) = -0.5/7 < 0 -> 0
    beta, clamped = beta_star(9.0, 1.0, 0.5)
    assert beta == 0.0 and clamped == 0
    assert mixed_D(9.0, 1.0, 0.5, beta) == pytest.approx(1.0)


def test_beta_star_zero_denominator():
    # a=b=1, cos=1: c = 1; denominator 1+1-2 = 0 -> beta 0
    assert beta_star(1.0, 1.0, 1.0) == (0.0, 0)
    # a=b=0: c = 0; denominator 0 -> beta 0 (and D = 0)
    assert beta_star(0.0, 0.0, 0.3) == (0.0, 0)
    assert mixed_D(0.0, 0.0, 0.3, 0.0) == 0.0


def test_negative_delta_clamped_inside_sqrt_and_counted():
    # a=-1, b=4, cos=0.5: c = sqrt(max(-1,0)*4)*0.5 = 0; denominator -1+4-0 = 3;
    # (4-0)/3 = 4/3 -> clipped 1; one delta clamped
    beta, clamped = beta_star(-1.0, 4.0, 0.5)
    assert beta == 1.0 and clamped == 1
    # D(1) = 1*(-1) + 0 + 0 = -1 (the delta itself is not clamped outside the root)
    assert mixed_D(-1.0, 4.0, 0.5, 1.0) == pytest.approx(-1.0)
    # a=4, b=-1: c = 0; (-1-0)/3 < 0 -> 0; clamped 1; D(0) = b = -1
    beta, clamped = beta_star(4.0, -1.0, 0.5)
    assert beta == 0.0 and clamped == 1
    assert mixed_D(4.0, -1.0, 0.5, 0.0) == pytest.approx(-1.0)
    # both negative: clamped 2; the cross term vanishes, D(0.5) = 0.25*(-1) + 0.25*(-2) = -0.75
    assert beta_star(-1.0, -2.0, 0.9)[1] == 2
    assert mixed_D(-1.0, -2.0, 0.9, 0.5) == pytest.approx(-0.75)


# ---------------------------------------------------------------- the three rules

def test_correction_round1_is_zero_even_on_first_visit():
    c = correction(1, True, 4.0, 9.0, 0.5)
    assert (c.D, c.beta, c.cos_phi, c.clamped, c.rule) == (0.0, None, None, 0, "round1")
    # round 1 ignores (and does not count) negative deltas
    c = correction(1, False, -1.0, -1.0, 0.5)
    assert (c.D, c.clamped, c.rule) == (0.0, 0, "round1")


def test_correction_first_visit_uses_previous_delta():
    # first visit at round > 1: D = d_prev = 2.5 (d_ref and cos are irrelevant)
    c = correction(2, True, math.nan, 2.5, math.nan)
    assert (c.D, c.beta, c.cos_phi, c.rule) == (2.5, None, None, "first_visit")
    c = correction(7, True, 100.0, 0.25, 0.0)
    assert (c.D, c.rule) == (0.25, "first_visit")


def test_correction_mix():
    # revisit: a=1, b=4, cos=0 -> beta 0.8, D 0.8 (see test_beta_star_interior_orthogonal)
    c = correction(3, False, 1.0, 4.0, 0.0)
    assert c.rule == "mix" and c.clamped == 0
    assert c.beta == pytest.approx(0.8) and c.D == pytest.approx(0.8) and c.cos_phi == 0.0
    # a=4, b=9, cos=1/3 -> beta 7/9, D 32/9
    c = correction(5, False, 4.0, 9.0, 1.0 / 3.0)
    assert c.beta == pytest.approx(7.0 / 9.0) and c.D == pytest.approx(32.0 / 9.0)
    assert c.cos_phi == pytest.approx(1.0 / 3.0)
    # a=-1, b=4, cos=0.5 -> beta 1, D -1, one clamped
    c = correction(2, False, -1.0, 4.0, 0.5)
    assert (c.beta, c.clamped, c.rule) == (1.0, 1, "mix") and c.D == pytest.approx(-1.0)


# ---------------------------------------------------------------- the smoothed update

def test_updated_idu_hand_values():
    prev = np.array([1.0, 2.0, 3.0])
    losses = np.array([2.0, 1.0, 0.5])
    lrs = np.array([0.1, 0.2, 0.5])
    # U_hat = L - eta*D with D=2: [2-0.2, 1-0.4, 0.5-1.0] = [1.8, 0.6, -0.5]
    # IDU = 0.9*U_hat + 0.1*prev = [1.62+0.1, 0.54+0.2, -0.45+0.3] = [1.72, 0.74, -0.15]
    out = updated_idu(prev, losses, lrs, 2.0, 0.1)
    np.testing.assert_allclose(out, [1.72, 0.74, -0.15], rtol=0, atol=1e-12)
    # b = 0 (the released code's overwrite): IDU = U_hat
    np.testing.assert_allclose(updated_idu(prev, losses, lrs, 2.0, 0.0), [1.8, 0.6, -0.5], rtol=0, atol=1e-12)
    # D = 0, b = 0.5: 0.5*L + 0.5*prev = [1.5, 1.5, 1.75]
    np.testing.assert_allclose(updated_idu(prev, losses, lrs, 0.0, 0.5), [1.5, 1.5, 1.75], rtol=0, atol=1e-12)
    # the inputs are not modified
    np.testing.assert_array_equal(prev, [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- reward normalisation

def test_reward_scale_sequence():
    s = RewardScale()
    # first reward: min = max -> 0
    assert s(2.0) == 0.0
    # 4: lo 2, hi 4 -> 2*(4-2)/2 - 1 = 1
    assert s(4.0) == pytest.approx(1.0)
    # 3: 2*(3-2)/2 - 1 = 0
    assert s(3.0) == pytest.approx(0.0)
    # 0: lo 0, hi 4 -> 2*0/4 - 1 = -1
    assert s(0.0) == pytest.approx(-1.0)
    # 1: 2*1/4 - 1 = -0.5
    assert s(1.0) == pytest.approx(-0.5)


def test_reward_scale_all_negative_rewards():
    s = RewardScale()
    # -3 -> 0; -1: lo -3, hi -1 -> 2*(-1+3)/2 - 1 = 1; -2: 2*1/2 - 1 = 0; -5: lo -5 -> 2*0/4 - 1 = -1
    assert s(-3.0) == 0.0
    assert s(-1.0) == pytest.approx(1.0)
    assert s(-2.0) == pytest.approx(0.0)
    assert s(-5.0) == pytest.approx(-1.0)


def test_reward_scale_repeated_equal_rewards_stay_zero():
    s = RewardScale()
    assert [s(0.7), s(0.7), s(0.7)] == [0.0, 0.0, 0.0]


def test_reward_scale_state_round_trip():
    a = RewardScale()
    a(2.0), a(4.0)
    b = RewardScale()
    b.load_state_dict(dict(a.state_dict()))
    # both continue identically: 3 -> 0, 0 -> -1, 5 -> 2*(5-0)/5 - 1 = 1
    for r, want in [(3.0, 0.0), (0.0, -1.0), (5.0, 1.0)]:
        assert a(r) == pytest.approx(want) and b(r) == pytest.approx(want)
    # a fresh scale's state (infinite bounds) also round-trips
    c, d = RewardScale(), RewardScale()
    d.load_state_dict(c.state_dict())
    assert d(1.5) == 0.0


# ---------------------------------------------------------------- cosine

def test_cosine():
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 0.0
    assert cosine(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 2.0]), np.array([-2.0, -4.0])) == pytest.approx(-1.0)
    # [1,0].[1,1] / (1 * sqrt 2) = 1/sqrt 2
    assert cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1.0 / math.sqrt(2.0))
    # [3,4,0].[1,0,0] / 5 = 0.6
    assert cosine(np.array([3, 4, 0], dtype=np.float32), np.array([1.0, 0.0, 0.0])) == pytest.approx(0.6)
    # a zero vector has no direction: 0
    assert cosine(np.zeros(3), np.array([1.0, 2.0, 3.0])) == 0.0
    assert cosine(np.array([1.0, 2.0, 3.0]), np.zeros(3)) == 0.0


def test_beta_star_concave_case_takes_the_better_endpoint():
    # d_ref = -1, d_prev = 0.5, cos 1: cross = sqrt(0 * 0.5) * 1 = 0, denom = -1 + 0.5 - 0 = -0.5 < 0:
    # D(beta) = beta^2 (-1) + (1 - beta)^2 0.5 is concave; D(0) = 0.5, D(1) = -1 -> beta = 1
    beta, clamped = beta_star(-1.0, 0.5, 1.0)
    assert beta == 1.0 and clamped == 1
    assert mixed_D(-1.0, 0.5, 1.0, beta) == -1.0
    # the mirror: d_ref = 0.5, d_prev = -1 -> D(0) = -1 is the smaller end
    assert beta_star(0.5, -1.0, 1.0) == (0.0, 1)


def test_beta_star_same_vector_up_to_rounding_is_the_zero_denominator_rule():
    # a cluster revisited right after its reference round: d_ref = d_prev = 2, cos = 1 - 3e-16
    # -> denom = 4 - 4 (1 - 3e-16) = 1.2e-15, rounding noise: beta = 0 (not (2 - 2)/1.2e-15 noise)
    assert beta_star(2.0, 2.0, 1.0 - 3e-16) == (0.0, 0)
