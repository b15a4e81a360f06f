"""A run, for every method: offline scores -> rounds of (plan, train, observe) -> artifacts.

    leadsel run CONFIG [key=value ...] [--resume]

Stages, each timed in ``run.json``: model, data, offline (cached scores: U0, warm-up IFD,
embeddings, as the method needs), eval_before, train (the rounds), eval_after, save. The round
loop knows nothing of the method: it asks the selector for indices, trains on them, and gives the
selector back the losses and first-order statistics the training pass produced. For LEAD and the
static methods no other forward pass runs while rounds are in progress; the peers (IterIT,
Dynamic, ClusterUCB) score with the current weights inside ``plan()`` through a
:class:`~leadsel.scoring.online.ModelScorer`, and those passes are counted and timed.

After every round the run checkpoints (trainable weights, optimizer, scheduler, selector and
bandit state, every RNG, the round log), so a killed run continues from its last complete round
when it is started again into the same directory; a directory holding a run of a different config
is refused (:mod:`.rundir`, which also writes the artifacts: docs/run-directory.md is their
contract).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed

from . import dist, tracking
from .rundir import run_dir_state, save_artifacts, summary, write_rows
from .schema import RunConfig
from .scoring.counter import PassCounter
from .scoring.offline import offline_scores
from .scoring.online import ModelScorer
from .select import PoolView, RoundStats, build_selector, method_of, needs, needs_text
from .select.base import Selector
from .session import Session
from .train.checkpoint import Checkpointer
from .train.trainer import Trainer, steps_for

log = logging.getLogger(__name__)


def _kill_hook(rank: int):
    """Fault injection for the resume tests: LEADSEL_KILL_AT_STEP=N sends SIGKILL to this process
    right after optimizer step N of the rounds (only to rank LEADSEL_KILL_RANK when that is set)."""
    at = os.environ.get("LEADSEL_KILL_AT_STEP")
    if not at or os.environ.get("LEADSEL_KILL_RANK", str(rank)) != str(rank):
        return None

    def hook(step: int) -> None:
        if step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def run(cfg: RunConfig, resume: bool | None = None) -> dict:
    """Run ``cfg`` into ``cfg.output_dir`` (continuing an interrupted run there); a summary."""
    if not method_of(cfg).fixed_length and cfg.train.lr_scheduler in ("linear", "cosine"):
        raise ValueError(f"train.lr_scheduler={cfg.train.lr_scheduler} needs the number of optimizer steps in "
                         "advance, which LEAD's rounds decide as they go: use constant or step")
    # decided once, before anything is written: a late rank must not read a fresh run as a resume
    state = dist.on_main(dist.process_state(cfg), lambda: run_dir_state(cfg, resume))
    if state == "complete":
        return summary(Path(cfg.output_dir), already_complete=True)
    s = Session.open(cfg, method=cfg.method, resume=state == "resume")
    m, acc = s.manifest, s.accelerator
    tracking.start(s)
    with m.stage("offline"):
        scores = offline_scores(s, needs(cfg), cfg.lead.ifd_kind)
    set_seed(cfg.seed)  # whether the offline stage ran or hit the cache, the rounds start alike
    scorer = ModelScorer(s)
    view = PoolView(s.pool.ids, s.pool.sources, scores, responses=s.responses() if needs_text(cfg) else None)
    selector, info = build_selector(cfg, view, scorer)
    m.update("selection", **info)
    before = after = None
    if cfg.evaluate:
        with m.stage("eval_before"):
            before = s.evaluate(base=True, label="eval (base)")
            if cfg.evaluate_val:
                val_before = s.evaluate(base=True, label="val (base)", validation=True)
        m.set("eval", {"base": before, **({"val_base": val_before} if cfg.evaluate_val else {})})
        tracking.log_eval(s, "eval_base", before, 0)
    planned = selector.planned_samples
    total = None if planned is None else steps_for(planned, cfg.train, acc.num_processes)
    trainer = Trainer(s.model, s.pool, cfg.train, acc, s.pad_id, s.precision, total_steps=total,
                      on_step=_kill_hook(acc.process_index), logit_chunk=cfg.model.logit_chunk,
                      gradient_metric=getattr(selector, "gradient_metric", "euclidean"))
    scorer.attach(trainer)
    ckpt = Checkpointer(s.run_dir)
    rows: list[dict] = []
    start = 1
    if state == "resume" and dist.on_main(acc, ckpt.latest) is not None:
        last, sel_state, extra = ckpt.load(model=trainer.model, trainer=trainer, accelerator=acc)
        selector.load_state_dict(sel_state)
        rows, start = extra["rows"], last + 1
        if "passes" in extra:  # the counts as they stood after that round: what this attempt
            s.counter = PassCounter(extra["passes"])  # re-did (offline, the cut round) is not added twice
        m.update("rounds", resumed_from_round=last)
    if acc.is_main_process:
        write_rows(s.run_dir, rows)
    with m.stage("train"):
        r = start
        while True:
            t0 = time.perf_counter()
            idx = selector.plan(r)
            dist.check_same(acc, dist.digest(idx), f"round {r}: the selected samples")
            if idx is None:
                break
            rows.append(_round(r, idx, selector, trainer, s, plan_seconds=time.perf_counter() - t0))
            rows[-1]["checkpoint_seconds"] = None  # its own duration is not known when it is saved
            t0 = time.perf_counter()
            ckpt.save(r, model=trainer.model, trainer=trainer, selector_state=selector.state_dict(),
                      extra={"rows": rows, "passes": s.counter.to_dict()}, accelerator=acc)
            rows[-1]["checkpoint_seconds"] = round(time.perf_counter() - t0, 3)
            if acc.is_main_process:
                write_rows(s.run_dir, rows)
            m.set("passes", s.counter.to_dict())
            m.tick()
            if cfg.progress:
                print(round_line(rows[-1]), file=sys.stderr, flush=True)
            r += 1
    m.update("rounds", n=len(rows), samples_trained=int(sum(x["n_selected"] for x in rows)),
             distinct_trained=rows[-1]["unique_used"] if rows else 0, optimizer_steps=trainer.global_step)
    if cfg.evaluate:
        with m.stage("eval_after"):
            after = s.evaluate(base=False, label="eval (trained)")
            val = ({"val_base": val_before, "val_trained": s.evaluate(base=False, label="val (trained)", validation=True)}
                   if cfg.evaluate_val else {})
        m.set("eval", {"base": before, "trained": after, **val})
        tracking.log_eval(s, "eval", after, trainer.global_step)
    with m.stage("save"):
        if acc.is_main_process:
            save_artifacts(s, scores, selector, trainer, before, after)
    m.set("passes", s.counter.to_dict())
    m.complete()
    if acc.is_main_process:
        ckpt.remove()
    tracking.finish(s)
    dist.barrier(acc)  # the others read what the main process wrote
    return summary(s.run_dir)


def _round(r: int, idx: np.ndarray, selector: Selector, trainer: Trainer, s: Session, plan_seconds: float) -> dict:
    t0 = time.perf_counter()
    result = trainer.train(idx, desc=f"round {r}" if s.cfg.progress else None)
    s.counter.add_backward("train", len(idx), int(s.pool.lengths[idx].sum()))
    row = observe_round(r, idx, selector, result, s.pool.ids, plan_seconds, time.perf_counter() - t0)
    tracking.log_round(s, row, result.steps, trainer.global_step)
    return row


def observe_round(r: int, idx: np.ndarray, selector: Selector, result, ids, plan_seconds: float,
                  train_seconds: float) -> dict:
    """Give the selector round ``r``'s training result (a ``TrainResult``); the round's log row
    (rounds.jsonl, docs/run-directory.md). The HF plug-in (:mod:`leadsel.hf`) writes the same rows."""
    t1 = time.perf_counter()
    fields = selector.observe(idx, result.losses, RoundStats.of(result))
    select_seconds = plan_seconds + time.perf_counter() - t1
    used = int((selector.columns()["times_used"] > 0).sum())
    row = {"round": r, "arm": fields.pop("arm", None)}
    for key in ("arm_probs", "arm_values", "reward", "reward_norm"):
        if key in fields:
            row[key] = fields.pop(key)
    row.update(n_selected=len(idx), selected_ids=[ids[i] for i in idx], unique_used=used,
               lr=result.lrs[0] if result.steps else None)
    for key in ("D", "beta", "cos_phi", "delta"):
        row[key] = fields.pop(key, None)
    row.update(mean_loss=float(result.losses.mean()), n_steps=len(result.steps),
               step_losses=[round(st.loss, 5) for st in result.steps], **fields,
               seconds=round(train_seconds + (time.perf_counter() - t1) + plan_seconds, 3),
               select_seconds=round(select_seconds, 3))
    return row


def round_line(row: dict) -> str:
    arm = f" arm {row['arm']}" if row.get("arm") is not None else ""
    extra = ""
    if row.get("reward") is not None:
        extra = f" reward {row['reward']:+.4f} D {row['D']:.4g}"
    return (f"round {row['round']:>3}{arm}: {row['n_selected']} samples, {row['unique_used']} distinct so far,"
            f" loss {row['mean_loss']:.4f}{extra} ({row['seconds']:.1f}s)")
