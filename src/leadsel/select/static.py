"""Static baselines (docs/algorithms.md §4): one subset chosen before training, trained for
``train.epochs`` passes (one round per pass, each in a fresh seeded order).

    random  a uniform subset of ``budget`` samples
    full    the whole pool
    ifd     the ``budget`` samples of highest warm-up IFD among those with IFD <= 1 (Cherry-LLM);
            when fewer than ``budget`` qualify, the rest are the flagged samples (IFD > 1 or not
            finite) of lowest IFD, and their number is recorded (``filled_from_flagged``)
    loss    the ``budget`` samples of highest base-model loss U0
    less    the ``budget`` samples of highest LESS score for the validation sets, computed once
            under a warm-up adapter (:mod:`..scoring.less`)
Ties are broken by sample id.
"""
from __future__ import annotations

import numpy as np

from ..rng import stream
from ..schema import RunConfig, count_of
from .base import (Method, PoolView, RoundStats, Selector, UsageTracker, ranked, restore_rng, rng_state,
                   round_fields)
from .clusters import valid_ifd


def static_subset(method: str, view: PoolView, budget: int, seed: int) -> tuple[np.ndarray, dict]:
    """(sorted pool positions, info)."""
    n = len(view)
    if method == "full":
        return np.arange(n), {}
    if method == "random":
        return np.sort(stream(seed, "random-subset").choice(n, size=min(budget, n), replace=False)), {}
    if method == "ifd":
        score = np.asarray(view.scores["ifd"], dtype=np.float64)
        ok = valid_ifd(score)
        picked = ranked(np.flatnonzero(ok), score, view.ids, k=budget)
        if len(picked) < budget:
            closest = -np.where(np.isnan(score), np.inf, score)  # lowest flagged IFD first
            picked = np.concatenate([picked, ranked(np.flatnonzero(~ok), closest, view.ids, k=budget - len(picked))])
        return np.sort(picked), {"filled_from_flagged": int((~ok[picked]).sum())}
    if method in ("loss", "less"):
        score = np.asarray(view.scores["u0" if method == "loss" else "less"], dtype=np.float64)
        return np.sort(ranked(np.arange(n), score, view.ids, k=budget)), {}
    raise ValueError(f"{method!r} is not a static method (random, full, ifd, loss, less)")


class StaticSelector(Selector):
    def __init__(self, method: str, view: PoolView, budget: int, epochs: int, seed: int):
        self.name = method
        self.subset, self.info = static_subset(method, view, budget, seed)
        self.epochs = int(epochs)
        self.rng = stream(seed, "epoch-order")
        self.usage = UsageTracker(len(view))
        self._round: int | None = None

    @property
    def planned_samples(self) -> int:
        return len(self.subset) * self.epochs

    @property
    def max_rounds(self) -> int:
        return self.epochs

    @property
    def max_round_samples(self) -> int:
        return len(self.subset)

    def plan(self, round_index: int) -> np.ndarray | None:
        if round_index > self.epochs:
            return None
        self._round = round_index
        return self.rng.permutation(self.subset)

    def observe(self, indices: np.ndarray, losses: np.ndarray, stats: RoundStats) -> dict:
        return round_fields(self.usage, indices, self._round, stats)

    def columns(self) -> dict[str, np.ndarray]:
        return {"times_used": self.usage.times_used, "first_round": self.usage.first_round}

    def state_dict(self) -> dict:
        return {"usage": self.usage.state_dict(), "rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.usage.load_state_dict(state["usage"])
        self.rng = restore_rng(state["rng"])


# ---------------------------------------------------------------------------------------------- registry
def build_static(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[StaticSelector, dict]:
    sel = StaticSelector(cfg.method, view, count_of(cfg.budget, len(view)), cfg.train.epochs, cfg.seed)
    return sel, {"budget": len(sel.subset), "epochs": cfg.train.epochs, **sel.info}


METHODS = [Method(name, build_static, (lambda cfg, n=needs: frozenset(n))) for name, needs in (
    ("random", ()),         # a uniform random subset of budget samples
    ("full", ()),           # the whole pool
    ("ifd", ("ifd",)),      # the top budget by warm-up IFD (IFD <= 1 first)
    ("loss", ("u0",)),      # the top budget by base-model loss U0
    ("less", ("less",)),    # the top budget by LESS gradient score for the validation tasks, once
)]
