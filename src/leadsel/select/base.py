"""The Selector protocol: what every selection method implements, and what it is given.

A selector is plain numpy over arrays indexed by pool position. The round loop
(:mod:`leadsel.runner`) asks it for a plan, trains on exactly those samples, and hands back the
losses the training forwards produced plus the round's first-order statistics. The trainer never
knows which method is selecting.

    plan(round) -> indices to train this round, or None when the method is done (a method that
        scores with the model being trained does it here, through its ModelScorer)
    observe(indices, losses, stats) -> the method's fields of this round's log row
    state_dict() / load_state_dict(state) -> everything needed to continue exactly (plain values
        and numpy arrays, including every random generator)
    columns() -> per-sample columns of scores.parquet (times_used, first_round, ...)
    planned_samples -> samples the method will train in all (for a schedule's length), or None
        when its rounds decide as they go (LEAD)
    max_rounds, max_round_samples -> the most rounds it takes and the most samples a round trains
        (the HF plug-in sizes its epochs with them; LEAD and the static methods have them)

Every selector declares ``Selector`` as its base. A method is registered by a :class:`Method`
entry in its selector's module (:mod:`.registry` collects them).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class PoolView:
    """What a selector may know about the pool: ids, task labels and the offline scores."""
    ids: Sequence[str]          # a list, or the pool's compact Strings column
    sources: Sequence[str]      # likewise (Labels)
    scores: dict[str, np.ndarray] = field(default_factory=dict)   # u0, ifd, emb, ... (as computed)
    responses: list[str] | None = None                               # response texts (IterIT's diversity)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class RoundStats:
    """First-order statistics of one training pass (from the trainer)."""
    sample_lrs: np.ndarray            # learning rate of the step each sample was trained in
    delta: float                      # mean over optimizer steps of -g·u/eta
    grad_sum: np.ndarray | None       # sum of the steps' flattened trainable gradients
    n_steps: int = 0

    @classmethod
    def of(cls, result) -> "RoundStats":
        """From the trainer's ``TrainResult``."""
        return cls(result.sample_lrs, result.delta, result.grad_sum, len(result.steps))

    @property
    def finite_delta(self) -> float | None:
        """``delta`` as a float, or None when it is not finite (no optimizer step, lr 0)."""
        return float(self.delta) if np.isfinite(self.delta) else None


class Selector(Protocol):
    """What the round loop reads of a selection method (and, where a selector has it,
    ``gradient_metric``: the metric it wants the round's gradient sum in, euclidean or adam)."""
    name: str
    planned_samples: int | None

    def plan(self, round_index: int) -> np.ndarray | None: ...

    def observe(self, indices: np.ndarray, losses: np.ndarray, stats: RoundStats) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def columns(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Method:
    """One selection method, as the run knows it (an entry of :data:`.registry.METHODS`).

    ``build(cfg, view, scorer)`` -> (selector, info recorded in run.json under "selection");
    ``scorer`` is the run's :class:`~leadsel.scoring.online.ModelScorer` (for the methods that
    score with the model being trained). ``needs(cfg)``: the offline scores it reads (u0: base
    loss, ifd: warm-up IFD, emb: embeddings, less: warm-up LESS scores, ifd_base: base-model IFD).
    ``reads_text``: it reads the pool's response texts. ``fixed_length``: it knows in advance how
    many samples it will train (its ``planned_samples``), so a linear or cosine schedule can be
    sized. ``online``: its ``plan()`` scores the pool with the model being trained (through the
    scorer), so it runs only in leadsel's own loop."""
    name: str
    build: Callable[..., tuple[Selector, dict]]
    needs: Callable[..., frozenset[str]] = lambda cfg: frozenset()
    reads_text: bool = False
    fixed_length: bool = True
    online: bool = False


class UsageTracker:
    """times_used and first_round per sample, shared by every selector."""

    def __init__(self, n: int):
        self.times_used = np.zeros(n, dtype=np.int32)
        self.first_round = np.full(n, -1, dtype=np.int32)
        self._unique = 0   # samples trained at least once, kept as they are recorded

    def record(self, indices: np.ndarray, round_index: int) -> int:
        """One more use of each sample at ``indices``; returns how many of them had never been trained."""
        indices = np.asarray(indices, dtype=np.int64)
        n_new = int((self.times_used[indices] == 0).sum())
        np.add.at(self.times_used, indices, 1)
        new = indices[self.first_round[indices] < 0]
        self.first_round[new] = round_index
        self._unique += int(len(np.unique(new)))
        return n_new

    @property
    def unique_used(self) -> int:
        return self._unique

    def state_dict(self) -> dict:
        return {"times_used": self.times_used.copy(), "first_round": self.first_round.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.times_used = np.asarray(state["times_used"], dtype=np.int32).copy()
        self.first_round = np.asarray(state["first_round"], dtype=np.int32).copy()
        self._unique = int(np.count_nonzero(self.times_used))


def round_fields(usage: UsageTracker, indices: np.ndarray, round_index: int, stats: RoundStats) -> dict:
    """Record a round of a method without a bandit; the log fields such methods share."""
    return {"arm": None, "delta": stats.finite_delta, "n_new": usage.record(indices, round_index)}


def id_ranks(ids: Sequence[str]) -> np.ndarray:
    """Rank of each id in sorted (string) order."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.asarray(ids, dtype=str), kind="stable")] = np.arange(len(ids))
    return rank


def source_codes(sources) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct source names, each sample's code into them), as ``np.unique`` gives them;
    from a compact :class:`~leadsel.data.columns.Labels` column without building its strings."""
    names = getattr(sources, "names", None)
    if names is None:
        return np.unique(np.asarray(sources, dtype=str), return_inverse=True)
    used, codes = np.unique(sources.codes, return_inverse=True)
    return np.asarray(names, dtype=str)[used], codes.reshape(-1)


def ranked(cand: np.ndarray, score: np.ndarray, ids: Sequence[str], k: int | None = None) -> np.ndarray:
    """``cand`` (pool positions) by ``score`` descending, ties broken by sample id (string order),
    NaN last; with ``k``, only the first ``k`` of that order.

    The ids are read only for the candidates whose score is tied, so a ranking costs a sort of the
    scores (with ``k``: a partition, then a sort of the ``k`` best and their ties) however many
    samples the pool has: the pool's ids are never sorted as a whole."""
    cand = np.asarray(cand, dtype=np.int64)
    key = -np.asarray(score, dtype=np.float64)[cand]          # ascending; NaN sorts last
    if k is not None and k < len(cand):
        kth = np.partition(key, k - 1)[k - 1]
        if not np.isnan(kth):      # keep the k best and every candidate tied with the k-th
            keep = key <= kth
            cand, key = cand[keep], key[keep]
    order = np.argsort(key, kind="stable")
    cand, key = cand[order], key[order]
    same = (key[1:] == key[:-1]) | (np.isnan(key[1:]) & np.isnan(key[:-1]))
    if same.any():
        tied = np.zeros(len(cand), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        tie_rank = np.zeros(len(cand), dtype=np.int64)    # untied candidates have a score of their own
        where = np.flatnonzero(tied)
        tie_rank[where] = id_ranks([ids[int(i)] for i in cand[where]])
        run = np.concatenate([[0], np.cumsum(~same)])    # equal scores are runs of the sorted order
        cand = cand[np.lexsort((tie_rank, run))]
    return cand if k is None else cand[:k]


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
