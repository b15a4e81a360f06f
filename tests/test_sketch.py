"""The CountSketch of LEAD's reference gradients (leadsel.select.sketch) and its use by the selector."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from leadsel.config import BanditConfig, LeadConfig
from leadsel.select import sketch as sketch_mod
from leadsel.select.base import PoolView, RoundStats
from leadsel.select.lead import LeadSelector
from leadsel.select.sketch import CountSketch, splitmix64

M64 = 2**64 - 1


def reference_hash(i: int, seed: int, dim: int) -> tuple[int, float]:
    """h(i), s(i) with Python integers, written from the definition in the module's docstring."""
    def mix(x):
        z = (x + 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    z = mix(i ^ mix(seed))
    return z % dim, (-1.0 if z >> 63 else 1.0)


def test_splitmix64_matches_the_published_generator():
    # splitmix64 seeded with 0: its first two outputs (Vigna's reference implementation)
    out = splitmix64(np.array([0, 0x9E3779B97F4A7C15], dtype=np.uint64))
    assert [int(v) for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_one_coordinate_lands_in_its_bucket_with_its_sign():
    sk = CountSketch(16, seed=5)
    for i in (0, 7, 1000):
        x = np.zeros(1001)
        x[i] = 2.5
        h, s = reference_hash(i, 5, 16)
        expected = np.zeros(16, dtype=np.float32)
        expected[h] = s * 2.5
        np.testing.assert_array_equal(sk(x), expected)


def test_sketch_is_linear_and_the_same_in_any_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5000), rng.normal(size=5000)
    sk = CountSketch(64, seed=1)
    np.testing.assert_allclose(sk(2.0 * x - 3.0 * y), 2.0 * sk(x) - 3.0 * sk(y), rtol=1e-5, atol=1e-4)
    whole = sk(x)
    monkeypatch.setattr(sketch_mod, "CHUNK", 333)
    np.testing.assert_array_equal(sk(x), whole)
    assert not np.array_equal(CountSketch(64, seed=2)(x), whole)  # the seed changes the hash


def test_inner_product_is_unbiased_within_its_variance_bound():
    # over 400 seeds: mean <Sx,Sy> is <x,y> within 4 standard errors, and the spread is no more
    # than the bound (|x|^2|y|^2 + <x,y>^2)/dim
    rng = np.random.default_rng(3)
    x = rng.normal(size=2000)
    y = 0.6 * x + 0.8 * rng.normal(size=2000)
    dim, seeds = 64, 400
    est = np.array([float(np.dot(*(CountSketch(dim, s)(v).astype(np.float64) for v in (x, y))))
                    for s in range(seeds)])
    exact = float(x @ y)
    bound = (float(x @ x) * float(y @ y) + exact**2) / dim
    assert abs(est.mean() - exact) < 4 * math.sqrt(bound / seeds)
    assert est.var() < 1.2 * bound
    assert est.var() > 0.5 * bound  # and the bound is close: the estimate is not exact


def test_dimension_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        CountSketch(0, 1)


# ---------------------------------------------------------------------------------------------- selector
def selector(sketch_dim, seed=11):
    ids = [f"s{i:02d}" for i in range(24)]
    cfg = LeadConfig(bandit=BanditConfig(name="ucb1"), rate=0.25, max_uses=2, gradient_sketch=sketch_dim)
    view = PoolView(ids, ["x", "y"] * 12, {"u0": np.random.default_rng(7).uniform(0.5, 3.0, 24)})
    return LeadSelector(view, cfg, np.repeat([0, 1, 2], 8), 1000, 10, seed)


def gradient(t, dim=3000):
    """Round t's summed gradient: a shared direction plus a round-specific one (cosines ~0.5)."""
    return np.random.default_rng(100).normal(size=dim) + np.random.default_rng(t).normal(size=dim)


def feed(sel, t, grad_dim=3000):
    plan = sel.plan(t)
    losses = 0.5 * sel.idu[plan] + 0.01 * plan
    st = RoundStats(sample_lrs=np.full(len(plan), 1e-3), delta=0.3 + 0.1 * t, grad_sum=gradient(t, grad_dim),
                    n_steps=2)
    return plan, sel.observe(plan, losses, st)


def test_sketched_selector_keeps_sketches_and_reads_cosines_close_to_exact():
    exact, sketched = selector(0), selector(1024)
    tol = 5 * math.sqrt(2 / 1024)
    for t in range(1, 7):
        pe, re = feed(exact, t)
        ps, rs = feed(sketched, t)
        assert pe.tolist() == ps.tolist()  # same arms and samples: the cosines moved D only slightly
        assert re["arm"] == rs["arm"]
        if re["cos_phi"] is not None:
            assert abs(re["cos_phi"] - rs["cos_phi"]) < tol
            assert re["D"] == pytest.approx(rs["D"], rel=0.05)
    assert {len(v) for v in sketched.ref_grad.values()} == {1024}
    assert {len(v) for v in exact.ref_grad.values()} == {3000}
    assert {len(v) for v in sketched.state_dict()["ref_grad"].values()} == {1024}
    np.testing.assert_allclose(sketched.cos_prev, exact.cos_prev, atol=tol)


def test_gradients_no_longer_than_the_sketch_are_kept_exact():
    sel = selector(4096)
    feed(sel, 1)
    np.testing.assert_array_equal(next(iter(sel.ref_grad.values())), gradient(1).astype(np.float32))


def test_an_exact_checkpoint_is_sketched_when_loaded():
    # a state written with exact vectors (before sketches, or gradient_sketch 0) resumes sketched:
    # exactly as if the run had sketched from the start, since the sketch is linear and seeded
    exact, sketched = selector(0), selector(1024)
    for t in (1, 2, 3):
        feed(exact, t)
        feed(sketched, t)
    resumed = selector(1024)
    resumed.load_state_dict(copy.deepcopy(exact.state_dict()))
    assert resumed.ref_grad.keys() == sketched.ref_grad.keys()
    for k in resumed.ref_grad:
        np.testing.assert_allclose(resumed.ref_grad[k], sketched.ref_grad[k], rtol=1e-6, atol=1e-5)
    _, a = feed(resumed, 4)
    _, b = feed(sketched, 4)
    assert a["arm"] == b["arm"] and a["cos_phi"] == pytest.approx(b["cos_phi"], abs=1e-6)


def test_a_sketched_checkpoint_refuses_the_exact_reading():
    sketched = selector(1024)
    for t in (1, 2):
        feed(sketched, t)
    exact = selector(0)
    exact.load_state_dict(copy.deepcopy(sketched.state_dict()))
    with pytest.raises(ValueError, match="gradient_sketch"):
        feed(exact, 3)


def test_sketch_seed_follows_the_run_seed():
    a, b, c = selector(64, seed=1), selector(64, seed=1), selector(64, seed=2)
    x = gradient(1)
    np.testing.assert_array_equal(a.sketch(x), b.sketch(x))
    assert not np.array_equal(a.sketch(x), c.sketch(x))
