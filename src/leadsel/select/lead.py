"""LEAD's online stage (docs/algorithms.md §1.2-1.4): a bandit picks a cluster, IDU picks samples in it.

Per round t: the bandit pulls one arm (a cluster with at least one eligible sample); inside it,
per task (the sample's source), the top ceil(rate * n_(cluster, task)) eligible samples by IDU
(eligible: trained fewer than ``max_uses`` times; ties by sample id) are trained once. Then each
trained sample's IDU is updated from its in-loop loss and the round's correction D (see
:mod:`.idu`), and the arm is rewarded with the utility the round consumed,
mean(IDU_before - L_observed) (with ``reward: detrended``, minus a running baseline of the earlier
rounds' rewards), normalised to [-1, 1]. The run stops when ``budget`` distinct
samples have been trained, after ``rounds`` rounds, or when no sample is eligible.

A round that would pass the budget keeps only as many never-trained samples as the budget has
left (the highest IDU first, or each task its share with ``trim: proportional``); samples already
trained stay in it. No forward pass happens here:
every number comes from the training pass of the round loop.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..bandit import BANDITS, exp3_gamma, make_bandit
from ..rng import stream
from ..schema import LeadConfig, RunConfig, count_of
from .base import (Method, PoolView, RoundStats, Selector, UsageTracker, ranked, restore_rng,
                   rng_state, source_codes)
from .clusters import cluster_pool
from .idu import Correction, RewardBaseline, RewardScale, cold_start, correction, cosine, updated_idu
from .sketch import CountSketch


class LeadSelector(Selector):
    name = "lead"
    planned_samples = None  # the rounds decide as they go

    def __init__(self, view: PoolView, cfg, clusters: np.ndarray, budget: int, rounds: int, seed: int):
        n = len(view)
        if "u0" not in view.scores:
            raise ValueError("LEAD needs the initial utility U0 (base-model loss) of every sample")
        self.cfg, self.budget, self.max_rounds = cfg, int(budget), int(rounds)
        self.gradient_metric = cfg.cos_metric   # the trainer gives the round's gradient sum in it
        self.cluster = np.asarray(clusters, dtype=np.int64)
        self.n_arms = int(self.cluster.max()) + 1
        names, codes = source_codes(view.sources)
        self.task_names = names.tolist()
        self.task = codes.astype(np.int64) if cfg.stratify else np.zeros(n, dtype=np.int64)
        self.ids = view.ids
        # the pool grouped by stratum (cluster, task): a round reads its cluster's slice of `members`
        self.n_tasks = int(self.task.max()) + 1 if n else 1
        stratum = self.cluster * self.n_tasks + self.task
        self.members = np.argsort(stratum, kind="stable")          # by stratum, pool order within
        self.stratum_size = np.bincount(stratum, minlength=self.n_arms * self.n_tasks).reshape(self.n_arms, -1)
        self.stratum_start = np.concatenate([[0], np.cumsum(self.stratum_size)]).astype(np.int64)
        self._quantiles: dict[int, list[float]] = {}   # per cluster, until its IDU changes
        self._eligible_left: np.ndarray | None = None
        bc = cfg.bandit
        params = {p: getattr(bc, p) for p in BANDITS[bc.name].PARAMS}
        if bc.gamma_from_rounds and "gamma" in params:
            params["gamma"] = exp3_gamma(self.n_arms, self.max_rounds)
        self.bandit = make_bandit(bc.name, self.n_arms, seed, **params)
        self.rng = stream(seed, "lead")                  # softmax sampling and the training order
        self.idu = cold_start(np.asarray(view.scores["u0"], dtype=np.float64), self.task, cfg.cold_start)
        self.usage = UsageTracker(n)
        self.scale = RewardScale()
        self.baseline = RewardBaseline(cfg.reward_baseline)
        self.round = 0                                   # last completed round
        self.d_prev = math.nan                           # delta of the last round
        self.visited = np.zeros(self.n_arms, dtype=bool)
        self.ref_delta = np.full(self.n_arms, np.nan)    # delta of each cluster's reference visit
        self.ref_grad: dict[int, np.ndarray] = {}        # its summed gradient, as kept (see _kept)
        self.cos_prev = np.full(self.n_arms, np.nan)     # cos(reference gradient, last round's gradient)
        self.sketch = (CountSketch(cfg.gradient_sketch, int(stream(seed, "gradient-sketch").integers(2**63)))
                       if cfg.gradient_sketch else None)
        self._pending: dict | None = None
        self.idu_quantiles()   # each cluster's, once: a round then recomputes only the cluster it trained

    @property
    def max_round_samples(self) -> int:
        """The most samples a round can train: the largest cluster's sum of its strata's shares."""
        return int(np.ceil(self.cfg.rate * self.stratum_size).sum(axis=1).max()) if len(self.cluster) else 0

    # -- planning ------------------------------------------------------------------------------
    def eligible_left(self) -> np.ndarray:
        """Per cluster, how many of its samples may still be trained (fewer than max_uses times)."""
        if self._eligible_left is None:
            ok = self.usage.times_used < self.cfg.max_uses
            self._eligible_left = np.bincount(self.cluster[ok], minlength=self.n_arms)
        return self._eligible_left

    def _stratum(self, arm: int, task: int) -> np.ndarray:
        k = arm * self.n_tasks + task
        return self.members[self.stratum_start[k]:self.stratum_start[k + 1]]

    def plan(self, round_index: int) -> np.ndarray | None:
        if self.usage.unique_used >= self.budget or round_index > self.max_rounds:
            return None
        mask = self.eligible_left() > 0
        if not mask.any():
            return None
        summary = self.bandit.summary(mask)
        arm = int(self.bandit.select(mask))
        if self.cfg.idu:
            corr = correction(round_index, not self.visited[arm], float(self.ref_delta[arm]), self.d_prev,
                              float(self.cos_prev[arm]))
        else:
            corr = Correction(0.0, None, None, 0, "off")
        picks = []
        for t in range(self.n_tasks):   # each stratum of the cluster with a sample left, task by task
            cand = self._stratum(arm, t)
            cand = cand[self.usage.times_used[cand] < self.cfg.max_uses]
            if len(cand):
                picks.append(self._order(cand, math.ceil(self.cfg.rate * self.stratum_size[arm, t])))
        chosen = self._within_budget(np.concatenate(picks))
        self._pending = {"round": round_index, "arm": arm, "corr": corr, "summary": summary}
        return self.rng.permutation(chosen)

    def _order(self, cand: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` most useful candidates, best first: IDU descending, ties by id (or softmax sampling)."""
        if self.cfg.sampling == "softmax":
            keys = self.idu[cand] / self.cfg.temperature + self.rng.gumbel(size=len(cand))
            return cand[np.argsort(-keys, kind="stable")][:k]
        return ranked(cand, self.idu, self.ids, k=k)

    def _within_budget(self, picks: np.ndarray) -> np.ndarray:
        left = self.budget - self.usage.unique_used
        new = picks[self.usage.times_used[picks] == 0]
        if len(new) <= left:
            return picks
        if self.cfg.trim == "proportional":
            tasks = self.task[new]
            quota = task_quotas(np.bincount(tasks, minlength=self.n_tasks), left)
            keep = np.concatenate([ranked(new[tasks == t], self.idu, self.ids, k=int(q)) for t, q in enumerate(quota)])
        else:
            keep = ranked(new, self.idu, self.ids, k=left)
        return picks[(self.usage.times_used[picks] > 0) | np.isin(picks, keep)]

    # -- observing -----------------------------------------------------------------------------
    def observe(self, indices: np.ndarray, losses: np.ndarray, stats: RoundStats) -> dict:
        p, self._pending = self._pending, None
        if p is None:
            raise RuntimeError("observe() without a plan()")
        indices = np.asarray(indices, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        arm, corr, t = p["arm"], p["corr"], p["round"]
        before = self.idu[indices].copy()
        if self.cfg.idu and corr.rule == "round1" and self.cfg.round1_delta:
            corr = Correction(stats.finite_delta or 0.0, None, None, 0, "round1_own_delta")
        if self.cfg.idu:
            self.idu[indices] = updated_idu(before, losses, stats.sample_lrs, corr.D, self.cfg.smoothing)
        else:
            self.idu[indices] = losses
        reward = float(np.mean(before - losses))
        baseline = self.baseline(reward)
        reward_norm = self.scale(reward if self.cfg.reward == "consumed" else reward - baseline)
        self.bandit.update(arm, reward_norm)
        left, seen = self.eligible_left(), np.unique(indices)
        was_ok = self.usage.times_used[seen] < self.cfg.max_uses
        n_new = self.usage.record(indices, t)
        spent = seen[was_ok & (self.usage.times_used[seen] >= self.cfg.max_uses)]   # trained max_uses times now
        left -= np.bincount(self.cluster[spent], minlength=self.n_arms)
        self._quantiles.pop(arm, None)   # the only cluster whose IDU changed
        delta = stats.finite_delta or 0.0
        if self.cfg.idu:
            self._remember(arm, delta, stats.grad_sum)
        self.visited[arm] = True
        self.d_prev, self.round = delta, t
        tasks = np.bincount(self.task[indices], minlength=len(self.task_names) if self.cfg.stratify else 1)
        return {"arm": arm, **p["summary"], "reward": reward, "reward_baseline": baseline,
                "reward_norm": reward_norm, "D": corr.D,
                "beta": corr.beta, "cos_phi": corr.cos_phi, "rule": corr.rule, "clamped": corr.clamped,
                "delta": delta, "n_new": n_new, "mean_idu_before": float(before.mean()),
                "idu_quantiles": self.idu_quantiles(),
                "tasks": ({self.task_names[i]: int(c) for i, c in enumerate(tasks) if c}
                          if self.cfg.stratify else {"all": int(tasks[0])})}

    QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

    def idu_quantiles(self) -> dict[str, list[float]]:
        """Per cluster, the 10/25/50/75/90th percentiles of its finite IDU values (the report draws
        them round by round: a few floats per cluster, whatever the pool size). Each cluster's are
        kept until a round trains it, so a round recomputes one cluster's, not the pool's."""
        out = {}
        for k in range(self.n_arms):
            if k not in self._quantiles:
                lo, hi = self.stratum_start[k * self.n_tasks], self.stratum_start[(k + 1) * self.n_tasks]
                v = self.idu[self.members[lo:hi]]
                v = v[np.isfinite(v)]
                self._quantiles[k] = [round(float(q), 5) for q in np.quantile(v, self.QUANTILES)] if len(v) else []
            if self._quantiles[k]:
                out[str(k)] = self._quantiles[k]
        return out

    def _remember(self, arm: int, delta: float, grad: np.ndarray | None) -> None:
        """Keep the reference visit of ``arm`` and each reference's cosine to this round's gradient."""
        if grad is None:
            raise ValueError("LEAD needs the round's summed gradient (trainer statistics are off)")
        g = self._kept(grad)
        if self.cfg.beta_reference == "latest" or not self.visited[arm]:
            self.ref_delta[arm] = delta
            self.ref_grad[arm] = g
        for k, ref in self.ref_grad.items():
            if len(ref) != len(g):
                raise ValueError(f"cluster {k}'s reference gradient has {len(ref)} entries and this round's "
                                 f"{len(g)}: the checkpoint was written with another lead.gradient_sketch")
            self.cos_prev[k] = cosine(ref, g)

    def _kept(self, grad: np.ndarray) -> np.ndarray:
        """What is kept of a gradient (float32): its sketch (``gradient_sketch`` floats), or the vector
        itself when the reading is exact (``gradient_sketch`` 0) or the vector is no longer than a sketch."""
        if self.sketch is None or len(grad) <= self.sketch.dim:
            return np.array(grad, dtype=np.float32, copy=True).reshape(-1)
        return self.sketch(grad)

    # -- state ---------------------------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        return {"cluster": self.cluster.astype(np.int32), "idu": self.idu.astype(np.float32),
                "times_used": self.usage.times_used, "first_round": self.usage.first_round}

    def state_dict(self) -> dict:
        return {"idu": self.idu.copy(), "usage": self.usage.state_dict(), "bandit": self.bandit.state_dict(),
                "rng": rng_state(self.rng), "scale": self.scale.state_dict(),
                "baseline": self.baseline.state_dict(), "round": self.round,
                "d_prev": self.d_prev, "visited": self.visited.copy(), "ref_delta": self.ref_delta.copy(),
                "cos_prev": self.cos_prev.copy(), "ref_grad": {str(k): v for k, v in self.ref_grad.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.idu = np.asarray(state["idu"], dtype=np.float64).copy()
        self.usage.load_state_dict(state["usage"])
        self._quantiles, self._eligible_left = {}, None
        self.bandit.load_state_dict(state["bandit"])
        self.rng = restore_rng(state["rng"])
        self.scale.load_state_dict(state["scale"])
        if "baseline" in state:  # absent from checkpoints written before reward: detrended existed
            self.baseline.load_state_dict(state["baseline"])
        self.round, self.d_prev = int(state["round"]), float(state["d_prev"])
        self.visited = np.asarray(state["visited"], dtype=bool).copy()
        self.ref_delta = np.asarray(state["ref_delta"], dtype=np.float64).copy()
        self.cos_prev = np.asarray(state["cos_prev"], dtype=np.float64).copy()
        # a vector longer than a sketch is an exact one (written before sketches, or with
        # gradient_sketch 0): kept as its sketch from now on
        self.ref_grad = {int(k): self._kept(np.asarray(v, dtype=np.float32)) for k, v in state["ref_grad"].items()}


# ---------------------------------------------------------------------------------------------- registry
ABLATIONS = {
    "lead": {},
    "lead-no-idu": {"idu": False},                  # IDU off: a sample's utility is its last loss
    "lead-no-task": {"stratify": False},            # no stratification by task inside a cluster
    "lead-no-bandit": {"bandit": "uniform"},         # the arm drawn uniformly
}


def task_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """``total`` split over the tasks in proportion to ``counts`` (largest remainder; equal
    remainders to the lower task index first); never more than a task's count."""
    counts = np.asarray(counts, dtype=np.int64)
    share = total * counts / counts.sum()
    quota = np.floor(share).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda t: (-(share[t] - quota[t]), t))
    for t in order[:total - int(quota.sum())]:
        quota[t] += 1
    return np.minimum(quota, counts)


def lead_settings(cfg: RunConfig) -> LeadConfig:
    """The LeadConfig a LEAD-family method runs with (its ablation applied)."""
    change = dict(ABLATIONS[cfg.method])
    if "bandit" in change:
        change["bandit"] = dataclasses.replace(cfg.lead.bandit, name=change["bandit"])
    return dataclasses.replace(cfg.lead, **change)


def lead_needs(cfg: RunConfig) -> frozenset[str]:
    """U0, and the features the clusters are built from (warm-up IFD, embeddings or both)."""
    feats = cfg.lead.cluster_features
    return frozenset({"u0"} | ({"ifd"} if feats in ("ifd", "both") else set())
                     | ({"emb"} if feats in ("embedding", "both") else set()))


def build_lead(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[LeadSelector, dict]:
    lead = lead_settings(cfg)
    budget = count_of(cfg.budget, len(view))
    labels, info = cluster_pool(lead.cluster_features, lead.clusters, lead.cluster_seed,
                                ifd=view.scores.get("ifd"), emb=view.scores.get("emb"))
    sel = LeadSelector(view, lead, labels, budget, cfg.rounds, cfg.seed)
    return sel, {"budget": budget, "clusters": info, "lead": dataclasses.asdict(lead)}


# lead and its ablations (ABLATIONS says what each one turns off); their rounds decide as they go
METHODS = [Method(name, build_lead, lead_needs, fixed_length=False) for name in ABLATIONS]
