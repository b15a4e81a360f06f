"""The selectors' own cost at pool sizes of 1M and 10M samples: set-up, plan + observe per round,
state size and checkpoint write, in one run.

    python benchmarks/selector_scale.py [--sizes 1000000,10000000] [--rounds 20]

A synthetic pool per size (no model: the selectors are plain numpy): ids ``s0...`` in the pool's
compact id column, 8 sources, U0 ~ Gamma(2, 1), warm-up IFD ~ Uniform(0.2, 1.1) (so about 11%
are flagged, IFD > 1), the paper's LEAD settings (7 clusters on the 1-D IFD, rate 0.015, budget
2.5%, 20 rounds). Each round LEAD plans, "trains" (losses = IDU x 0.9 plus noise, a learning rate
of 1e-4 per sample, delta 0.01, a 4,096-float gradient), observes, and its state is written by
the real checkpoint writer (``Checkpointer.save`` with a one-parameter model). Also timed: the
static selectors ``loss`` and ``ifd`` (a ranking of the whole pool) and IterIT's numpy parts at
epoch 0 (candidate filter and window; its TF-IDF needs texts and is not part of this benchmark).

Printed per size: LEAD's set-up seconds, the median and maximum plan + observe seconds per round,
the selector's state in MB (the arrays of its checkpointed state, and every array it holds,
the pool's id, source and score columns it reads included), the checkpoint write seconds, and the static and IterIT
timings; then the issue's targets at 10M (set-up <= 15 s, plan + observe <= 0.2 s, state <= 1 GB,
checkpoint <= 2 s).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np

from leadsel.data.columns import Labels, Strings
from leadsel.schema import RunConfig
from leadsel.select.base import PoolView, RoundStats
from leadsel.select.iterit_core import candidate_mask, window
from leadsel.select.lead import build_lead
from leadsel.select.static import static_subset

SOURCES = ["alpaca", "dolly", "flan", "oasst", "sharegpt", "cot", "code", "math"]


def synthetic_view(n: int, seed: int = 0) -> PoolView:
    rng = np.random.default_rng(seed)
    digits = np.char.add("s", np.arange(n).astype(str))          # s0, s1, ...
    lengths = np.char.str_len(digits).astype(np.int64)
    ids = Strings(np.frombuffer("".join(digits.tolist()).encode(), dtype=np.uint8), np.cumsum(lengths))
    sources = Labels(rng.integers(0, len(SOURCES), size=n).astype(np.int32), sorted(SOURCES))
    scores = {"u0": rng.gamma(2.0, 1.0, size=n), "ifd": rng.uniform(0.2, 1.1, size=n)}
    return PoolView(ids, sources, scores)


def state_mb(state) -> float:
    if isinstance(state, np.ndarray):
        return state.nbytes / 1e6
    if isinstance(state, dict):
        return sum(state_mb(v) for v in state.values())
    return 0.0


def held_mb(selector, view: PoolView) -> float:
    """What the selector holds in arrays: its own, its usage tracker's, and the pool's id and source
    columns and scores it reads (the view's)."""
    arrays = [v for obj in (selector, selector.usage) for v in vars(obj).values() if isinstance(v, np.ndarray)]
    arrays += [view.ids.blob, view.ids.ends, view.sources.codes, *view.scores.values()]
    return sum(a.nbytes for a in arrays) / 1e6


def checkpoint_seconds(selector, directory) -> float:
    import torch
    from accelerate import Accelerator

    from leadsel.train.checkpoint import Checkpointer

    class Trainer:
        def state_dict(self):
            return {"step": 0}

    model = torch.nn.Linear(1, 1)
    t0 = time.perf_counter()
    Checkpointer(directory).save(1, model=model, trainer=Trainer(), selector_state=selector.state_dict(),
                                 extra={}, accelerator=Accelerator(cpu=True))
    return time.perf_counter() - t0


def run_lead(view: PoolView, rounds: int) -> dict:
    cfg = dataclasses.replace(RunConfig(), method="lead", budget=0.025, rounds=rounds)
    t0 = time.perf_counter()
    sel, info = build_lead(cfg, view)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    per_round = []
    grad = rng.normal(size=4096).astype(np.float32)
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        idx = sel.plan(r)
        t_plan = time.perf_counter() - t0
        if idx is None:
            break
        losses = sel.idu[idx] * 0.9 + rng.normal(0, 0.05, size=len(idx))
        stats = RoundStats(np.full(len(idx), 1e-4), 0.01, grad + rng.normal(0, 0.1, size=4096).astype(np.float32), 1)
        t0 = time.perf_counter()
        sel.observe(idx, losses, stats)
        per_round.append(t_plan + time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        ckpt = checkpoint_seconds(sel, d)
    return {"setup_s": setup, "rounds": len(per_round), "round_median_s": float(np.median(per_round)),
            "round_max_s": float(np.max(per_round)), "state_mb": state_mb(sel.state_dict()),
            "held_mb": held_mb(sel, view), "checkpoint_s": ckpt,
            "trained": int(sel.usage.unique_used), "clusters": info["clusters"]["n_clusters"]}


def run_static(view: PoolView) -> dict:
    out = {}
    budget = int(0.025 * len(view))
    for method in ("loss", "ifd"):
        t0 = time.perf_counter()
        static_subset(method, view, budget, 0)
        out[f"{method}_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    comp = np.asarray(view.scores["ifd"])
    cand = np.flatnonzero(candidate_mask(comp))
    ranking = cand[np.argsort(-comp[cand], kind="stable")]
    window(ranking, budget)
    out["iterit_numpy_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        t0 = time.perf_counter()
        view = synthetic_view(n)
        made = time.perf_counter() - t0
        row = {"samples": n, "pool_built_s": made, **run_lead(view, args.rounds), **run_static(view)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| samples | LEAD set-up s | plan + observe s/round (median, max) | checkpointed state MB | "
          "arrays held MB | checkpoint s | loss s | ifd s | IterIT numpy s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['samples']:,} | {r['setup_s']:.1f} | {r['round_median_s']:.3f}, {r['round_max_s']:.3f} | "
              f"{r['state_mb']:.0f} | {r['held_mb']:.0f} | {r['checkpoint_s']:.2f} | {r['loss_s']:.2f} | {r['ifd_s']:.2f} | "
              f"{r['iterit_numpy_s']:.2f} |")
    big = max(rows, key=lambda r: r["samples"])
    print(f"\nat {big['samples']:,}: set-up {big['setup_s']:.1f} s (target <= 15), plan + observe "
          f"{big['round_max_s']:.3f} s max (target <= 0.2), state {big['state_mb']:.0f} MB checkpointed, "
          f"{big['held_mb']:.0f} MB held (target <= 1000), "
          f"checkpoint {big['checkpoint_s']:.2f} s (target <= 2)")


if __name__ == "__main__":
    main()
