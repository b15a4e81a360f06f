"""Targeted gradient selection at every epoch: ``dynamic`` and ``clusterucb`` (docs/algorithms.md §3).

Both select for the target tasks of the validation sets. A sample's score is its LESS score at
the current checkpoint: the cosine of its Adam-preconditioned, projected gradient to each task's
validation gradients, averaged per task, max over tasks (:meth:`ModelScorer.target_scores`).

    round 1      warm-up: ``targeted.warmup_steps`` optimizer steps on a seeded random sample
                 (skipped when 0)
    each epoch   ``dynamic``: score the whole pool; train on the top ``budget``.
                 ``clusterucb``: at the first selection, cluster the whole pool once by spherical
                 k-means on its gradient features (``targeted.k`` clusters, ``targeted.iters``
                 iterations); then, every epoch, a cold start draws max(floor(csp·|c|), 1) samples
                 of each cluster and a bandit over the clusters (UCB-β by default; exhausted
                 clusters masked) draws the rest of ``draws`` × pool one sample at a time, each
                 scored at the current checkpoint (its reward); train on the top ``budget`` of the
                 drawn samples by reward.

The optimizer and schedule carry over across epochs (one trainer for the whole run). The pool-wide
passes (Dynamic's scoring, ClusterUCB's clustering) write their features shard by shard to a
gradient store in the run directory, so a run killed during one resumes it where it stopped. Every score
is a real forward and backward pass under the current weights, counted in run.json
(``select-grad``, ``select-grad-val``). The bandit of each epoch starts afresh from a seed derived
from the run seed and the round, so a round re-planned after a resume draws the same samples.
Rows add ``phase`` (warmup | select), ``n_scored`` (gradient passes over pool samples this round)
and, for ClusterUCB, ``n_drawn`` and ``draws_per_arm``; scores.parquet gains ``grad_score`` (each
sample's last score; NaN if never scored) and, for ClusterUCB, ``cluster``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..rng import stream
from ..schema import RunConfig, count_of
from .base import (Method, PoolView, RoundStats, Selector, UsageTracker, ranked, restore_rng, rng_state,
                   round_fields)
from .clusterucb_core import run_clusterucb, top_by_reward
from .spherical_kmeans import spherical_kmeans


class TargetedSelector(Selector):
    def __init__(self, method: str, view: PoolView, cfg, budget: int, epochs: int, seed: int, scorer,
                 warmup_samples: int):
        if method == "clusterucb" and cfg.k is None:
            raise ValueError("clusterucb needs targeted.k, the number of gradient clusters")
        self.name, self.cfg, self.n, self.epochs, self.seed = method, cfg, int(budget), int(epochs), int(seed)
        self.scorer = scorer
        self.n_pool = len(view)
        self.warmup = min(int(warmup_samples), self.n_pool)
        self.ids = view.ids
        self.rng = stream(seed, "epoch-order")
        self.usage = UsageTracker(self.n_pool)
        self.score = np.full(self.n_pool, np.nan)
        self.labels: np.ndarray | None = None
        self._pending: dict | None = None

    @property
    def planned_samples(self) -> int:
        return self.warmup + self.n * self.epochs

    def plan(self, round_index: int) -> np.ndarray | None:
        epoch = round_index - (1 if self.warmup else 0)
        if epoch > self.epochs:
            return None
        if epoch == 0:
            self._pending = {"round": round_index, "phase": "warmup", "n_scored": 0}
            return stream(self.seed, "targeted-warmup").choice(self.n_pool, size=self.warmup, replace=False)
        everything = np.arange(self.n_pool)
        if self.name == "dynamic":
            self.score[:] = self.scorer.target_scores(everything, desc=f"round {round_index}: scoring the pool",
                                                      store=f"round{round_index}")
            picks = ranked(everything, self.score, self.ids, k=self.n)
            self._pending = {"round": round_index, "phase": "select", "n_scored": self.n_pool}
        else:
            picks = self._clusterucb(round_index)
        return self.rng.permutation(picks)

    def _clusterucb(self, round_index: int) -> np.ndarray:
        scored = 0
        if self.labels is None:  # cluster the whole pool once, at the first selection
            feats = self.scorer.grad_features(self.scorer.s.pool, np.arange(self.n_pool), precondition=True,
                                              stage="select-grad", desc="gradient features for clustering",
                                              store="clustering")
            self.labels, _ = spherical_kmeans(feats, self.cfg.k, self.cfg.iters, self.seed)
            scored += self.n_pool

        def reward(ix: np.ndarray) -> np.ndarray:
            r = self.scorer.target_scores(ix, desc=f"round {round_index}: draws")
            self.score[ix] = r
            return np.clip(r, -1.0, 1.0)

        drawn, rewards = run_clusterucb(self.labels, reward, budget=self.cfg.draws, csp=self.cfg.csp,
                                        policy=self.cfg.policy, beta=self.cfg.beta,
                                        seed=self.seed * 100_003 + round_index)
        per_arm = np.bincount(self.labels[drawn], minlength=int(self.labels.max()) + 1)
        self._pending = {"round": round_index, "phase": "select", "n_scored": scored + len(drawn),
                         "n_drawn": int(len(drawn)), "draws_per_arm": per_arm.tolist()}
        return top_by_reward(drawn, rewards, self.n)

    def observe(self, indices: np.ndarray, losses: np.ndarray, stats: RoundStats) -> dict:
        p, self._pending = self._pending, None
        if p is None:
            raise RuntimeError("observe() without a plan()")
        mean = float(np.nanmean(self.score[indices])) if np.isfinite(self.score[indices]).any() else None
        return {**round_fields(self.usage, indices, p.pop("round"), stats), "mean_score": mean, **p}

    def columns(self) -> dict[str, np.ndarray]:
        cols = {"times_used": self.usage.times_used, "first_round": self.usage.first_round,
                "grad_score": self.score.astype(np.float32)}
        if self.labels is not None:
            cols["cluster"] = self.labels.astype(np.int32)
        return cols

    def state_dict(self) -> dict:
        return {"usage": self.usage.state_dict(), "rng": rng_state(self.rng), "score": self.score.copy(),
                "labels": None if self.labels is None else self.labels.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.usage.load_state_dict(state["usage"])
        self.rng = restore_rng(state["rng"])
        self.score = np.asarray(state["score"], dtype=np.float64).copy()
        self.labels = None if state["labels"] is None else np.asarray(state["labels"], dtype=np.int64).copy()


# ---------------------------------------------------------------------------------------------- registry
def build_targeted(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[TargetedSelector, dict]:
    n = len(view)
    budget = count_of(cfg.budget, n)
    if scorer is None:
        raise ValueError(f"{cfg.method} needs a model scorer")
    if cfg.method == "clusterucb" and budget > cfg.targeted.draws * n:
        raise ValueError(f"clusterucb trains the top budget ({budget}) of the samples it draws each epoch "
                         f"(targeted.draws x pool = {cfg.targeted.draws * n:g}): raise targeted.draws or lower budget")
    t = cfg.train
    # the warm-up's steps in global samples: every process trains its share of each step
    warm = (cfg.targeted.warmup_steps * t.per_device_batch_size * t.gradient_accumulation_steps
            * getattr(scorer, "num_processes", 1))
    sel = TargetedSelector(cfg.method, view, cfg.targeted, budget, t.epochs, cfg.seed, scorer, warm)
    return sel, {"budget": budget, "epochs": t.epochs, "warmup_samples": sel.warmup,
                 "targeted": dataclasses.asdict(cfg.targeted), "grads": dataclasses.asdict(cfg.grads)}


METHODS = [Method("dynamic", build_targeted, online=True),     # each epoch, the top budget of the whole pool by gradient score
           Method("clusterucb", build_targeted, online=True)]  # each epoch, a bandit over gradient clusters draws; the top budget
