"""Instance-level Dynamic Uncertainty (docs/algorithms.md §1.3), its cold start, and the bandit
reward's baseline and scale (§1.2.5).

Plain numpy, no state beyond what the caller passes. For a round t that trains cluster k:

    D = beta^2 d_ref + (1 - beta)^2 d_prev + 2 beta (1 - beta) sqrt(d_ref d_prev) cos(phi)
    beta* = (d_prev - sqrt(d_ref d_prev) cos(phi)) / (d_ref + d_prev - 2 sqrt(d_ref d_prev) cos(phi)),
            clipped to [0, 1] (denominator 0 -> 0)
    U_hat = L_t - eta_t D          IDU_t = (1 - b) U_hat + b IDU_(t-1)

with d_ref = delta of the cluster's reference visit (its first, or latest), d_prev = delta of
round t - 1, cos(phi) the cosine between those rounds' summed gradient vectors. Round 1: D = 0;
first visit of a cluster: D = d_prev. A negative delta (the step raised the loss) is clamped to 0
inside the square roots and counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Correction:
    D: float
    beta: float | None      # None when the rule did not mix two gradients
    cos_phi: float | None
    clamped: int            # how many deltas were clamped to 0 inside a square root
    rule: str               # "round1" | "round1_own_delta" (lead.round1_delta) | "first_visit" | "mix"


def beta_star(d_ref: float, d_prev: float, cos_phi: float) -> tuple[float, int]:
    """The beta in [0, 1] minimising D, and how many deltas were clamped to 0.

    D is a parabola in beta with curvature ``denom = d_ref + d_prev - 2 sqrt(d_ref d_prev) cos``.
    Positive: its vertex, clipped to [0, 1]. Zero (within rounding, e.g. a cluster revisited right
    after its reference round: the same vector, cos 1 up to float error): beta = 0, as the spec
    says. Negative (only possible with a negative delta): D is concave, so the better endpoint.
    """
    clamped = int(d_ref < 0) + int(d_prev < 0)
    cross = math.sqrt(max(d_ref, 0.0) * max(d_prev, 0.0)) * cos_phi
    denom = d_ref + d_prev - 2.0 * cross
    if abs(denom) <= 1e-9 * (abs(d_ref) + abs(d_prev)):
        return 0.0, clamped
    if denom < 0:
        return (1.0 if d_ref < d_prev else 0.0), clamped
    return float(min(1.0, max(0.0, (d_prev - cross) / denom))), clamped


def mixed_D(d_ref: float, d_prev: float, cos_phi: float, beta: float) -> float:
    cross = math.sqrt(max(d_ref, 0.0) * max(d_prev, 0.0)) * cos_phi
    return beta * beta * d_ref + (1.0 - beta) ** 2 * d_prev + 2.0 * beta * (1.0 - beta) * cross


def correction(round_index: int, first_visit: bool, d_ref: float, d_prev: float, cos_phi: float) -> Correction:
    """D for the cluster trained in round ``round_index`` (1-based), by the rules above."""
    if round_index <= 1:
        return Correction(0.0, None, None, 0, "round1")
    if first_visit:
        return Correction(float(d_prev), None, None, 0, "first_visit")
    beta, clamped = beta_star(d_ref, d_prev, cos_phi)
    return Correction(mixed_D(d_ref, d_prev, cos_phi, beta), beta, float(cos_phi), clamped, "mix")


def updated_idu(previous: np.ndarray, losses: np.ndarray, lrs: np.ndarray, D: float, b: float) -> np.ndarray:
    """IDU_t = (1 - b) (L_t - eta_t D) + b IDU_(t-1), elementwise."""
    estimate = np.asarray(losses, dtype=np.float64) - np.asarray(lrs, dtype=np.float64) * D
    return (1.0 - b) * estimate + b * np.asarray(previous, dtype=np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors in float64; 0 when either is zero."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(a64, b64) / (na * nb), -1.0, 1.0))


class RewardScale:
    """Rewards normalised to [-1, 1] by the minimum and maximum seen so far (this one included);
    0 while they are equal."""

    def __init__(self):
        self.lo = math.inf
        self.hi = -math.inf

    def __call__(self, reward: float) -> float:
        self.lo, self.hi = min(self.lo, reward), max(self.hi, reward)
        if self.hi == self.lo:
            return 0.0
        return 2.0 * (reward - self.lo) / (self.hi - self.lo) - 1.0

    def state_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state: dict) -> None:
        self.lo, self.hi = float(state["lo"]), float(state["hi"])


def cold_start(u0: np.ndarray, task: np.ndarray, how: str) -> np.ndarray:
    """The IDU of never-trained samples: ``u0`` itself, or (``middle``) m - |U0 - m| with m the
    median U0 of the sample's task (NaN U0 stays NaN and never counts in a median)."""
    u0 = np.asarray(u0, dtype=np.float64)
    if how == "u0":
        return u0.copy()
    if how != "middle":
        raise ValueError(f"lead.cold_start: unknown {how!r}")
    out = np.full_like(u0, np.nan)
    for t in np.unique(task):
        rows = task == t
        finite = u0[rows][np.isfinite(u0[rows])]
        if len(finite):
            m = float(np.median(finite))
            out[rows] = m - np.abs(u0[rows] - m)
    return out


class RewardBaseline:
    """A running baseline of the raw rewards: b <- (1 - rho) b + rho r. Called with a round's reward,
    it returns the baseline of the rounds before (the reward itself in round 1, so that round's
    detrended reward is 0), then takes the reward in."""

    def __init__(self, rho: float):
        self.rho = float(rho)
        self.value = math.nan

    def __call__(self, reward: float) -> float:
        before = reward if math.isnan(self.value) else self.value
        self.value = (1.0 - self.rho) * before + self.rho * reward
        return before

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
