"""Multi-armed bandits over clusters, for iterative data selection (LEAD).

The pool is partitioned into clusters (arms). Each round the selection method asks the bandit for
one arm with ``select(mask)``, trains on a batch drawn from that cluster and reports the outcome
with ``update(arm, reward)``. Rewards arrive already normalised to [-1, 1] by the caller (LEAD
normalises its utility signal before handing it over); the bandits rely on that bound (EXP3's
importance-weighted estimate r / p stays within K / gamma only then) and reject values outside it.

Every class implements :class:`Bandit`:

* ``select(mask) -> int``: ``mask`` is ``bool[n_arms]``, True = available (cluster not exhausted).
  Everything is computed over available arms only; masked arms have probability 0 and are never
  chosen. ``ValueError`` if no arm is available.
* ``update(arm, reward)``: record the reward of a pull.
* ``summary(mask) -> dict``: ``{"arm_probs": [...]}`` for probabilistic bandits (exp3, exp3s,
  uniform; masked arms get 0.0) or ``{"arm_values": [...]}`` for index bandits (ucb1, ucb_beta:
  the index; thompson: the posterior mean). A value is None for a masked arm and for a never-pulled
  UCB arm (its index is infinite). Plain floats, JSON-serialisable.
* ``state_dict()`` / ``load_state_dict(state)``: a JSON-serialisable snapshot, generator state
  included; a fresh instance loaded from it makes exactly the same future choices.

Each bandit takes ``n_arms, seed`` plus its own parameters and draws all randomness from its own
``np.random.default_rng(seed)``. Build one by name with :func:`make_bandit` (registry ``BANDITS``).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .numeric import as_real, is_int

_TOL = 1e-9  # rewards this far outside [-1, 1] (float noise) are clipped, further ones rejected


@runtime_checkable
class Bandit(Protocol):
    name: str
    n_arms: int

    def select(self, mask: np.ndarray) -> int: ...
    def update(self, arm: int, reward: float) -> None: ...
    def summary(self, mask: np.ndarray) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def _param(value: Any, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float, checked to lie in the interval (lo_open/hi_open: exclusive ends)."""
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    v = as_real(value)
    if not (math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def exp3_gamma(n_arms: int, rounds: int) -> float:
    """EXP3's exploration rate for K arms over R rounds (Auer et al. 2002, Corollary 3.2 with the
    horizon as the bound on the total reward): min(1, sqrt(K ln K / ((e - 1) R)))."""
    if n_arms < 2:
        return 1.0
    return min(1.0, math.sqrt(n_arms * math.log(n_arms) / ((math.e - 1.0) * rounds)))


def ucb1_bonus(counts: np.ndarray, total: int, c: float) -> np.ndarray:
    """UCB1's exploration bonus ``sqrt(c ln(total) / n_i)`` of arms pulled ``n_i`` (``counts``)
    times out of ``total`` pulls (ClusterUCB's ucb1 policy uses it with c = 2)."""
    return np.sqrt(c * math.log(max(int(total), 1)) / counts)


def ucb_beta_bonus(std: np.ndarray, beta: float) -> np.ndarray:
    """UCB-β's bonus ``beta * std`` of each arm's (population) reward std."""
    return beta * std


class _Base:
    """Shared state (per-arm pull counts and reward sums, the generator) and input checks."""

    name = ""
    PARAMS: ClassVar[tuple[str, ...]] = ()  # constructor parameters, saved in and checked by the state
    _ARRAYS: ClassVar[tuple[str, ...]] = ("counts", "sums")  # per-arm arrays saved in the state

    def __init__(self, n_arms: int, seed: int) -> None:
        if not is_int(n_arms) or n_arms < 1:
            raise ValueError(f"n_arms must be a positive int, got {n_arms!r}")
        self.n_arms = int(n_arms)
        self.rng = np.random.default_rng(seed)
        self.counts = np.zeros(self.n_arms, dtype=np.int64)
        self.sums = np.zeros(self.n_arms)

    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def _mask(self, mask: np.ndarray, allow_empty: bool = False) -> np.ndarray:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != (self.n_arms,):
            raise ValueError(f"mask must be bool[{self.n_arms}], got {m.dtype}{list(m.shape)}")
        if not allow_empty and not m.any():
            raise ValueError("no arm available: every arm is masked")
        return m

    def update(self, arm: int, reward: float) -> None:
        if not is_int(arm) or not 0 <= arm < self.n_arms:
            raise ValueError(f"arm must be an int in [0, {self.n_arms}), got {arm!r}")
        r = float(reward)
        if not (math.isfinite(r) and -1 - _TOL <= r <= 1 + _TOL):
            raise ValueError(f"reward must be a finite number in [-1, 1] (normalised), got {reward!r}")
        self._observe(int(arm), min(max(r, -1.0), 1.0))

    def _observe(self, arm: int, r: float) -> None:
        self.counts[arm] += 1
        self.sums[arm] += r

    def state_dict(self) -> dict:
        arrays = {k: getattr(self, k).tolist() for k in self._ARRAYS}
        return {"name": self.name, "n_arms": self.n_arms, "params": self.params(), **arrays,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        mine = {"name": self.name, "n_arms": self.n_arms, "params": self.params()}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"state is for {theirs}, this bandit is {mine}")
        for key in self._ARRAYS:
            a = np.array(state[key], dtype=np.int64 if key == "counts" else np.float64)
            if a.shape != (self.n_arms,):
                raise ValueError(f"state[{key!r}] must have {self.n_arms} entries, got shape {a.shape}")
            setattr(self, key, a)
        self.rng.bit_generator.state = state["rng"]


class Exp3(_Base):
    """EXP3 (Auer et al. 2002): p_i = (1-gamma) w_i / sum_avail w + gamma / K_active.

    ``update`` must follow a ``select`` of the same arm: xhat = r / p_arm (p at that select) and
    w_arm <- w_arm * exp(gamma * xhat / K) with K = n_arms, not K_active, as in the released LEAD
    code. Weights are kept as log-weights, so they never overflow.
    """

    name = "exp3"
    PARAMS = ("gamma",)
    _ARRAYS = (*_Base._ARRAYS, "log_w")

    def __init__(self, n_arms: int, seed: int, gamma: float = 0.1) -> None:
        super().__init__(n_arms, seed)
        self.gamma = _param(gamma, "gamma", 0.0, 1.0, lo_open=True)
        self.log_w = np.zeros(self.n_arms)
        self._pending: tuple[int, float] | None = None  # (arm, p_arm) of the last select

    def probs(self, mask: np.ndarray) -> np.ndarray:
        m = self._mask(mask, allow_empty=True)
        p = np.zeros(self.n_arms)
        if m.any():
            w = np.exp(self.log_w[m] - self.log_w[m].max())
            p[m] = (1.0 - self.gamma) * w / w.sum() + self.gamma / m.sum()
        return p

    def select(self, mask: np.ndarray) -> int:
        self._mask(mask)
        p = self.probs(mask)
        arm = int(self.rng.choice(self.n_arms, p=p))
        self._pending = (arm, float(p[arm]))
        return arm

    def update(self, arm: int, reward: float) -> None:
        if self._pending is None or arm != self._pending[0]:
            last = None if self._pending is None else self._pending[0]
            raise ValueError(f"{self.name}: update({arm!r}) must follow select() of that arm (pending: {last})")
        super().update(arm, reward)

    def _observe(self, arm: int, r: float) -> None:
        super()._observe(arm, r)
        p_arm = self._pending[1]  # type: ignore[index]
        self._pending = None
        self._reweight(arm, r / p_arm)

    def _reweight(self, arm: int, xhat: float) -> None:
        self.log_w[arm] += self.gamma * xhat / self.n_arms

    def summary(self, mask: np.ndarray) -> dict:
        return {"arm_probs": self.probs(mask).tolist()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pending": None if self._pending is None else list(self._pending)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        pending = state.get("pending")
        self._pending = None if pending is None else (int(pending[0]), float(pending[1]))


class Exp3S(Exp3):
    """EXP3.S (Auer et al. 2002): EXP3 probabilities; update, for every arm i (old weights w),
    w_i <- w_i exp(gamma xhat_i / K) + (e alpha / K) sum_j w_j, xhat_i = r / p_i for the pulled arm
    and 0 otherwise, K = n_arms. Log-weights are shifted to max 0 after each update (a common
    factor: probabilities are unchanged), so they neither overflow nor drift.
    """

    name = "exp3s"
    PARAMS = ("gamma", "alpha")

    def __init__(self, n_arms: int, seed: int, gamma: float = 0.1, alpha: float = 0.01) -> None:
        super().__init__(n_arms, seed, gamma)
        self.alpha = _param(alpha, "alpha", 0.0, 1.0)

    def _reweight(self, arm: int, xhat: float) -> None:
        new = self.log_w.copy()
        new[arm] += self.gamma * xhat / self.n_arms
        if self.alpha > 0:  # log of the share term (e alpha / K) * sum_j w_j over the old weights
            new = np.logaddexp(new, math.log(math.e * self.alpha / self.n_arms) + np.logaddexp.reduce(self.log_w))
        self.log_w = new - new.max()


class _IndexBandit(_Base):
    """Pick the available arm with the highest score; ties (and several +inf) -> lowest index."""

    def _values(self) -> np.ndarray:  # per-arm value reported by summary; +inf = never pulled
        raise NotImplementedError

    def _scores(self) -> np.ndarray:  # what select maximises (thompson: a posterior draw)
        return self._values()

    def select(self, mask: np.ndarray) -> int:
        m = self._mask(mask)
        return int(np.argmax(np.where(m, self._scores(), -np.inf)))

    def summary(self, mask: np.ndarray) -> dict:
        m = self._mask(mask, allow_empty=True)
        vals = self._values().tolist()
        return {"arm_values": [v if ok and math.isfinite(v) else None for v, ok in zip(vals, m.tolist())]}


class _UCB(_IndexBandit):
    """value_i = mean_i + bonus_i for pulled arms, +inf (tried first) for never-pulled ones."""

    def _bonus(self, seen: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _values(self) -> np.ndarray:
        vals = np.full(self.n_arms, np.inf)
        seen = self.counts > 0
        vals[seen] = self.sums[seen] / self.counts[seen] + self._bonus(seen)
        return vals


class UCB1(_UCB):
    """UCB1: value_i = mean_i + sqrt(c ln(n) / n_i), n = total pulls; never-pulled arms first."""

    name = "ucb1"
    PARAMS = ("c",)

    def __init__(self, n_arms: int, seed: int, c: float = 2.0) -> None:
        super().__init__(n_arms, seed)
        self.c = _param(c, "c", 0.0, math.inf, lo_open=True, hi_open=True)

    def _bonus(self, seen: np.ndarray) -> np.ndarray:
        return ucb1_bonus(self.counts[seen], self.counts.sum(), self.c)


class UCBBeta(_UCB):
    """value_i = mean_i + beta * std_i (population std of the arm's rewards, Welford-updated
    sum of squared deviations ``m2``); never-pulled arms first."""

    name = "ucb_beta"
    PARAMS = ("beta",)
    _ARRAYS = (*_Base._ARRAYS, "m2")

    def __init__(self, n_arms: int, seed: int, beta: float = 1.0) -> None:
        super().__init__(n_arms, seed)
        self.beta = _param(beta, "beta", 0.0, math.inf, hi_open=True)
        self.m2 = np.zeros(self.n_arms)

    def _observe(self, arm: int, r: float) -> None:
        old_mean = self.sums[arm] / self.counts[arm] if self.counts[arm] else 0.0
        super()._observe(arm, r)
        self.m2[arm] += (r - old_mean) * (r - self.sums[arm] / self.counts[arm])

    def _bonus(self, seen: np.ndarray) -> np.ndarray:
        return ucb_beta_bonus(np.sqrt(np.maximum(self.m2[seen], 0.0) / self.counts[seen]), self.beta)


class Thompson(_IndexBandit):
    """Gaussian Thompson sampling with known noise variance and a N(prior_mean, prior_var) prior.

    select draws theta_i ~ N(mean_i, 1/precision_i) for all n_arms (index order, before masking,
    so the generator's advance does not depend on the mask) and takes the best available arm.
    """

    name = "thompson"
    PARAMS = ("prior_mean", "prior_var", "noise_var")

    def __init__(self, n_arms: int, seed: int, prior_mean: float = 0.0, prior_var: float = 1.0,
                 noise_var: float = 0.25) -> None:
        super().__init__(n_arms, seed)
        self.prior_mean = _param(prior_mean, "prior_mean", -math.inf, math.inf, True, True)
        self.prior_var = _param(prior_var, "prior_var", 0.0, math.inf, True, True)
        self.noise_var = _param(noise_var, "noise_var", 0.0, math.inf, True, True)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-arm posterior (mean, precision)."""
        precision = 1.0 / self.prior_var + self.counts / self.noise_var
        mean = (self.prior_mean / self.prior_var + self.sums / self.noise_var) / precision
        return mean, precision

    def _values(self) -> np.ndarray:
        return self.posterior()[0]

    def _scores(self) -> np.ndarray:
        mean, precision = self.posterior()
        return self.rng.normal(mean, 1.0 / np.sqrt(precision))


class Uniform(_Base):
    """Uniform over the available arms (the no-learning baseline)."""

    name = "uniform"

    def select(self, mask: np.ndarray) -> int:
        idx = np.flatnonzero(self._mask(mask))
        return int(idx[self.rng.integers(idx.size)])

    def summary(self, mask: np.ndarray) -> dict:
        m = self._mask(mask, allow_empty=True)
        return {"arm_probs": np.where(m, 1.0 / max(int(m.sum()), 1), 0.0).tolist()}


BANDITS: dict[str, type[_Base]] = {"exp3": Exp3, "exp3s": Exp3S, "ucb1": UCB1, "ucb_beta": UCBBeta,
                                   "thompson": Thompson, "uniform": Uniform}


def make_bandit(name: str, n_arms: int, seed: int, **params: Any) -> Bandit:
    """Build the bandit registered as ``name``; unknown name -> ValueError, unknown parameter -> TypeError."""
    if name not in BANDITS:
        raise ValueError(f"unknown bandit {name!r}; choose one of: {', '.join(BANDITS)}")
    cls = BANDITS[name]
    unknown = sorted(set(params) - set(cls.PARAMS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {', '.join(unknown)} for bandit {name!r}; "
                        f"allowed: {', '.join(cls.PARAMS) or '(none)'}")
    return cls(n_arms, seed, **params)
