"""Each method's selection work as a formula of the run's sizes (docs/performance.md, "Selection
work as a formula").

Selection work is everything a method computes to choose its data, training excluded, in model
sample-passes per stage as run.json's ``passes`` records them. Three kinds of pass:

    forward    an inference pass (a loss: U0, IFD's two losses, IterIT's re-scoring)
    gradient   one sample's exact gradient (LESS, Dynamic, ClusterUCB features): a forward and a
               backward, recorded as one of each
    training   a warm-up training pass (forward, backward, optimizer step), recorded as a backward

With N the pool, B the budget (LEAD: distinct samples in all; the peers: samples per epoch), C the
epochs, W the warm-up subset and E its epochs, V the validation samples of all tasks, S_e
IterIT's re-scored window before epoch e = min(candidates, ceil(update_ratio x B)) and D_e
ClusterUCB's draws in epoch e (cold start + bandit draws, about targeted.draws x N):

    lead (and its ablations)   forward 3N (U0; L(y|x), L(y) under the warm-up)   training W.E
    iterit (iterative)         forward 2N (the base model's L(y|x), L(y)) + 2 sum_{e>=2} S_e
    iterit (baseline)          forward 2N
    less                       gradient E.(N + V)                               training W.E
    dynamic                    gradient C.(N + V)
    clusterucb                 gradient N (clustering) + sum_e (D_e + V)
    ifd                        forward 2N                                       training W.E
    loss                       forward N
    random, full               nothing

Rounds do not enter LEAD's: its online stage reads the losses training computes anyway. Tokens: a
pass over the whole pool costs the pool's tokens (the response-alone passes its response tokens);
a pass over a subset, its samples' tokens (in a projection: the pool's mean per sample).
:func:`work` gives the sample-passes per stage; :func:`seconds` prices them with measured seconds
per token.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .schema import count_of

LEAD_FAMILY = ("lead", "lead-no-idu", "lead-no-task", "lead-no-bandit")


@dataclass(frozen=True)
class Sizes:
    """The sizes a method's selection work depends on (see the module docstring)."""
    n: int                                   # N, the pool
    budget: int = 0                          # B
    epochs: int = 1                          # C, the peers' epochs
    warmup: int = 0                          # W, the warm-up subset
    warmup_epochs: int = 1                   # E
    val: int = 0                             # V, validation samples of all tasks
    windows: tuple[int, ...] = ()            # IterIT: S_e for e = 2..C
    draws: tuple[int, ...] = ()              # ClusterUCB: D_e for e = 1..C
    strategy: str = "iterative"              # IterIT's


@dataclass(frozen=True)
class Term:
    """``n`` sample-passes of one kind in one stage; ``over`` says whose tokens they cost: the pool's
    (full, or responses alone), the warm-up subset's, the validation sets', or ``subset`` (a
    selection of the pool's samples)."""
    stage: str
    kind: str          # forward | gradient | training
    n: int
    over: str          # pool | alone | warmup | val | subset


def work(method: str, s: Sizes) -> list[Term]:
    """The method's selection work as stage terms (see the module docstring)."""
    n, warm = s.n, s.warmup * s.warmup_epochs
    if method in LEAD_FAMILY:
        return [Term("loss", "forward", n, "pool"), Term("warm-loss", "forward", n, "pool"),
                Term("warm-loss-alone", "forward", n, "alone"), Term("warmup", "training", warm, "warmup")]
    if method == "iterit":
        terms = [Term("loss", "forward", n, "pool"), Term("loss-alone", "forward", n, "alone")]
        if s.strategy == "iterative" and s.windows:
            terms += [Term("select-loss", "forward", sum(s.windows), "subset"),
                      Term("select-loss-alone", "forward", sum(s.windows), "subset")]
        return terms
    if method == "less":
        return [Term("warmup", "training", warm, "warmup"), Term("less-grad", "gradient", s.warmup_epochs * n, "pool"),
                Term("less-grad-val", "gradient", s.warmup_epochs * s.val, "val")]
    if method == "dynamic":
        return [Term("select-grad", "gradient", s.epochs * n, "pool"),
                Term("select-grad-val", "gradient", s.epochs * s.val, "val")]
    if method == "clusterucb":
        return [Term("select-grad", "gradient", n + sum(s.draws), "subset"),
                Term("select-grad-val", "gradient", len(s.draws) * s.val, "val")]
    if method == "ifd":
        return [Term("warm-loss", "forward", n, "pool"), Term("warm-loss-alone", "forward", n, "alone"),
                Term("warmup", "training", warm, "warmup")]
    if method == "loss":
        return [Term("loss", "forward", n, "pool")]
    if method in ("random", "full"):
        return []
    raise ValueError(f"no selection-work formula for method {method!r}")


def recorded(terms: list[Term]) -> dict[str, dict[str, int]]:
    """The terms as run.json's ``passes`` records them: {"forward": {stage: n}, "backward": {stage: n}}
    (a gradient pass counts once in each; a training pass as a backward)."""
    out: dict[str, dict[str, int]] = {"forward": {}, "backward": {}}
    for t in terms:
        for key in {"forward": ("forward",), "gradient": ("forward", "backward"), "training": ("backward",)}[t.kind]:
            out[key][t.stage] = out[key].get(t.stage, 0) + t.n
    return out


@dataclass(frozen=True)
class TokenCosts:
    """Seconds per token of a forward pass and of a forward + backward, and mean tokens per sample."""
    forward_s: float
    forward_backward_s: float
    tokens: float              # a pool sample, prompt and response
    alone_tokens: float        # its response alone
    val_tokens: float = 0.0

    def per_sample(self, over: str) -> float:
        return {"pool": self.tokens, "subset": self.tokens, "warmup": self.tokens, "alone": self.alone_tokens,
                "val": self.val_tokens or self.tokens}[over]


def seconds(terms: list[Term], c: TokenCosts) -> float:
    """Projected seconds of the terms: tokens x the measured seconds per token of their kind."""
    return sum(t.n * c.per_sample(t.over) * (c.forward_s if t.kind == "forward" else c.forward_backward_s)
               for t in terms)


def iterit_windows(n_candidates: int, budget: int, epochs: int, update_ratio: float) -> tuple[int, ...]:
    """S_e for epochs 2..C when every epoch's ranking holds ``n_candidates`` samples."""
    w = min(n_candidates, math.ceil(update_ratio * budget - 1e-9))
    return tuple([w] * max(epochs - 1, 0))


def clusterucb_draws(cluster_sizes: list[int], n: int, draws: float, csp: float, epochs: int) -> tuple[int, ...]:
    """D_e: the cold start (max(floor(csp x |c|), 1) of each cluster) plus the bandit draws
    (floor(N x (draws - csp)), never more than are left), the same every epoch."""
    from .select.clusterucb_core import _floor, bandit_draws

    cold = sum(min(max(_floor(csp * c), 1), c) for c in cluster_sizes if c)
    return tuple([cold + bandit_draws(n, draws, csp, cold)] * epochs)


def sizes_of_run(run_dir) -> Sizes:
    """The sizes a finished run's selection work depends on, from its run.json, rounds.jsonl and
    scores.parquet (IterIT's windows from the candidates its first epoch ranked; ClusterUCB's draws
    from its gradient clusters' sizes)."""
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    cfg, n, budget = man["config"], int(man["data"]["n_pool"]), int(man["selection"]["budget"])
    epochs = int(cfg["train"]["epochs"])
    windows: tuple[int, ...] = ()
    draws: tuple[int, ...] = ()
    if man["method"] == "iterit" and rows:
        windows = iterit_windows(int(rows[0]["n_candidates"]), budget, epochs, float(cfg["iterit"]["update_ratio"]))
    if man["method"] == "clusterucb":
        labels = pq.read_table(run_dir / "scores.parquet", columns=["cluster"]).column("cluster").to_numpy()
        t = cfg["targeted"]
        draws = clusterucb_draws(np.bincount(labels[labels >= 0]).tolist(), n, float(t["draws"]), float(t["csp"]),
                                 epochs)
    return Sizes(n=n, budget=budget, epochs=epochs, warmup=count_of(cfg["warmup"]["size"], n),
                 warmup_epochs=int(cfg["warmup"]["train"]["epochs"]),
                 val=sum(int(v["n"]) for v in man["data"].get("validation", {}).values()), windows=windows,
                 draws=draws, strategy=cfg["iterit"]["strategy"])


def recorded_by_run(run_dir) -> dict[str, dict[str, int]]:
    """run.json's selection passes per stage, as :func:`recorded` gives a formula's: cached passes
    included (the method needs them all the same), training and evaluation left out."""
    p = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))["passes"]
    out: dict[str, dict[str, int]] = {}
    for key in ("forward", "backward"):
        merged: dict[str, int] = {}
        for part in (p.get(key, {}), p.get("cached_" + key, {})):
            for stage, v in part.items():
                if stage != "train" and not stage.startswith("eval-"):
                    merged[stage] = merged.get(stage, 0) + int(v)
        out[key] = merged
    return out
