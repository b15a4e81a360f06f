"""``leadsel report RUN_DIR|COMPARISON_DIR``: one self-contained ``report.html`` to look at.

:mod:`.plots` draws, :mod:`.tables` holds the tables (shared with ``leadsel compare``), :mod:`.page`
assembles the page.

Everything comes from a run's artifacts (run.json, rounds.jsonl, scores.parquet) or, for a
comparison directory, from the runs under it; nothing is recomputed. Plots are drawn with
matplotlib (Agg) and embedded as PNG data URIs, so the file opens anywhere, offline, on its own:

* training loss over optimizer steps (per step, and its moving average);
* the bandit: the arm pulled each round and the arm probabilities (or values) it chose from;
* IDU per cluster over rounds (10/25/50/75/90th percentiles; LEAD runs);
* what was selected, by source and by cluster, against the pool;
* held-out loss: base against trained per eval set (a run), or the change from base per method,
  mean ± std over seeds (a comparison);
* cost: wall seconds per stage, and the FLOPs each method needed (a comparison).

A short script at the end of the page counts the plots that rendered (shown at the bottom, and
in ``data-plots``/``data-plots-ok`` on ``<body>``): the test renders the page in headless
Chromium and checks those counts and that no script error occurred.
"""
from __future__ import annotations

from .page import write_report

__all__ = ["write_report"]
