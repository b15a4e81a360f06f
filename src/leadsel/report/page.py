"""The report page: figures with captions, tables and a render check, for a run or a comparison."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.bundled import NOISE_MARK
from ..utils import atomic_write_bytes
from .plots import (STAGES, Run, png, plot_bandit, plot_composition, plot_cost, plot_heldout_comparison,
                    plot_heldout_run, plot_idu, plot_step_loss)
from .tables import html_table, markdown_tables, run_row, summarise


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    png: str | None
    missing: str = ""


def _figure(fid: str, title: str, caption: str, fig, missing: str) -> Figure:
    return Figure(fid, title, caption, png(fig) if fig is not None else None, missing)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#666;font-size:.9em}table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0}figure img{max-width:100%}
figcaption{color:#555;font-size:.88em;max-width:60em}.missing{color:#a60;font-style:italic}
footer{margin-top:3em;color:#888;font-size:.8em}"""

SCRIPT_HEAD = ("<script>window.addEventListener('error',function(){var b=document.body;"
               "if(b){b.dataset.errors=(+(b.dataset.errors||0))+1;}});</script>")
SCRIPT_TAIL = """<script>window.addEventListener('load',function(){
var imgs=[].slice.call(document.querySelectorAll('figure img'));
var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
document.body.dataset.plots=imgs.length;document.body.dataset.plotsOk=ok;
document.getElementById('render-check').textContent=ok+' of '+imgs.length+' plots rendered';});</script>"""


def page(title: str, meta: str, intro: str, figures: list[Figure]) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style>{SCRIPT_HEAD}</head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{meta}</p>", intro]
    for f in figures:
        parts.append(f"<h2 id='h-{f.id}'>{html.escape(f.title)}</h2>")
        if f.png is None:
            parts.append(f"<p class='missing' id='{f.id}'>{html.escape(f.missing)}</p>")
            continue
        parts.append(f"<figure id='{f.id}'><img alt='{html.escape(f.title)}' src='data:image/png;base64,{f.png}'>"
                     f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    parts.append("<footer>Written by <code>leadsel report</code> from the run artifacts. "
                 "<span id='render-check'></span></footer>")
    parts.append(SCRIPT_TAIL + "</body></html>")
    return "\n".join(parts)


def _fmt(v, spec=".4f") -> str:
    return "–" if v is None else format(v, spec)


def arms_table(run: Run) -> str:
    """Per arm of a bandit run: its pool samples (and their planted noise), how often it was pulled,
    and the rewards it got, raw and as the bandit saw them: whether the pulls followed the rewards."""
    pulls = [r for r in run.rows if r.get("arm") is not None]
    if not pulls or "cluster" not in run.scores:
        return ""
    cluster = np.asarray(run.scores["cluster"])
    noise = np.array([str(i).endswith(NOISE_MARK) for i in run.scores.get("id", [])], dtype=bool)
    rows = []
    for k in range(int(cluster.max()) + 1):
        mine = [r for r in pulls if r["arm"] == k]
        rows.append([k, int((cluster == k).sum()), *([f"{noise[cluster == k].mean():.0%}"] if noise.any() else []),
                     len(mine), _fmt(float(np.mean([r["reward"] for r in mine])) if mine else None),
                     _fmt(float(np.mean([r["reward_norm"] for r in mine])) if mine else None, "+.3f")])
    head = ["arm", "pool samples", *(["planted noise"] if noise.any() else []), "pulls", "mean reward",
            "mean scaled reward"]
    return "<h2 id='h-arms'>Pulls and rewards per arm</h2>" + html_table(head, rows)


def noise_trained(run: Run) -> str | None:
    """The share of planted noise among the distinct samples trained, and in the pool (None: no noise)."""
    ids, used = run.scores.get("id"), run.scores.get("times_used")
    if ids is None or used is None:
        return None
    noise = np.array([str(i).endswith(NOISE_MARK) for i in ids], dtype=bool)
    if not noise.any() or not (np.asarray(used) > 0).any():
        return None
    return f"{noise[np.asarray(used) > 0].mean():.1%} (pool: {noise.mean():.1%})"


def run_page(run: Run) -> str:
    man = run.manifest
    ev = man.get("eval") or {}
    rounds = man.get("rounds") or {}
    before = (ev.get("base") or {}).get("mean", {}).get("loss_per_sample")
    after = (ev.get("trained") or {}).get("mean", {}).get("loss_per_sample")
    seconds = {s: (man.get("stages", {}).get(s) or {}).get("seconds") for s in STAGES}
    summary = html_table(["", "value"], [
        ["method", run.method], ["seed", run.seed], ["model", man.get("model", {}).get("name", "?")],
        ["pool size", man.get("data", {}).get("n_pool", "?")],
        ["budget (distinct samples)", man.get("selection", {}).get("budget", "–")],
        ["rounds", rounds.get("n", len(run.rows))], ["samples trained (with repeats)", rounds.get("samples_trained", "–")],
        ["distinct samples trained", rounds.get("distinct_trained", "–")],
        ["held-out loss, base → trained (mean over sets)", f"{_fmt(before)} → {_fmt(after)}"],
        *([["planted noise among the distinct samples trained", noise_trained(run)]] if noise_trained(run) else []),
        ["wall seconds", ", ".join(f"{s} {v:.1f}" for s, v in seconds.items() if v is not None)]])
    cost = [{"method": run.method, **{f"seconds_{s}": v for s, v in seconds.items() if v is not None}}]
    figures = [
        _figure("plot-loss", "Training loss over optimizer steps",
                "Each optimizer step's mean in-loop loss (faint) and its moving average; dotted lines mark where "
                "each round starts. Each round trains on new or reused samples, so the curve is not a smooth "
                "learning curve: it shows how hard the chosen samples were when they were trained.",
                plot_step_loss([run]), "This run recorded no per-step losses."),
        _figure("plot-bandit", "The bandit: arms pulled and their probabilities",
                "Top: the cluster (arm) pulled in each round, with how often each was pulled. Bottom: the "
                "distribution the bandit drew from in that round (EXP3-style) or each arm's value (UCB, "
                "Thompson); an exhausted arm has probability 0.",
                plot_bandit(run), f"{run.method} uses no bandit."),
        _figure("plot-idu", "IDU per cluster over rounds",
                "Per cluster, the median of its samples' IDU (line), the 25–75th percentile band (dark) and the "
                "10–90th (light), after each round; ▼ marks the rounds the cluster was pulled. IDU falls where "
                "training has consumed a cluster's utility.",
                plot_idu(run), "This method keeps no IDU."),
        _figure("plot-composition", "What was selected, against the pool",
                "Share of each source (and of each cluster) in the pool and among the distinct samples trained.",
                plot_composition([run]), "No scores.parquet in this run."),
        _figure("plot-heldout", "Held-out loss, base against trained",
                "Change of the loss per sample on each held-out set and their mean (under each set: base → "
                "trained); below zero, training helped. The held-out sets never overlap the pool.",
                plot_heldout_run(run), "This run was not evaluated (evaluate: false)."),
        _figure("plot-cost", "Cost per stage", "Wall seconds of each stage of this run.",
                plot_cost(cost), "No stage timings recorded."),
    ]
    meta = html.escape(f"{run.dir.name} · status {man.get('status')} · started {man.get('started', '?')} · "
                       f"finished {man.get('finished', '?')}")
    return page(f"leadsel run: {run.method}", meta, summary + arms_table(run), figures)


def comparison_runs(cmp_dir: Path) -> list[Run]:
    runs = []
    for sub in sorted(cmp_dir.iterdir()):
        if (sub / "run.json").is_file():
            run = Run.load(sub)
            if run.manifest.get("status") == "complete":
                runs.append(run)
    if not runs:
        raise FileNotFoundError(f"{cmp_dir} holds no finished run (expected <method>-seed<seed>/run.json)")
    return runs


def comparison_page(cmp_dir: Path) -> str:
    runs = comparison_runs(cmp_dir)
    order = runs[0].manifest.get("config", {}).get("compare", {}).get("methods", [])
    methods = sorted(dict.fromkeys(r.row for r in runs),
                     key=lambda m: (order.index(m) if m in order else len(order), m))
    rows = [{**run_row(r.dir), "method": r.row} for r in runs]
    table = summarise(rows, methods)
    first = [next(r for r in runs if r.row == m) for m in methods]
    # every table file of the directory (two comparisons may share it): comparison.md first
    mds = sorted(cmp_dir.glob("*.md"), key=lambda f: (f.name != "comparison.md", f.name))
    intro = "\n".join(f"<h2>{html.escape(f.stem)}</h2>" + markdown_tables(f.read_text(encoding="utf-8")) for f in mds)
    lead = next((r for r in first if any(x.get("arm") is not None for x in r.rows)), None)
    for r in first:   # each bandit row's first seed: did its pulls follow its rewards?
        arms = arms_table(r)
        if arms:
            intro += arms.replace("Pulls and rewards per arm", f"Pulls and rewards per arm: {html.escape(r.label)}", 1)
    figures = [
        _figure("plot-heldout", "Held-out loss per method: change from the base model",
                "Per held-out set and their mean: the trained model's loss minus the base model's, mean over seeds "
                "with ± one standard deviation (error bars). Below zero, training helped.",
                plot_heldout_comparison(table, rows[0]), "These runs were not evaluated."),
        _figure("plot-cost", "Cost per method",
                "Left: wall seconds per stage (mean over seeds). Offline scores come from a shared cache, so a "
                "run's offline seconds depend on which run scored first; the FLOPs (right) count the work a "
                "method needs, cached or not: 2·N per scored token, 6·N per trained token.",
                plot_cost(table), "No stage timings recorded."),
        _figure("plot-loss", "Training loss over optimizer steps (first seed of each method)",
                "Each method's per-step in-loop loss (faint) and its moving average. Methods train on different "
                "samples, so these are not learning curves on common data: a lower curve means easier samples.",
                plot_step_loss(first), "These runs recorded no per-step losses."),
        _figure("plot-composition", "What each method selected, by source (first seed)",
                "Share of each source in the pool and among the distinct samples each method trained.",
                plot_composition(first), "No scores.parquet in these runs."),
        _figure("plot-bandit", f"The bandit in {lead.label if lead else 'LEAD'}",
                "The cluster pulled each round and the distribution the bandit drew from.",
                plot_bandit(lead) if lead else None, "No method in this comparison uses a bandit."),
        _figure("plot-idu", f"IDU per cluster over rounds in {lead.label if lead else 'LEAD'}",
                "Median, 25–75th and 10–90th percentile of each cluster's IDU after each round; ▼: pulled.",
                plot_idu(lead) if lead else None, "No method in this comparison keeps IDU."),
    ]
    seeds = sorted({r.seed for r in runs})
    meta = html.escape(f"{cmp_dir.name} · {len(runs)} finished runs · methods {', '.join(methods)} · seeds "
                       f"{', '.join(map(str, seeds))}")
    return page("leadsel comparison", meta, intro, figures)


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run directory or a comparison directory; returns its path."""
    path = Path(path)
    if (path / "run.json").is_file():
        run = Run.load(path)
        text = run_page(run)
    elif path.is_dir():
        text = comparison_page(path)
    else:
        raise FileNotFoundError(f"{path} is neither a run directory (run.json) nor a comparison directory")
    target = Path(out) if out else path / "report.html"
    atomic_write_bytes(target, text.encode("utf-8"))
    return target
