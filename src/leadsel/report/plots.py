"""The report's plots, drawn from a run's artifacts with matplotlib (Agg) and returned as figures."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

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
    def row(self) -> str:
        """Its row in a comparison: the directory's name before ``-seed<N>`` (a method, or a variant
        of one), or the method for a directory named otherwise."""
        name, sep, seed = self.dir.name.rpartition("-seed")
        return name if sep and seed == str(self.seed) else self.method

    @property
    def label(self) -> str:
        return f"{self.row} (seed {self.seed})"

    @classmethod
    def load(cls, run_dir: Path) -> "Run":
        man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        path = run_dir / "rounds.jsonl"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] \
            if path.is_file() else []
        scores = {}
        if (run_dir / "scores.parquet").is_file():
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


def png(fig) -> str:
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
