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
is refused. Artifacts (the README's "Run directory" section is their contract): run.json,
rounds.jsonl, scores.parquet, selected.jsonl, eval.json, model/.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import tracking
from .config import RunConfig, to_dict
from .select import PoolView, RoundStats, build_selector, is_lead, needs, needs_text

log = logging.getLogger(__name__)

# settings that do not change what a run computes; a resumed run may differ in them
NOT_COMPARED = ("output_dir", "progress", "report_to", "cache_dir", "model.cache_dir", "scoring.checkpoint_every",
                "scoring.batch_tokens", "scoring.max_batch_size", "scoring.cache", "compare")


class RunDirError(ValueError):
    """The output directory holds something this run must not overwrite or cannot resume."""


def config_diff(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """The differing keys of two run configs, ignoring NOT_COMPARED. A key the old run's config
    lacks (written by an older leadsel) counts as different only when the new value is not the
    default, since the old run then behaved as the default does."""
    if defaults is None:
        defaults = to_dict(RunConfig()) if not prefix else {}
    out = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        if key in NOT_COMPARED:
            continue
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        d = defaults.get(k, "<absent>") if isinstance(defaults, dict) else "<absent>"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, key + ".", d if isinstance(d, dict) else {})
        elif a == "<absent>" and b == d:
            continue
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def run_dir_state(cfg: RunConfig, resume: bool | None = None) -> str:
    """'fresh', 'resume' or 'complete' for ``cfg.output_dir``; raises RunDirError when the
    directory holds another config's run (never overwritten) or ``resume`` finds nothing."""
    path = Path(cfg.output_dir) / "run.json"
    if not path.is_file():
        if resume:
            raise RunDirError(f"--resume: {cfg.output_dir} holds no run to resume")
        return "fresh"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); move it away or choose another output_dir") from None
    diff = config_diff(old.get("config", {}), to_dict(cfg))
    if diff:
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise RunDirError(f"{cfg.output_dir} holds a run with a different config ({'; '.join(diff[:5])}{more}); "
                          "choose another output_dir, or delete that directory to start over")
    return "complete" if old.get("status") == "complete" else "resume"


def _kill_hook():
    """Fault injection for the resume tests: LEADSEL_KILL_AT_STEP=N sends SIGKILL to this process
    right after optimizer step N of the rounds."""
    at = os.environ.get("LEADSEL_KILL_AT_STEP")
    if not at:
        return None

    def hook(step: int) -> None:
        if step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def run(cfg: RunConfig, resume: bool | None = None) -> dict:
    """Run ``cfg`` into ``cfg.output_dir`` (continuing an interrupted run there); a summary."""
    from accelerate.utils import set_seed

    from .scoring.offline import offline_scores
    from .scoring.online import ModelScorer
    from .scoring.passes import PassCounter
    from .session import Session
    from .train.checkpoint import Checkpointer
    from .train.trainer import Trainer, steps_for

    if is_lead(cfg) and cfg.train.lr_scheduler in ("linear", "cosine"):
        raise ValueError(f"train.lr_scheduler={cfg.train.lr_scheduler} needs the number of optimizer steps in "
                         "advance, which LEAD's rounds decide as they go: use constant or step")
    state = run_dir_state(cfg, resume)
    if state == "complete":
        return summary(Path(cfg.output_dir), already_complete=True)
    s = Session.open(cfg, method=cfg.method, resume=state == "resume")
    m = s.manifest
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
        m.set("eval", {"base": before})
        tracking.log_eval(s, "eval_base", before, 0)
    total = None if is_lead(cfg) else steps_for(selector.planned_samples, cfg.train, s.accelerator.num_processes)
    trainer = Trainer(s.model, s.pool, cfg.train, s.accelerator, s.pad_id, s.precision, total_steps=total,
                      on_step=_kill_hook())
    scorer.attach(trainer)
    ckpt = Checkpointer(s.run_dir)
    rows: list[dict] = []
    start = 1
    if state == "resume" and ckpt.latest() is not None:
        last, sel_state, extra = ckpt.load(model=trainer.model, trainer=trainer, device=s.accelerator.device)
        selector.load_state_dict(sel_state)
        rows, start = extra["rows"], last + 1
        if "passes" in extra:  # the counts as they stood after that round: what this attempt
            s.counter = PassCounter(extra["passes"])  # re-did (offline, the cut round) is not added twice
        m.update("rounds", resumed_from_round=last)
    _write_rows(s.run_dir, rows)
    with m.stage("train"):
        r = start
        while True:
            t0 = time.perf_counter()
            if (idx := selector.plan(r)) is None:
                break
            rows.append(_round(r, idx, selector, trainer, s, plan_seconds=time.perf_counter() - t0))
            rows[-1]["checkpoint_seconds"] = None  # its own duration is not known when it is saved
            t0 = time.perf_counter()
            ckpt.save(r, model=trainer.model, trainer=trainer, selector_state=selector.state_dict(),
                      extra={"rows": rows, "passes": s.counter.to_dict()}, device=s.accelerator.device)
            rows[-1]["checkpoint_seconds"] = round(time.perf_counter() - t0, 3)
            _write_rows(s.run_dir, rows)
            m.set("passes", s.counter.to_dict())
            m.tick()
            if cfg.progress:
                print(_round_line(rows[-1]), file=sys.stderr, flush=True)
            r += 1
    m.update("rounds", n=len(rows), samples_trained=int(sum(x["n_selected"] for x in rows)),
             distinct_trained=rows[-1]["unique_used"] if rows else 0, optimizer_steps=trainer.global_step)
    if cfg.evaluate:
        with m.stage("eval_after"):
            after = s.evaluate(base=False, label="eval (trained)")
        m.set("eval", {"base": before, "trained": after})
        tracking.log_eval(s, "eval", after, trainer.global_step)
    with m.stage("save"):
        _save(s, scores, selector, trainer, before, after)
    m.set("passes", s.counter.to_dict())
    m.complete()
    ckpt.remove()
    tracking.finish(s)
    return summary(s.run_dir)


def _round(r: int, idx: np.ndarray, selector, trainer, s, plan_seconds: float) -> dict:
    t0 = time.perf_counter()
    result = trainer.train(idx, desc=f"round {r}" if s.cfg.progress else None)
    s.counter.add_backward("train", len(idx), int(s.pool.lengths[idx].sum()))
    t1 = time.perf_counter()
    fields = selector.observe(idx, result.losses, RoundStats.of(result))
    select_seconds = plan_seconds + time.perf_counter() - t1
    used = int((selector.columns()["times_used"] > 0).sum())
    row = {"round": r, "arm": fields.pop("arm", None)}
    for key in ("arm_probs", "arm_values", "reward", "reward_norm"):
        if key in fields:
            row[key] = fields.pop(key)
    row.update(n_selected=len(idx), selected_ids=[s.pool.ids[i] for i in idx], unique_used=used,
               lr=result.lrs[0] if result.steps else None)
    for key in ("D", "beta", "cos_phi", "delta"):
        row[key] = fields.pop(key, None)
    row.update(mean_loss=float(result.losses.mean()), n_steps=len(result.steps),
               step_losses=[round(st.loss, 5) for st in result.steps], **fields,
               seconds=round(time.perf_counter() - t0 + plan_seconds, 3), select_seconds=round(select_seconds, 3))
    tracking.log_round(s, row, result.steps, trainer.global_step)
    return row


def _round_line(row: dict) -> str:
    arm = f" arm {row['arm']}" if row.get("arm") is not None else ""
    extra = ""
    if row.get("reward") is not None:
        extra = f" reward {row['reward']:+.4f} D {row['D']:.4g}"
    return (f"round {row['round']:>3}{arm}: {row['n_selected']} samples, {row['unique_used']} distinct so far,"
            f" loss {row['mean_loss']:.4f}{extra} ({row['seconds']:.1f}s)")


def _write_rows(run_dir: Path, rows: list[dict]) -> None:
    from .utils import atomic_write_bytes

    atomic_write_bytes(run_dir / "rounds.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


def write_scores(s, scores: dict, columns: dict) -> None:
    """scores.parquet: one row per pool sample (the README documents the columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .utils import atomic_open

    n = len(s.pool)
    nan = np.full(n, np.nan, dtype=np.float32)
    table = {"id": s.pool.ids, "source": s.pool.sources,
             "cluster": columns.get("cluster", np.full(n, -1, dtype=np.int32)),
             "ifd": scores.get("ifd", nan), "u0": scores.get("u0", nan), "idu": columns.get("idu", nan),
             "times_used": columns["times_used"], "first_round": columns["first_round"],
             "length": np.asarray(s.pool.lengths, dtype=np.int32)}
    for extra in ("tokens", "warm_loss", "warm_loss_alone", "u0_alone", "ifd_base", "less"):
        if extra in scores:
            table[extra] = scores[extra]
    for name, col in columns.items():  # a method's own columns (IterIT: complexity)
        table.setdefault(name, col)
    with atomic_open(s.run_dir / "scores.parquet") as f:
        pq.write_table(pa.table(table), f)


def _save(s, scores, selector, trainer, before, after) -> None:
    from .data.load import write_jsonl
    from .eval.heldout import eval_record
    from .model.load import model_fingerprint
    from .utils import atomic_write_json

    cols = selector.columns()
    write_scores(s, scores, cols)
    used = np.flatnonzero(cols["times_used"] > 0)
    write_jsonl([s.samples[s.pool.index[i]] for i in used], s.run_dir / "selected.jsonl")
    model = s.accelerator.unwrap_model(trainer.model)
    if before is not None:
        atomic_write_json(s.run_dir / "eval.json", eval_record(s, before, after, model_fingerprint(
            model, s.model_path, hash_weights=s.cfg.model.finetuning == "full")))
    if s.accelerator.is_main_process:
        model.save_pretrained(s.run_dir / "model")
        s.tokenizer.save_pretrained(s.run_dir / "model")


def summary(run_dir: Path, already_complete: bool = False) -> dict:
    """What a finished run did, from its run.json and rounds.jsonl."""
    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    arms: dict[str, int] = {}
    for r in rows:
        if r.get("arm") is not None:
            arms[str(r["arm"])] = arms.get(str(r["arm"]), 0) + 1
    ev = man.get("eval", {})
    return {"run_dir": str(run_dir), "method": man["method"], "already_complete": already_complete,
            "n_pool": man["data"].get("n_pool"), "budget": man.get("selection", {}).get("budget"),
            "rounds": len(rows), "arms": dict(sorted(arms.items(), key=lambda kv: int(kv[0]))),
            "distinct_trained": rows[-1]["unique_used"] if rows else 0,
            "samples_trained": sum(r["n_selected"] for r in rows),
            "before": ev.get("base"), "after": ev.get("trained"), "precision": man.get("model", {}).get("precision"),
            "stages": {k: v.get("seconds") for k, v in man["stages"].items()}}
