"""``leadsel compare CONFIG``: several methods x several seeds on one pool, model, recipe and
budget, and one table of quality and cost.

A row is a method or a variant (``compare.variants``: a method with other settings, e.g. random at
another budget or LEAD with another reading). With ``compare.reference`` (usually ``full``) the
headline is each row's share of the reference's gain over the base model, per eval set, averaged
(and the same on the validation sets with ``evaluate_val``); with ``compare.curve`` (e.g. random at
several budgets) it also says at which budget that curve reaches each row's share.

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
from .config import load_config
from .report.tables import gain_shares, markdown, pool_u0, run_row, selection_profile, summarise
from .runner import run
from .schema import RunConfig, to_dict
from .utils import atomic_write_bytes


def run_dir_of(cfg: RunConfig, method: str, seed: int) -> Path:
    return Path(cfg.output_dir) / f"{method}-seed{seed}"


def seeds_of(cfg: RunConfig, method: str) -> list[int]:
    return cfg.compare.seeds[:1] if method in cfg.compare.one_seed else list(cfg.compare.seeds)


def row_config(cfg: RunConfig, name: str, seed: int) -> RunConfig:
    """The run config of row ``name`` (a method, or a variant: a method with other settings) and ``seed``."""
    out = str(run_dir_of(cfg, name, seed))
    if name not in cfg.compare.variants:
        return dataclasses.replace(cfg, method=name, seed=seed, output_dir=out)
    return load_config(None, [*cfg.compare.variants[name], f"seed={seed}", f"output_dir={out}"], values=to_dict(cfg))


def run_comparison(cfg: RunConfig) -> dict:
    for name in cfg.compare.methods:
        for seed in seeds_of(cfg, name):
            sub = row_config(cfg, name, seed)
            if cfg.progress:
                print(f"== {name}, seed {seed} -> {sub.output_dir}", file=sys.stderr, flush=True)
            run(sub)
    if not is_main_launch():  # the main process writes the tables (every run ended at a barrier)
        return {"dir": cfg.output_dir, "table": None, "runs": None, "tables": cfg.compare.tables}
    return write_tables(cfg)


def write_tables(cfg: RunConfig) -> dict:
    named = [(m, run_dir_of(cfg, m, s)) for m in cfg.compare.methods for s in seeds_of(cfg, m)]
    u0 = pool_u0([d for _, d in named])
    rows = [{**run_row(d), **selection_profile(d, u0), "method": m} for m, d in named]
    for r in rows:
        if r.get("pool") and r.get("distinct_trained") is not None:
            r["budget_share"] = r["distinct_trained"] / r["pool"]
            r["passes_share"] = (r["samples_trained"] or 0) / r["pool"]
    if cfg.compare.reference:
        gain_shares(rows, cfg.compare.reference)
    table = summarise(rows, cfg.compare.methods)
    out = Path(cfg.output_dir)
    fields = sorted({k for t in table for k in t}, key=lambda k: (k not in ("method", "seeds"), k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(table)
    atomic_write_bytes(out / f"{cfg.compare.tables}.csv", buf.getvalue().encode())
    atomic_write_bytes(out / f"{cfg.compare.tables}.md", markdown(table, rows, cfg.compare.curve).encode())
    return {"dir": str(out), "table": table, "runs": rows, "tables": cfg.compare.tables}
