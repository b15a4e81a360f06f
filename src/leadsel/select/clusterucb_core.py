"""The numpy core of ClusterUCB (arXiv 2506.10288): cold start, a bandit over clusters, and the
final top-by-reward cut (the clusters come from :mod:`.spherical_kmeans`). No torch: rewards (scores) are computed by the caller.

Algorithm
---------
1. **Clusters.** :func:`~.spherical_kmeans.spherical_kmeans` partitions the pool by the cosine
   similarity of its feature rows (e.g. LESS-projected gradients; its readings are in that module).
2. **Cold start.** :func:`cold_start` draws ``max(floor(csp * |c|), 1)`` members of every cluster
   ``c`` uniformly without replacement; the caller scores them and their rewards seed the arms.
3. **Bandit draws.** :func:`bandit_draws` further draws are made one at a time: the bandit
   (:class:`ClusterBandit`) picks an arm (cluster) among those with undrawn members, then one
   undrawn member of that cluster is drawn uniformly at random; the caller scores it (a reward in
   [-1, 1]) and feeds it back with ``update``. :func:`run_clusterucb` runs steps 2-3 end to end.
4. **Selection.** :func:`top_by_reward` keeps the ``n`` drawn samples with the highest reward
   (ClusterUCB trains on the top ``top_p * N``).

Readings chosen (where the paper / released code leave room)
-----------------------------------------------------------
* **Counts**: ``floor`` is taken with a 1e-9 tolerance (``floor(x + 1e-9)``) so that float
  representation does not lose a sample (``0.29 * 100 = 28.999999999999996`` -> 29;
  ``100 * (0.3 - 0.1) = 19.999999999999996`` -> 20).
* **Draw budget**: ``floor(N * (budget - csp))``, clipped to ``[0, number of undrawn samples]``.
  The cold start may draw a little more than ``csp * N`` (the per-cluster minimum of 1), and that
  is not subtracted: total draws = cold start + ``floor(N * (budget - csp))`` (capped at N).
* **Arm values** (``rewards[c]`` = the arm's rewards so far; ``mask`` True = available):

  - ``ucb_beta``: ``mean + beta * std`` (population std, ddof 0).
  - ``ucb1``: ``mean + sqrt(2 ln(n_total) / n_c)``, ``n_total`` = all draws so far, all arms
    (masked ones included).
  - ``thresh_hard``: share of the arm's rewards ``>= t``, ``t`` = the 0.75 quantile
    (``np.quantile``, default "linear" method) of all rewards drawn so far over all arms (masked
    ones included): the pooled top-25% threshold.
  - ``thresh_normal``: ``P(R > t)`` for ``R ~ Normal(mean, std)`` fitted to the arm's rewards
    (population std) = ``0.5 * erfc((t - mean) / (std * sqrt 2))``; if ``std == 0``: 1.0 if
    ``mean > t``, 0.5 if ``mean == t``, else 0.0.
  - Never-drawn arms: ``+inf`` under every policy (chosen first; thresh-* has no value for them).
  - **Exhausted (masked) arms: ``-inf``**, also over ``+inf``; the released code left them at 0
    and could pick (and crash on) an empty cluster. ``select`` with every arm masked raises
    ``ValueError``. Ties (several +inf included) -> lowest arm index.
* **Rewards** must be finite and in [-1, 1] (values within 1e-9 outside are clipped); ``update``
  rejects others.
* **Member draw**: uniform among the arm's undrawn members with the bandit's own generator
  (``ClusterBandit.rng``, saved in ``state_dict``); :func:`run_clusterucb` keeps each cluster's
  undrawn members in a list and removes the drawn one by swapping in the last (O(1) per draw).
* **top_by_reward**: sort by reward descending, ties by sample index ascending; ``n`` larger than
  the number drawn returns all of them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..bandit import ucb1_bonus, ucb_beta_bonus
from ..numeric import as_real, is_int
from ..rng import stream

POLICIES = ("ucb_beta", "ucb1", "thresh_hard", "thresh_normal")
THRESH_Q = 0.75  # pooled quantile defining the "top 25%" threshold of the thresh-* policies
_FLOOR_TOL = 1e-9
_REWARD_TOL = 1e-9


def _floor(x: float) -> int:
    """floor with a small tolerance against float representation (0.29 * 100 -> 29, not 28)."""
    return math.floor(x + _FLOOR_TOL)


# --------------------------------------------------------------------------- cold start, budget

def _labels(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D int array, got {lab.dtype}{list(lab.shape)}")
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be >= 0 (cluster ids 0..K-1)")
    return lab.astype(np.int64, copy=False)


def _fraction(x: Any, name: str) -> float:
    v = as_real(x)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    return v


def cold_start(labels: np.ndarray, csp: float, rng: np.random.Generator | int) -> np.ndarray:
    """From every cluster ``c`` (in increasing id), ``max(floor(csp * |c|), 1)`` members drawn
    uniformly without replacement. Returns int64 indices, grouped by cluster in draw order."""
    lab = _labels(labels)
    csp = _fraction(csp, "csp")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = []
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        m = min(max(_floor(csp * members.size), 1), members.size)
        out.append(rng.choice(members, size=m, replace=False))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def bandit_draws(n_total: int, budget: float, csp: float, n_drawn: int = 0) -> int:
    """Number of bandit draws after the cold start: ``floor(N * (budget - csp))``, never negative,
    capped by the ``n_total - n_drawn`` samples not yet drawn."""
    if not is_int(n_total) or n_total < 0 or not is_int(n_drawn) or not 0 <= n_drawn <= n_total:
        raise ValueError(f"need ints 0 <= n_drawn <= n_total, got n_total={n_total!r}, n_drawn={n_drawn!r}")
    budget, csp = _fraction(budget, "budget"), _fraction(csp, "csp")
    return int(min(max(_floor(n_total * (budget - csp)), 0), n_total - n_drawn))


# --------------------------------------------------------------------------- arm values

def _flat(rewards: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, int]:
    arms = np.concatenate([np.full(len(r), i, dtype=np.int64) for i, r in enumerate(rewards)]) \
        if len(rewards) else np.zeros(0, dtype=np.int64)
    vals = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1) for r in rewards]) \
        if len(rewards) else np.zeros(0)
    if not np.isfinite(vals).all():
        raise ValueError("rewards must be finite")
    return arms, vals, len(rewards)


def _arm_stats(arms: np.ndarray, r: np.ndarray, n_arms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-arm (count, mean, population std); mean/std are nan for never-drawn arms."""
    counts = np.bincount(arms, minlength=n_arms)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(arms, weights=r, minlength=n_arms) / counts
        dev = r - mean[arms]  # two-pass: exact for the short reward lists, no cancellation
        std = np.sqrt(np.bincount(arms, weights=dev * dev, minlength=n_arms) / counts)
    return counts, mean, std


def _values(arms: np.ndarray, r: np.ndarray, n_arms: int, policy: str, beta: float = 1.0,
            q: float = THRESH_Q) -> np.ndarray:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    counts, mean, std = _arm_stats(arms, r, n_arms)
    seen = counts > 0
    vals = np.full(n_arms, np.inf)
    if not seen.any():
        return vals
    if policy == "ucb_beta":
        vals[seen] = mean[seen] + ucb_beta_bonus(std[seen], beta)
    elif policy == "ucb1":
        vals[seen] = mean[seen] + ucb1_bonus(counts[seen], r.size, 2.0)
    else:
        t = float(np.quantile(r, q))  # default method="linear"
        if policy == "thresh_hard":
            vals[seen] = np.bincount(arms, weights=(r >= t).astype(np.float64), minlength=n_arms)[seen] / counts[seen]
        else:
            for a in np.flatnonzero(seen):
                mu, sd = float(mean[a]), float(std[a])
                if sd > 0:
                    vals[a] = 0.5 * math.erfc((t - mu) / (sd * math.sqrt(2.0)))
                else:
                    vals[a] = 1.0 if mu > t else (0.5 if mu == t else 0.0)
    return vals


def _apply_mask(vals: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return vals
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != vals.shape:
        raise ValueError(f"mask must be bool[{vals.size}] (True = available), got {m.dtype}{list(m.shape)}")
    return np.where(m, vals, -np.inf)


def arm_values(rewards: Sequence[Sequence[float]], policy: str, beta: float = 1.0,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Per-arm values under ``policy`` (one of ``POLICIES``) from each arm's reward list;
    never-drawn arms +inf, masked (``mask`` False) arms -inf."""
    arms, r, n_arms = _flat(rewards)
    return _apply_mask(_values(arms, r, n_arms, policy, beta), mask)


def ucb_beta_values(rewards: Sequence[Sequence[float]], beta: float = 1.0) -> np.ndarray:
    """mean + beta * std (population std); never-drawn arms +inf."""
    return arm_values(rewards, "ucb_beta", beta)


def ucb1_values(rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """mean + sqrt(2 ln(n_total) / n_c); never-drawn arms +inf."""
    return arm_values(rewards, "ucb1")


def thresh_hard_values(rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """Share of the arm's rewards >= the pooled 0.75 quantile (linear); never-drawn arms +inf."""
    return arm_values(rewards, "thresh_hard")


def thresh_normal_values(rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """P(R > pooled 0.75 quantile) for R ~ Normal(arm mean, arm population std); never-drawn +inf."""
    return arm_values(rewards, "thresh_normal")


def pick_arm(values: np.ndarray) -> int:
    """argmax of (already masked) values, ties -> lowest index; ValueError if all are -inf."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not (v > -np.inf).any():
        raise ValueError("no arm available: every arm is masked (all clusters exhausted)")
    return int(np.argmax(v))


# --------------------------------------------------------------------------- the bandit

class ClusterBandit:
    """ClusterUCB's bandit over ``n_arms`` clusters.

    ``select(mask) -> arm`` (mask: bool[n_arms], True = the cluster still has undrawn members),
    ``update(arm, reward)``, ``values(mask=None)``; ``rng`` (``default_rng(seed)``) is the generator
    for drawing a member of the chosen cluster. ``state_dict()`` is JSON-serialisable (rewards,
    parameters, generator state); a fresh instance loaded from it continues identically.
    """

    def __init__(self, n_arms: int, policy: str = "ucb_beta", beta: float = 1.0, seed: int = 0) -> None:
        if not is_int(n_arms) or n_arms < 1:
            raise ValueError(f"n_arms must be a positive int, got {n_arms!r}")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
        b = as_real(beta)
        if not (math.isfinite(b) and b >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.n_arms, self.policy, self.beta, self.seed = int(n_arms), policy, b, seed
        self.rng = np.random.default_rng(seed)
        self._arms = np.zeros(64, dtype=np.int64)  # growing buffer of (arm, reward) per draw
        self._r = np.zeros(64)
        self._n = 0

    @property
    def n_draws(self) -> int:
        return self._n

    def rewards(self) -> list[list[float]]:
        """Each arm's rewards in the order received."""
        out: list[list[float]] = [[] for _ in range(self.n_arms)]
        for a, r in zip(self._arms[:self._n].tolist(), self._r[:self._n].tolist()):
            out[a].append(r)
        return out

    def update(self, arm: int, reward: float) -> None:
        if not is_int(arm) or not 0 <= arm < self.n_arms:
            raise ValueError(f"arm must be an int in [0, {self.n_arms}), got {arm!r}")
        r = float(reward)
        if not (math.isfinite(r) and -1 - _REWARD_TOL <= r <= 1 + _REWARD_TOL):
            raise ValueError(f"reward must be a finite number in [-1, 1], got {reward!r}")
        if self._n == self._r.size:
            self._arms = np.concatenate([self._arms, np.zeros_like(self._arms)])
            self._r = np.concatenate([self._r, np.zeros_like(self._r)])
        self._arms[self._n], self._r[self._n] = int(arm), min(max(r, -1.0), 1.0)
        self._n += 1

    def values(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-arm values; +inf never drawn, -inf masked (``mask`` False)."""
        vals = _values(self._arms[:self._n], self._r[:self._n], self.n_arms, self.policy, self.beta)
        return _apply_mask(vals, mask)

    def select(self, mask: np.ndarray | None = None) -> int:
        """The available arm with the highest value (ties -> lowest index); ValueError if none."""
        return pick_arm(self.values(mask))

    def state_dict(self) -> dict:
        return {"n_arms": self.n_arms, "policy": self.policy, "beta": self.beta,
                "arms": self._arms[:self._n].tolist(), "rewards": self._r[:self._n].tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n_arms": self.n_arms, "policy": self.policy, "beta": self.beta}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"state is for {theirs}, this bandit is {mine}")
        arms = np.asarray(state["arms"], dtype=np.int64).reshape(-1)
        r = np.asarray(state["rewards"], dtype=np.float64).reshape(-1)
        if arms.shape != r.shape or (arms.size and (arms.min() < 0 or arms.max() >= self.n_arms)):
            raise ValueError("state['arms'] / state['rewards'] are inconsistent")
        cap = max(64, 1 << int(max(arms.size, 1) - 1).bit_length())
        self._arms = np.zeros(cap, dtype=np.int64)
        self._r = np.zeros(cap)
        self._arms[:arms.size], self._r[:r.size] = arms, r
        self._n = int(arms.size)
        self.rng.bit_generator.state = state["rng"]


# --------------------------------------------------------------------------- selection

def top_by_reward(drawn_indices: np.ndarray, rewards: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` drawn samples with the highest reward (ties -> lower sample index first), in that
    order; all of them if fewer than ``n`` were drawn."""
    idx = np.asarray(drawn_indices).reshape(-1)
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if idx.shape != r.shape:
        raise ValueError(f"drawn_indices and rewards differ in length: {idx.size} vs {r.size}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"drawn_indices must be ints, got {idx.dtype}")
    if np.unique(idx).size != idx.size:
        raise ValueError("drawn_indices contain duplicates")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite")
    if not is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    order = np.lexsort((idx, -r))
    return idx[order[:n]].astype(np.int64)


def run_clusterucb(labels: np.ndarray, reward_fn: Callable[[np.ndarray], np.ndarray], *, budget: float,
                   csp: float, policy: str = "ucb_beta", beta: float = 1.0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cold start + bandit draws over clusters ``labels`` (ids 0..K-1; arms = max id + 1).

    ``reward_fn(indices) -> rewards in [-1, 1]`` is called once with the cold-start indices, then
    once per bandit draw with one index. The cold start uses ``stream(seed, "cold-start")`` (:mod:`leadsel.rng`); the bandit
    and the member draws ``ClusterBandit(..., seed=seed)``. Returns ``(drawn indices in draw order,
    their rewards)``; take :func:`top_by_reward` of them for the training set.
    """
    lab = _labels(labels)
    n = lab.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    k = int(lab.max()) + 1
    bandit = ClusterBandit(k, policy, beta, seed)

    def score(ix: np.ndarray) -> np.ndarray:
        out = np.asarray(reward_fn(ix), dtype=np.float64).reshape(-1)
        if out.size != ix.size:
            raise ValueError(f"reward_fn returned {out.size} rewards for {ix.size} indices")
        return out

    cold = cold_start(lab, csp, stream(seed, "cold-start"))
    cold_r = score(cold)
    for i, r in zip(cold.tolist(), cold_r.tolist()):
        bandit.update(int(lab[i]), r)
    drawn = np.zeros(n, dtype=bool)
    drawn[cold] = True
    pools = [np.flatnonzero((lab == c) & ~drawn).tolist() for c in range(k)]
    avail = np.array([len(p) > 0 for p in pools])
    idx, rew = cold.tolist(), cold_r.tolist()
    for _ in range(bandit_draws(n, budget, csp, int(cold.size))):
        arm = bandit.select(avail)
        pool = pools[arm]
        j = int(bandit.rng.integers(len(pool)))
        i = pool[j]
        pool[j] = pool[-1]
        pool.pop()
        avail[arm] = len(pool) > 0
        r = float(score(np.array([i], dtype=np.int64))[0])
        bandit.update(arm, r)
        idx.append(i)
        rew.append(r)
    return np.asarray(idx, dtype=np.int64), np.asarray(rew, dtype=np.float64)
