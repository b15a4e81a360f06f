"""``leadsel compare CONFIG``: several methods x several seeds on one pool, model, recipe and
budget, and one table of quality and cost.

Each run goes to ``<output_dir>/<method>-seed<seed>/`` and is an ordinary run (so an interrupted
comparison continues: finished runs are skipped, an interrupted one resumes). Offline scores are
shared through the cache. The table, written to ``comparison.csv`` and ``comparison.md``, gives per
method the mean and standard deviation over seeds of the held-out loss per eval set and their
mean, the budget used, and the cost: wall seconds per stage, forward and backward sample-passes,
and estimated FLOPs (2·N·tokens per forward token, 6·N·tokens per trained token, N = the model's
parameters). Costs count the work a method needs, including what it took from the cache
(``cached_*`` in run.json), so they do not depend on which run scored first; held-out
evaluation is left out of the cost.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import sys
from pathlib import Path

from .dist import is_main_launch
from .report.tables import markdown, pool_u0, run_row, selection_profile, summarise
from .runner import run
from .schema import RunConfig
from .utils import atomic_write_bytes


def run_dir_of(cfg: RunConfig, method: str, seed: int) -> Path:
    return Path(cfg.output_dir) / f"{method}-seed{seed}"


def seeds_of(cfg: RunConfig, method: str) -> list[int]:
    return cfg.compare.seeds[:1] if method in cfg.compare.one_seed else list(cfg.compare.seeds)


def run_comparison(cfg: RunConfig) -> dict:
    for method in cfg.compare.methods:
        for seed in seeds_of(cfg, method):
            sub = dataclasses.replace(cfg, method=method, seed=seed, output_dir=str(run_dir_of(cfg, method, seed)))
            if cfg.progress:
                print(f"== {method}, seed {seed} -> {sub.output_dir}", file=sys.stderr, flush=True)
            run(sub)
    if not is_main_launch():  # the main process writes the tables (every run ended at a barrier)
        return {"dir": cfg.output_dir, "table": None, "runs": None}
    return write_tables(cfg)


def write_tables(cfg: RunConfig) -> dict:
    dirs = [run_dir_of(cfg, m, s) for m in cfg.compare.methods for s in seeds_of(cfg, m)]
    u0 = pool_u0(dirs)
    rows = [{**run_row(d), **selection_profile(d, u0)} for d in dirs]
    table = summarise(rows, cfg.compare.methods)
    out = Path(cfg.output_dir)
    fields = sorted({k for t in table for k in t}, key=lambda k: (k not in ("method", "seeds"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(table)
    atomic_write_bytes(out / "comparison.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "comparison.md", markdown(table, rows).encode())
    return {"dir": str(out), "table": table, "runs": rows}
