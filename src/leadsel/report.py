"""``leadsel report RUN_DIR|COMPARISON_DIR``: one self-contained ``report.html`` to look at.

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

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STAGES = ("model", "data", "offline", "eval_before", "train", "eval_after", "save")


@dataclass
class Run:
    dir: Path
    manifest: dict
    rows: list[dict]
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def seed(self) -> int:
        return self.manifest["seed"]

    @property
    def label(self) -> str:
        return f"{self.method} (seed {self.seed})"

    @classmethod
    def load(cls, run_dir: Path) -> "Run":
        man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        path = run_dir / "rounds.jsonl"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] \
            if path.is_file() else []
        scores = {}
        if (run_dir / "scores.parquet").is_file():
            import pyarrow.parquet as pq

            t = pq.read_table(run_dir / "scores.parquet")
            scores = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        return cls(run_dir, man, rows, scores)


# -- plots ------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _moving(x: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or len(x) < w:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:w] / np.arange(1, w)  # growing window at the start, so the curve starts at step 1
    return np.concatenate([head, (c[w:] - c[:-w]) / w])


def step_losses(run: Run) -> tuple[np.ndarray, list[int]]:
    """Per-step losses of a run, and the step at which each round after the first starts."""
    losses, starts = [], []
    for r in run.rows:
        starts.append(len(losses))
        losses += r.get("step_losses") or []
    return np.asarray(losses, dtype=np.float64), starts[1:]


def plot_step_loss(runs: list[Run]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    any_data = False
    for i, run in enumerate(runs):
        y, starts = step_losses(run)
        if not len(y):
            continue
        any_data = True
        x = np.arange(1, len(y) + 1)
        color = f"C{i % 10}"
        ax.plot(x, y, color=color, alpha=0.25, lw=0.8)
        ax.plot(x, _moving(y, max(1, len(y) // 15)), color=color, lw=1.8, label=run.label)
        if len(runs) == 1:
            for s in starts:
                ax.axvline(s + 0.5, color="grey", lw=0.6, ls=":")
    if not any_data:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("training loss (in-loop)")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_bandit(run: Run):
    rows = [r for r in run.rows if r.get("arm") is not None]
    if not rows:
        return None
    plt = _plt()
    rounds = [r["round"] for r in rows]
    arms = [r["arm"] for r in rows]
    key = "arm_probs" if rows[0].get("arm_probs") is not None else "arm_values"
    vals = np.asarray([r.get(key) or [] for r in rows], dtype=np.float64)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    n_arms = vals.shape[1] if vals.ndim == 2 else max(arms) + 1
    pulls = np.bincount(arms, minlength=n_arms)
    a1.scatter(rounds, arms, c=[f"C{a % 10}" for a in arms], s=40, zorder=3)
    a1.set_yticks(range(n_arms))
    a1.set_yticklabels([f"{k} ({pulls[k]}×)" for k in range(n_arms)])
    a1.set_ylabel("arm pulled (pulls)")
    if vals.ndim == 2 and vals.size:
        if key == "arm_probs":
            a2.stackplot(rounds, vals.T, labels=[f"cluster {k}" for k in range(n_arms)],
                         colors=[f"C{k % 10}" for k in range(n_arms)], alpha=0.8, step="mid")
            a2.set_ylim(0, 1)
            a2.set_ylabel("arm probability\n(when pulling)")
        else:
            for k in range(n_arms):
                a2.plot(rounds, vals[:, k], color=f"C{k % 10}", marker=".", label=f"cluster {k}")
            a2.set_ylabel("arm value")
        a2.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    a2.set_xlabel("round")
    a2.set_xticks(rounds if len(rounds) <= 30 else a2.get_xticks())
    return fig


def plot_idu(run: Run):
    rows = [r for r in run.rows if r.get("idu_quantiles")]
    plt = _plt()
    if rows:
        clusters = sorted({int(k) for r in rows for k in r["idu_quantiles"]})
        cols = min(4, len(clusters))
        nrow = -(-len(clusters) // cols)
        fig, axes = plt.subplots(nrow, cols, figsize=(2.6 * cols + 1, 2.2 * nrow), sharex=True, sharey=True,
                                 squeeze=False)
        for ax in axes.flat[len(clusters):]:
            ax.axis("off")
        pulled = {r["round"]: r.get("arm") for r in rows}
        for ax, k in zip(axes.flat, clusters):
            pts = [(r["round"], r["idu_quantiles"][str(k)]) for r in rows if str(k) in r["idu_quantiles"]]
            x = np.asarray([p[0] for p in pts])
            q = np.asarray([p[1] for p in pts])
            color = f"C{k % 10}"
            ax.fill_between(x, q[:, 0], q[:, 4], color=color, alpha=0.15, lw=0)
            ax.fill_between(x, q[:, 1], q[:, 3], color=color, alpha=0.35, lw=0)
            ax.plot(x, q[:, 2], color=color, lw=1.6)
            mine = [rr for rr in x if pulled.get(int(rr)) == k]
            if mine:
                ax.plot(mine, [q[list(x).index(rr), 2] for rr in mine], "v", color="k", ms=4)
            ax.set_title(f"cluster {k}", fontsize=9)
        for ax in axes[-1]:
            ax.set_xlabel("round")
        for ax in axes[:, 0]:
            ax.set_ylabel("IDU")
        return fig
    idu, cl = run.scores.get("idu"), run.scores.get("cluster")
    if idu is None or cl is None or not np.isfinite(idu).any() or (cl < 0).all():
        return None
    clusters = sorted(set(cl[cl >= 0].tolist()))
    fig, ax = plt.subplots(figsize=(9, 3))
    data = [idu[(cl == k) & np.isfinite(idu)] for k in clusters]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(clusters) + 1), [f"cluster {k}" for k in clusters])
    ax.set_ylabel("IDU at the end")
    return fig


def _shares(values: np.ndarray, names: list) -> np.ndarray:
    return np.asarray([(values == n).mean() if len(values) else 0.0 for n in names])


def plot_composition(runs: list[Run]):
    """Share of each source (and cluster) in the pool and in each run's selection."""
    base = runs[0].scores
    if "source" not in base or "times_used" not in base:
        return None
    plt = _plt()
    sources = sorted(set(base["source"].tolist()))
    has_cluster = "cluster" in base and (base["cluster"] >= 0).any()
    panels = [("source", sources)]
    if has_cluster and len(runs) == 1:
        panels.append(("cluster", sorted(set(base["cluster"].tolist()))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1.5, 0.55 * (len(runs) + 1) + 1.4),
                             squeeze=False)
    for ax, (col, names) in zip(axes[0], panels):
        bars = [("pool", _shares(base[col], names))]
        for run in runs:
            used = run.scores["times_used"] > 0
            bars.append((f"selected: {run.label}" if len(runs) > 1 else f"selected ({int(used.sum())})",
                         _shares(run.scores[col][used], names)))
        labels = [b[0] for b in bars][::-1]
        left = np.zeros(len(bars))
        shares = np.asarray([b[1] for b in bars])[::-1]
        for j, name in enumerate(names):
            ax.barh(labels, shares[:, j], left=left, color=f"C{j % 10}", label=str(name) if col == "source"
                    else f"cluster {name}")
            for i, v in enumerate(shares[:, j]):
                if v >= 0.06:
                    ax.text(left[i] + v / 2, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white")
            left += shares[:, j]
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share by {col}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(len(names), 4), fontsize=7)
    return fig


def plot_heldout_run(run: Run):
    ev = run.manifest.get("eval") or {}
    base, trained = ev.get("base") or {}, ev.get("trained") or {}
    sets = [k for k in trained if k != "mean"] + (["mean"] if "mean" in trained else [])
    if not sets or not base:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(sets) + 3, 3.2))
    d = [trained[s]["loss_per_sample"] - base[s]["loss_per_sample"] for s in sets]
    ax.bar(range(len(sets)), d, 0.6, color=["C2" if v < 0 else "C3" for v in d])
    for i, v in enumerate(d):
        ax.text(i, v, f"{v:+.3f}", ha="center", va="top" if v < 0 else "bottom", fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(sets)), [f"{s}\n{base[s]['loss_per_sample']:.3f}→{trained[s]['loss_per_sample']:.3f}"
                                     for s in sets], fontsize=7)
    ax.set_ylabel("held-out loss − base\n(lower is better)")
    return fig


def plot_heldout_comparison(table: list[dict], base_row: dict):
    sets = sorted({k[5:] for t in table for k in t if k.startswith("loss_") and not k.endswith("_std")} - {"mean"})
    sets.append("mean")
    if not table or not base_row:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.4 * len(sets) + 3, 3.6))
    width = 0.8 / len(table)
    x = np.arange(len(sets))
    for i, t in enumerate(table):
        d = [t.get(f"loss_{s}", np.nan) - base_row.get(f"base_loss_{s}", np.nan) for s in sets]
        e = [t.get(f"loss_{s}_std", 0.0) for s in sets]
        ax.bar(x - 0.4 + width * (i + 0.5), d, width, yerr=e, capsize=2, color=f"C{i % 10}",
               label=f"{t['method']} ({t['seeds']} seed{'s' if t['seeds'] != 1 else ''})")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, sets)
    ax.set_ylabel("held-out loss − base\n(lower is better)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return fig


def plot_cost(table: list[dict]):
    """Stacked wall seconds per stage per method; FLOPs beside it when known."""
    plt = _plt()
    stages = [s for s in STAGES if any(f"seconds_{s}" in t for t in table)]
    if not stages:
        return None
    flops = all("flops" in t for t in table)
    fig, axes = plt.subplots(1, 2 if flops else 1, figsize=(11 if flops else 7, 0.45 * len(table) + 1.6),
                             squeeze=False)
    ax = axes[0, 0]
    labels = [t["method"] for t in table][::-1]
    left = np.zeros(len(table))
    for j, s in enumerate(stages):
        v = np.asarray([t.get(f"seconds_{s}") or 0.0 for t in table])[::-1]
        ax.barh(labels, v, left=left, color=f"C{j % 10}", label=s)
        left += v
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.0f} s", va="center", fontsize=7)
    ax.set_xlabel("wall seconds (mean over seeds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, fontsize=7)
    if flops:
        a2 = axes[0, 1]
        v = np.asarray([t["flops"] for t in table])[::-1]
        a2.barh(labels, v, color="C4")
        for i, f in enumerate(v):
            a2.text(f, i, f" {f:.2e}", va="center", fontsize=7)
        a2.set_xlabel("estimated FLOPs needed (excl. evaluation)")
        a2.set_yticklabels([])
    return fig


# -- page -------------------------------------------------------------------------------------
@dataclass
class Figure:
    id: str
    title: str
    caption: str
    png: str | None
    missing: str = ""


def _figure(fid: str, title: str, caption: str, fig, missing: str) -> Figure:
    return Figure(fid, title, caption, _png(fig) if fig is not None else None, missing)


def _table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def markdown_tables(md: str) -> str:
    """The pipe tables and paragraphs of comparison.md as HTML."""
    out, rows = [], []

    def flush():
        if rows:
            out.append(_table(rows[0], [r for r in rows[2:]]))
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("# "):
            continue
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


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


def run_page(run: Run) -> str:
    man = run.manifest
    ev = man.get("eval") or {}
    rounds = man.get("rounds") or {}
    before = (ev.get("base") or {}).get("mean", {}).get("loss_per_sample")
    after = (ev.get("trained") or {}).get("mean", {}).get("loss_per_sample")
    seconds = {s: (man.get("stages", {}).get(s) or {}).get("seconds") for s in STAGES}
    summary = _table(["", "value"], [
        ["method", run.method], ["seed", run.seed], ["model", man.get("model", {}).get("name", "?")],
        ["pool size", man.get("data", {}).get("n_pool", "?")],
        ["budget (distinct samples)", man.get("selection", {}).get("budget", "–")],
        ["rounds", rounds.get("n", len(run.rows))], ["samples trained (with repeats)", rounds.get("samples_trained", "–")],
        ["distinct samples trained", rounds.get("distinct_trained", "–")],
        ["held-out loss, base → trained (mean over sets)", f"{_fmt(before)} → {_fmt(after)}"],
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
    return page(f"leadsel run: {run.method}", meta, summary, figures)


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
    from .compare import run_row, summarise

    runs = comparison_runs(cmp_dir)
    order = runs[0].manifest.get("config", {}).get("compare", {}).get("methods", [])
    methods = sorted(dict.fromkeys(r.method for r in runs),
                     key=lambda m: (order.index(m) if m in order else len(order), m))
    rows = [run_row(r.dir) for r in runs]
    table = summarise(rows, methods)
    first = [next(r for r in runs if r.method == m) for m in methods]
    md = cmp_dir / "comparison.md"
    intro = markdown_tables(md.read_text(encoding="utf-8")) if md.is_file() else ""
    lead = next((r for r in first if any(x.get("arm") is not None for x in r.rows)), None)
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
    from .utils import atomic_write_bytes

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
