"""The tables of a comparison: one row of numbers per run, each run's share of the reference's
gain, their mean ± std per method, the differences to random, where a row sits on a curve of one
method's budgets, the markdown of comparison.md, and that markdown's tables as HTML."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ..data.bundled import NOISE_MARK


def _needed(passes: dict, kind: str, stage_filter) -> tuple[int, int]:
    """(sample-passes, tokens) a run needed for ``kind`` (forward|backward), done or from the cache."""
    n = tok = 0
    for prefix in ("", "cached_"):
        for stage, v in passes.get(f"{prefix}{kind}", {}).items():
            if stage_filter(stage):
                n += v
                tok += passes.get(f"{prefix}{kind}_tokens", {}).get(stage, 0)
    return n, tok


def run_row(run_dir: Path) -> dict:
    """The numbers of one finished run."""
    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if man.get("status") != "complete":
        raise ValueError(f"{run_dir} is not complete")
    params = man["model"]["total_parameters"]
    p = man.get("passes", {})
    fwd_n, fwd_tok = _needed(p, "forward", lambda st: not st.startswith("eval-"))
    bwd_n, bwd_tok = _needed(p, "backward", lambda st: True)
    row = {"method": man["method"], "seed": man["seed"], "budget": man.get("selection", {}).get("budget"),
           "pool": man.get("data", {}).get("n_pool"),
           "distinct_trained": man.get("rounds", {}).get("distinct_trained"),
           "samples_trained": man.get("rounds", {}).get("samples_trained"),
           "forward_passes": fwd_n, "backward_passes": bwd_n,
           "train_tokens": p.get("backward_tokens", {}).get("train", 0),
           "flops": 2.0 * params * fwd_tok + 6.0 * params * bwd_tok}
    for stage, v in man.get("stages", {}).items():
        row[f"seconds_{stage}"] = v.get("seconds")
    rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    sel = [r.get("select_seconds") for r in rounds]
    if sel and all(v is not None for v in sel):  # selection inside the rounds (part of the train stage)
        row["seconds_select"] = float(sum(sel))
    row.update(regime(rounds))
    ev = man.get("eval", {})
    for name, v in (ev.get("trained") or {}).items():
        row[f"loss_{name}"] = v["loss_per_sample"]
    for name, v in (ev.get("base") or {}).items():
        row[f"base_loss_{name}"] = v["loss_per_sample"]
    for name, v in (ev.get("val_trained") or {}).items():
        row[f"val_loss_{name}"] = v["loss_per_sample"]
    for name, v in (ev.get("val_base") or {}).items():
        row[f"val_base_loss_{name}"] = v["loss_per_sample"]
    return row


def regime(rounds: list[dict]) -> dict:
    """A bandit run's regime, from its round log: rounds, pulls per arm (rounds / arms), the arms
    pulled at least twice, and optimizer steps per round ({} for a run without a bandit)."""
    pulled = [r for r in rounds if r.get("arm") is not None]
    if not pulled:
        return {}
    n_arms = len(pulled[0].get("arm_probs") or pulled[0].get("arm_values") or []) or max(r["arm"] for r in pulled) + 1
    counts = np.bincount([r["arm"] for r in pulled], minlength=n_arms)
    return {"rounds": len(pulled), "pulls_per_arm": len(pulled) / n_arms, "arms_twice": int((counts >= 2).sum()),
            "n_arms": n_arms, "steps_per_round": float(np.mean([r.get("n_steps", 0) for r in pulled]))}


def gain_shares(rows: list[dict], reference: str) -> None:
    """Add to each row its share of the reference's gain, on the eval sets (``gain_share``) and on
    the validation sets (``val_gain_share``): per set (base - row) / (base - reference), with the
    reference's mean over its seeds, averaged over the sets (the mean over sets is not a set), so
    no one high-loss set decides. A set where the reference did not improve on the base is left out."""
    ref = [r for r in rows if r["method"] == reference]
    if not ref:
        return
    for prefix in ("", "val_"):
        sets = [k[len(prefix) + 5:] for k in ref[0] if k.startswith(prefix + "loss_") and k != prefix + "loss_mean"]
        target = {k: float(np.mean([r[f"{prefix}loss_{k}"] for r in ref])) for k in sets}
        for r in rows:
            shares = [(r[f"{prefix}base_loss_{k}"] - r[f"{prefix}loss_{k}"]) / (r[f"{prefix}base_loss_{k}"] - target[k])
                      for k in sets if f"{prefix}loss_{k}" in r and r[f"{prefix}base_loss_{k}"] > target[k]]
            if shares:
                r[f"{prefix}gain_share"] = float(np.mean(shares))


def on_curve(points: list[tuple[float, float]], value: float) -> tuple[str, float | None]:
    """Where ``value`` sits on a curve of (budget, share of gain) points (sorted by budget): the
    budget at which the curve first reaches it, linear between points; ("<", lowest budget) below the
    curve's first point, (">", highest budget) above its every point."""
    pts = sorted(points)
    if value <= pts[0][1]:
        return ("=", pts[0][0]) if value == pts[0][1] else ("<", pts[0][0])
    for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
        if v0 < value <= v1:
            return "=", b0 + (b1 - b0) * (value - v0) / (v1 - v0)
    return ">", pts[-1][0]


def pool_u0(run_dirs: list[Path]) -> dict[str, float] | None:
    """Base-model loss U0 by sample id, from the first run that computed it (every run of a
    comparison has the same pool and base model)."""
    for d in run_dirs:
        f = d / "scores.parquet"
        if f.is_file():
            t = pq.read_table(f, columns=["id", "u0"]).to_pydict()
            if not any(v != v or v is None for v in t["u0"]):  # a run that scored U0 has no NaN
                return dict(zip(t["id"], t["u0"]))
    return None


def selection_profile(run_dir: Path, u0: dict[str, float] | None) -> dict:
    """What a run trained on: each source's share of its distinct samples, their mean length in
    tokens, and their mean U0 percentile within the pool (50 = the pool's median)."""
    t = pq.read_table(run_dir / "scores.parquet", columns=["id", "source", "times_used", "length"]).to_pydict()
    used = [i for i, n in enumerate(t["times_used"]) if n > 0]
    if not used:
        return {}
    out = {f"share_{src}": sum(t["source"][i] == src for i in used) / len(used) for src in sorted(set(t["source"]))}
    out["mean_length"] = float(np.mean([t["length"][i] for i in used]))
    noise = [i.endswith(NOISE_MARK) for i in t["id"]]
    if any(noise):  # a pool with planted noise: how much of it the run trained, of its distinct samples and passes
        out["noise_distinct"] = sum(noise[i] for i in used) / len(used)
        out["noise_passes"] = sum(t["times_used"][i] for i in used if noise[i]) / sum(t["times_used"][i] for i in used)
        out["noise_pool"] = sum(noise) / len(noise)
    if u0 is not None:
        vals = np.asarray([u0[i] for i in t["id"]], dtype=np.float64)
        pct = 100.0 * (np.argsort(np.argsort(vals, kind="stable"), kind="stable") + 0.5) / len(vals)
        out["u0_percentile"] = float(pct[used].mean())
    return out


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Per method: mean and sample std (ddof 1; 0 for one seed) of every numeric field."""
    out = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        agg: dict = {"method": m, "seeds": len(mine)}
        keys = [k for k in mine[0] if k not in ("method", "seed")]
        for k in keys:
            vals = np.asarray([r.get(k) for r in mine if r.get(k) is not None], dtype=np.float64)
            if len(vals) == 0:
                continue
            agg[k] = float(vals.mean())
            agg[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(agg)
    return out


def _pm(t: dict, k: str, fmt: str = "{:.4f}") -> str:
    if k not in t:
        return "–"
    s = fmt.format(t[k])
    return s + (" ± " + fmt.format(t[f"{k}_std"]) if t["seeds"] > 1 else "")


def versus(table: list[dict], ref: str = "random", key: str = "loss_mean") -> dict[str, tuple[float, float]]:
    """Per method: its mean ``key`` minus ``ref``'s, and the standard error of that difference
    (sqrt(s_a²/n_a + s_b²/n_b), sample std over seeds; 0 where a side has one seed)."""
    r = next((t for t in table if t["method"] == ref), None)
    if r is None or key not in r:
        return {}
    out = {}
    for t in table:
        if t["method"] != ref and key in t:
            se = np.sqrt(t[f"{key}_std"] ** 2 / t["seeds"] + r[f"{key}_std"] ** 2 / r["seeds"])
            out[t["method"]] = (t[key] - r[key], float(se))
    return out


def curve_at(points: list[tuple[float, float]], budget: float) -> float | None:
    """The curve's share of gain at ``budget`` (linear between points); None outside its budgets."""
    pts = sorted(points)
    if not pts[0][0] <= budget <= pts[-1][0]:
        return None
    return float(np.interp(budget, [b for b, _ in pts], [v for _, v in pts]))


def _where(t: dict, curve: list[tuple[float, float]]) -> tuple[str, str, str]:
    """The 'worth <curve> at', 'ratio' and '<curve> at equal passes' cells of row ``t``."""
    same = curve_at(curve, t["passes_share"]) if curve and t.get("passes_share") else None
    passes = "–" if same is None else f"{same:.1%}"
    if not curve or "gain_share" not in t or not t.get("budget_share"):
        return "–", "–", passes
    how, b = on_curve(curve, t["gain_share"])
    rel = {"=": "", "<": "< ", ">": "> "}[how]
    return f"{rel}{b:.1%}", f"{rel}{b / t['budget_share']:.2f}", passes


def headline(table: list[dict], curve_prefix: str = "") -> list[str]:
    """The headline table's lines: share of the reference's gain (eval and validation), the
    difference to random, where each row sits on the curve, and the planted noise trained."""
    if not any("gain_share" in t for t in table):
        return []
    curve = [(t["budget_share"], t["gain_share"]) for t in table
             if curve_prefix and t["method"].startswith(curve_prefix) and "gain_share" in t and t.get("budget_share")]
    vs = versus(table, key="gain_share")
    noise = any("noise_distinct" in t for t in table)
    lines = ["Share of the reference's gain (per eval set (base − method) / (base − reference), averaged over the "
             "sets; 100% = the reference, 0% = the base model; mean ± std over seeds; higher is better). `vs random`: "
             "the difference to random at the same distinct budget ± its standard error."
             + (f" `worth {curve_prefix} at`: the budget at which {curve_prefix}'s curve (its rows at several "
                f"budgets, linear between them) reaches the row's share; `ratio`: that budget over the row's own; "
                f"`{curve_prefix} at equal passes`: the curve's share at the row's sample-passes (repeats "
                "counted), the baseline of equal training work."
                if curve else "")
             + " `val`: the same on the validation sets, where settings are chosen."
             + (" `noise`: the share of the distinct samples trained that were planted noise (the pool's share: "
                f"{next(t['noise_pool'] for t in table if 'noise_pool' in t):.0%})." if noise else ""), "",
             "| method | seeds | distinct trained | sample-passes | share of gain | vs random | "
             + (f"worth {curve_prefix} at | ratio | {curve_prefix} at equal passes | " if curve else "")
             + "val share of gain | "
             + ("noise | " if noise else ""),
             "| --- | --- | --- | --- | --- | --- | " + ("--- | --- | --- | " if curve else "") + "--- | "
             + ("--- | " if noise else "")]
    for t in table:
        v = f"{vs[t['method']][0]:+.1%} ± {vs[t['method']][1]:.1%}" if t["method"] in vs else "–"
        cells = [t["method"], str(t["seeds"]), _pm(t, "distinct_trained", "{:.0f}"), _pm(t, "samples_trained", "{:.0f}"),
                 _pm(t, "gain_share", "{:.1%}"), v, *(_where(t, curve) if curve else ()),
                 _pm(t, "val_gain_share", "{:.1%}"), *((_pm(t, "noise_distinct", "{:.1%}"),) if noise else ())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(table: list[dict], rows: list[dict], curve_prefix: str = "") -> str:
    sets = sorted({k[5:] for t in table for k in t if k.startswith("loss_") and not k.endswith("_std")} - {"mean"})
    vs = versus(table)
    lines = ["# Comparison", "", *headline(table, curve_prefix),
             "Held-out loss per sample (mean ± std over seeds; lower is better) after training on each "
             "method's selection. `base` is the model before training. `vs random`: the method's mean minus "
             "random's, ± the standard error of that difference. `trained tokens`: tokens (prompt and response) the "
             "training passes processed, repeats included.", "",
             "| method | seeds | distinct trained | trained tokens | mean | vs random | " + " | ".join(sets) + " |",
             "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in sets) + " |"]
    base = rows[0] if rows else {}
    if "base_loss_mean" in base:
        lines.append("| base | – | 0 | 0 | " + f"{base['base_loss_mean']:.4f} | – | "
                     + " | ".join(f"{base.get('base_loss_' + s, float('nan')):.4f}" for s in sets) + " |")
    for t in table:
        v = f"{vs[t['method']][0]:+.4f} ± {vs[t['method']][1]:.4f}" if t["method"] in vs else "–"
        lines.append(f"| {t['method']} | {t['seeds']} | {_pm(t, 'distinct_trained', '{:.0f}')} | "
                     f"{_pm(t, 'train_tokens', '{:.0f}')} | {_pm(t, 'loss_mean')} | {v} | "
                     + " | ".join(_pm(t, 'loss_' + s) for s in sets) + " |")
    vsets = sorted({k[9:] for t in table for k in t if k.startswith("val_loss_") and not k.endswith("_std")} - {"mean"})
    if vsets:
        lines += ["", "Validation loss per sample (the validation sets, on which settings are chosen; mean ± std over "
                      "seeds).", "",
                  "| method | mean | " + " | ".join(vsets) + " |", "| --- | --- | " + " | ".join("---" for _ in vsets) + " |"]
        if "val_base_loss_mean" in base:
            lines.append(f"| base | {base['val_base_loss_mean']:.4f} | "
                         + " | ".join(f"{base.get('val_base_loss_' + s, float('nan')):.4f}" for s in vsets) + " |")
        for t in table:
            lines.append(f"| {t['method']} | {_pm(t, 'val_loss_mean')} | " + " | ".join(_pm(t, 'val_loss_' + s) for s in vsets) + " |")
    bandits = [t for t in table if "rounds" in t]
    if bandits:
        lines += ["", "The bandit rows' regime (mean over seeds): rounds, pulls per arm (rounds / arms), arms pulled at "
                      "least twice, sample-passes per distinct sample, optimizer steps per round.", "",
                  "| method | rounds | pulls per arm | arms pulled twice | passes per distinct | steps per round |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for t in bandits:
            ratio = (f"{t['samples_trained'] / t['distinct_trained']:.2f}"
                     if t.get("distinct_trained") and "samples_trained" in t else "–")
            lines.append(f"| {t['method']} | {_pm(t, 'rounds', '{:.1f}')} | {_pm(t, 'pulls_per_arm', '{:.2f}')} | "
                         f"{_pm(t, 'arms_twice', '{:.1f}')} of {t['n_arms']:.0f} | {ratio} | "
                         f"{_pm(t, 'steps_per_round', '{:.1f}')} |")
    shares = sorted({k for t in table for k in t if k.startswith("share_") and not k.endswith("_std")})
    if shares:
        lines += ["", "What each method trained on (mean over seeds): each source's share of the distinct samples, "
                      "their mean length in tokens (prompt and response), and their mean percentile of base-model loss U0 in the pool "
                      "(50: the pool's median).", "",
                  "| method | mean length | U0 percentile | " + " | ".join(k[6:] for k in shares) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in shares) + " |"]
        for t in table:
            lines.append(f"| {t['method']} | {_pm(t, 'mean_length', '{:.0f}')} | {_pm(t, 'u0_percentile', '{:.1f}')} | "
                         + " | ".join(_pm(t, k, '{:.0%}') for k in shares) + " |")
    stages = [s for s in ("offline", "train", "select", "eval_before", "eval_after")
              if any(f"seconds_{s}" in t for t in table)]
    lines += ["", "Cost (mean over seeds): wall seconds per stage (`select`: the selection work inside the rounds, "
                  "part of `train`); sample-passes and FLOPs the method needs, including work taken from the shared "
                  "cache; evaluation excluded from passes and FLOPs.", "",
              "| method | " + " | ".join(f"{s} s" for s in stages) + " | forward passes | backward passes | FLOPs |",
              "| --- | " + " | ".join("---" for _ in stages) + " | --- | --- | --- |"]
    for t in table:
        lines.append(f"| {t['method']} | " + " | ".join(_pm(t, f'seconds_{s}', '{:.1f}') for s in stages)
                     + " | " + " | ".join(format(t[k], f) if k in t else "–" for k, f in
                                         (("forward_passes", ".0f"), ("backward_passes", ".0f"), ("flops", ".3g")))
                     + " |")
    return "\n".join(lines) + "\n"


def html_table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def markdown_tables(md: str) -> str:
    """The pipe tables and paragraphs of comparison.md as HTML."""
    out, rows = [], []

    def flush():
        if rows:
            out.append(html_table(rows[0], [r for r in rows[2:]]))
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
