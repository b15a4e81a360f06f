"""The run directory: whether a run there is fresh, resumable or complete (a directory holding
another config's run is refused), the artifacts a run writes, and the summary read back from them.

The artifacts are the contract of docs/run-directory.md: run.json (:mod:`.manifest`),
rounds.jsonl, scores.parquet, selected.jsonl, eval.json, model/. Each is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .data.load import write_records
from .eval.heldout import eval_record
from .model.load import model_fingerprint
from .schema import RunConfig, to_dict
from .select.base import Selector
from .session import Session
from .train.trainer import Trainer
from .utils import atomic_open, atomic_write_bytes, atomic_write_json

# settings that do not change what a run computes; a resumed run may differ in them
NOT_COMPARED = ("output_dir", "progress", "report_to", "cache_dir", "model.cache_dir", "scoring.checkpoint_every",
                "scoring.batch_tokens", "scoring.max_batch_size", "scoring.cache", "compare",
                "ddp_timeout", "train.gradient_checkpointing", "warmup.train.gradient_checkpointing",
                "model.logit_chunk")


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


def write_rows(run_dir: Path, rows: list[dict]) -> None:
    """rounds.jsonl: the round log, rewritten whole (atomically) after every round. Plain
    ``json.dumps`` lines (ASCII, as leadsel has always written them), not the records writer of
    :mod:`.data.load`, whose lines keep non-ASCII text as UTF-8."""
    atomic_write_bytes(run_dir / "rounds.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


def write_scores(s: Session, scores: dict, columns: dict) -> None:
    """scores.parquet: one row per pool sample (docs/run-directory.md lists the columns)."""
    n = len(s.pool)
    nan = np.full(n, np.nan, dtype=np.float32)
    table = {"id": s.pool.ids.to_arrow(), "source": s.pool.sources.to_arrow(),
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


def write_selection(s: Session, scores: dict, selector: Selector) -> None:
    """scores.parquet and selected.jsonl (the trained samples, read back from the pool's files in
    their own schema)."""
    cols = selector.columns()
    write_scores(s, scores, cols)
    used = np.flatnonzero(cols["times_used"] > 0)
    if s.accelerator.is_main_process:
        write_records(s.run_dir / "selected.jsonl", s.store.records(used), escape_line_breaks=False)


def save_artifacts(s: Session, scores: dict, selector: Selector, trainer: Trainer, before: dict | None,
                   after: dict | None) -> None:
    """The artifacts of a finished run: scores.parquet, selected.jsonl (the trained samples in their
    input schema), eval.json, and the trained model (model/)."""
    write_selection(s, scores, selector)
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
