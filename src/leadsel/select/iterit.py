"""IterIT as a selector (docs/algorithms.md §2): one round per epoch, each training ``budget`` samples
chosen greedily by complexity x diversity (:mod:`.iterit_core`).

    round 1      complexity = IFD under the base model (from the offline stage, cached), over the
                 whole pool; greedy selection of ``budget`` samples; the ranking is kept
    round r > 1  ``iterative``: the top W = ceil(update_ratio x budget) of the ranking are
                 re-scored with the current weights (2 forward passes per sample through the
                 :class:`~leadsel.scoring.online.ModelScorer`, counted in run.json) and the
                 selection is redone inside that window; ``baseline``: the same subset again

Each round trains its subset once, in a fresh seeded order. ``budget`` is the size of each
epoch's subset, so the distinct samples trained over all epochs may exceed it (run.json counts
them). The round's log row adds ``n_scored`` (samples re-scored before it), ``window``,
``n_candidates`` (samples with IFD < 1 among those ranked) and ``shortfall`` (picks missing when
fewer candidates than ``budget`` exist). scores.parquet gains ``complexity``: each sample's last
known IFD.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..rng import stream
from ..schema import RunConfig, count_of
from .base import Method, PoolView, RoundStats, Selector, UsageTracker, restore_rng, rng_state, round_fields
from .iterit_core import iterit_select, rerank, window


class IterITSelector(Selector):
    name = "iterit"

    def __init__(self, view: PoolView, cfg, budget: int, epochs: int, seed: int, scorer, responses: list[str]):
        self.cfg = cfg
        self.n = int(budget)
        self.epochs = int(epochs)
        self.scorer = scorer
        self.responses = responses
        self.complexity = np.asarray(view.scores["ifd_base"], dtype=np.float64).copy()
        self.rng = stream(seed, "epoch-order")
        self.usage = UsageTracker(len(view))
        self.ranking: np.ndarray | None = None
        self.picks: np.ndarray | None = None
        self._pending: dict | None = None

    @property
    def planned_samples(self) -> int:
        return self.n * self.epochs

    def plan(self, round_index: int) -> np.ndarray | None:
        if round_index > self.epochs:
            return None
        scored = 0
        if self.ranking is None:
            picks, info = iterit_select(self.complexity, self.responses, self.n, self.cfg.lam)
        elif self.cfg.strategy == "baseline":
            picks, info = self.picks, {"ranking": self.ranking, **self._counts}
        else:
            w = window(self.ranking, self.n, self.cfg.update_ratio)
            new = self.scorer.ifd(w, self.cfg.ifd_kind, desc=f"round {round_index}: re-scoring {len(w)}")
            self.complexity[w] = new
            scored = len(w)
            picks, info = rerank(w, new, self.responses, self.n, self.cfg.lam, ranking=self.ranking)
        self.ranking, self.picks = np.asarray(info["ranking"], dtype=np.int64), np.asarray(picks, dtype=np.int64)
        self._counts = {"n_candidates": int(info["n_candidates"]), "shortfall": int(info["shortfall"])}
        self._pending = {"round": round_index, "n_scored": scored, "window": scored or None, **self._counts}
        return self.rng.permutation(self.picks)

    def observe(self, indices: np.ndarray, losses: np.ndarray, stats: RoundStats) -> dict:
        p, self._pending = self._pending, None
        if p is None:
            raise RuntimeError("observe() without a plan()")
        return {**round_fields(self.usage, indices, p.pop("round"), stats), **p}

    def columns(self) -> dict[str, np.ndarray]:
        return {"times_used": self.usage.times_used, "first_round": self.usage.first_round,
                "complexity": self.complexity.astype(np.float32)}

    def state_dict(self) -> dict:
        return {"usage": self.usage.state_dict(), "rng": rng_state(self.rng), "complexity": self.complexity.copy(),
                "ranking": None if self.ranking is None else self.ranking.copy(),
                "picks": None if self.picks is None else self.picks.copy(),
                "counts": None if self.ranking is None else dict(self._counts)}

    def load_state_dict(self, state: dict) -> None:
        self.usage.load_state_dict(state["usage"])
        self.rng = restore_rng(state["rng"])
        self.complexity = np.asarray(state["complexity"], dtype=np.float64).copy()
        self.ranking = None if state["ranking"] is None else np.asarray(state["ranking"], dtype=np.int64).copy()
        self.picks = None if state["picks"] is None else np.asarray(state["picks"], dtype=np.int64).copy()
        self._counts = state["counts"]


# ---------------------------------------------------------------------------------------------- registry
def build_iterit(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[IterITSelector, dict]:
    if scorer is None or view.responses is None:
        raise ValueError("iterit needs a model scorer and the pool's responses")
    budget = count_of(cfg.budget, len(view))
    sel = IterITSelector(view, cfg.iterit, budget, cfg.train.epochs, cfg.seed, scorer, view.responses)
    return sel, {"budget": budget, "epochs": cfg.train.epochs, "iterit": dataclasses.asdict(cfg.iterit)}


# IterIT: greedy IFD x diversity, re-scored with the current weights each epoch
METHODS = [Method("iterit", build_iterit, lambda cfg: frozenset({"u0", "ifd_base"}), reads_text=True,
                  online=True)]
