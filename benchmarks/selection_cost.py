"""What selection costs each method, on the same pool, budget and number of rounds.

    python benchmarks/selection_cost.py [CONFIG] [key=value ...] [--rounds R] [--methods a,b,...] [--keep DIR]
    (default: the demo config; methods lead, iterit, less, dynamic, clusterucb)

Each method runs once, in one process, into a temporary directory (``--keep DIR``: into DIR/<method>,
kept, so that a killed benchmark started again skips the finished methods and resumes the
interrupted one from its last round), with the score cache off (so
that every offline pass is really made and timed) and no held-out evaluation. LEAD runs R rounds
(``rounds=R``); the peers, which re-select once per epoch, run R epochs (``train.epochs=R``;
``less`` selects once and trains R epochs); all share ``budget`` (LEAD: distinct samples in all;
the peers: samples per epoch).

Selection cost = everything a method computes to choose its data, training excluded:
    forward / backward sample-passes  the offline stage's (LEAD: U0, the warm-up's training and
                                      its two IFD passes; IterIT: the base model's two losses; LESS:
                                      its warm-up and gradient passes) and
                                      those made between rounds (``select-*`` stages)
    seconds                           the offline stage plus every round's ``select_seconds``
It prints them per method and each one's ratio to LEAD's. A figure of this machine is noisy:
compare ratios from one run, not across runs.

Then, in the same run: each method's passes by the formula of :mod:`leadsel.cost` from the run's
own sizes, beside what the run recorded (they must agree); the seconds per token of a forward
pass and of a forward + backward, measured on this machine with the same model on the pool's own
batches; and a projection to the papers' setting -- N = 600,000, budget 2.5% (15,000), 20 rounds
for LEAD, 3 epochs for the peers, the run's warm-up and validation settings -- of each method's
passes and seconds on this machine, and its ratio to LEAD's. The projection is arithmetic on the
formulas and the measured per-token seconds, not a run; its warm-up is the paper's (1% of the pool,
4 epochs) and its validation sets the runs'.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

PEERS = ("iterit", "less", "dynamic", "clusterucb")


def selection_cost(run_dir: Path) -> dict:
    """Selection passes and seconds of a finished run (see the module docstring)."""
    from leadsel.cost import recorded_by_run

    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    passes = recorded_by_run(run_dir)
    return {"method": man["method"], "rounds": len(rows), "trained": sum(r["n_selected"] for r in rows),
            "forward": sum(passes["forward"].values()), "backward": sum(passes["backward"].values()),
            "seconds": man["stages"]["offline"]["seconds"] + sum(r.get("select_seconds") or 0.0 for r in rows)}


def table(costs: list[dict]) -> str:
    """Markdown rows; ratios are to LEAD's passes (forward + backward) and seconds."""
    lead = next((c for c in costs if c["method"] == "lead"), None)

    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:.2f}" if b else "–"

    lines = ["| method | rounds | samples trained | forward passes | backward passes | selection seconds | "
             "passes / LEAD's | seconds / LEAD's |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in costs:
        passes = ratio(c["forward"] + c["backward"], lead and lead["forward"] + lead["backward"])
        lines.append(f"| {c['method']} | {c['rounds']} | {c['trained']} | {c['forward']} | {c['backward']} | "
                     f"{c['seconds']:.1f} | {passes} | {ratio(c['seconds'], lead and lead['seconds'])} |")
    return "\n".join(lines)


def check_formulas(out: Path, methods: list[str]) -> None:
    """Each run's selection passes by leadsel.cost's formula beside what it recorded."""
    from leadsel.cost import recorded, recorded_by_run, sizes_of_run, work

    print("\nformula against record (sample-passes, selection stages):")
    for m in methods:
        formula, got = recorded(work(m, sizes_of_run(out / m))), recorded_by_run(out / m)
        total = {k: (sum(formula[k].values()), sum(got[k].values())) for k in ("forward", "backward")}
        print(f"  {m}: forward {total['forward'][0]} by formula, {total['forward'][1]} recorded; backward "
              f"{total['backward'][0]} by formula, {total['backward'][1]} recorded; "
              f"{'equal' if formula == got else 'DIFFERENT: ' + json.dumps([formula, got])}")


def token_costs(cfg, batches: int = 6):
    """Seconds per token of a forward pass (inference mode) and of a forward + backward (the LoRA
    gradients), on the pool's own batches with the run's model and precision: the median of
    ``batches`` batches of ``train.per_device_batch_size`` samples each, after one warm-up batch."""
    import time

    import numpy as np
    import torch

    from leadsel.cost import TokenCosts
    from leadsel.data.encode import collate
    from leadsel.model.loss import per_sample_loss
    from leadsel.model.precision import autocast
    from leadsel.session import Session

    s = Session.open(cfg, method="loss", record=False)
    model, dev = s.model, s.accelerator.device
    bs = cfg.train.per_device_batch_size
    rng = np.random.default_rng(0)
    fwd, both = [], []
    for k in range(batches + 1):
        idx = rng.choice(len(s.pool), size=bs, replace=False)
        batch = {key: v.to(dev) for key, v in collate(s.pool, idx, s.pad_id).items()}
        tokens = int(batch["attention_mask"].sum())
        model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(dev.type, s.precision):
            per_sample_loss(model, **batch, chunk=cfg.model.logit_chunk)
        t1 = time.perf_counter()
        model.train()
        with autocast(dev.type, s.precision):
            loss, _ = per_sample_loss(model, **batch, chunk=cfg.model.logit_chunk)
        loss.sum().backward()
        model.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if k:   # the first batch warms the kernels up
            fwd.append((t1 - t0) / tokens)
            both.append((t2 - t1) / tokens)
    alone = s.alone_pool()
    c = TokenCosts(float(np.median(fwd)), float(np.median(both)), float(s.pool.lengths.mean()),
                   float(alone.lengths.mean()),
                   float(np.mean([v.encoded.lengths.mean() for v in s.validation_sets()])))
    print(f"\nmeasured here: forward {c.forward_s * 1e6:.1f} us a token, forward + backward "
          f"{c.forward_backward_s * 1e6:.1f} us a token ({c.forward_backward_s / c.forward_s:.2f}x); mean tokens a "
          f"sample {c.tokens:.0f} (response alone {c.alone_tokens:.0f}, validation {c.val_tokens:.0f})")
    return c


# the papers' setting: ~600k samples, 2.5% budget, LEAD's 20 rounds, the peers' 3 epochs, a warm-up
# of 1% of the pool (6,000) for 4 epochs
PAPER = {"n": 600_000, "budget": 0.025, "rounds": 20, "epochs": 3, "warmup": 0.01, "warmup_epochs": 4}


def projection(c, cfg, runs: list[Path]) -> str:
    """Passes and seconds at the papers' setting (PAPER) by leadsel.cost's formulas, priced by ``c``;
    the validation sets are the runs' (their largest), the other settings the config's."""
    import math

    from leadsel.cost import Sizes, clusterucb_draws, iterit_windows, seconds, work
    from leadsel.schema import count_of

    n, epochs = PAPER["n"], PAPER["epochs"]
    budget = count_of(PAPER["budget"], n)
    val = max(sum(int(v["n"]) for v in json.loads((r / "run.json").read_text())["data"].get("validation", {}).values())
              for r in runs)
    k = cfg.targeted.k or 8
    sizes = Sizes(n=n, budget=budget, epochs=epochs, warmup=count_of(PAPER["warmup"], n),
                  warmup_epochs=PAPER["warmup_epochs"], val=val,
                  windows=iterit_windows(n, budget, epochs, cfg.iterit.update_ratio),   # every sample a candidate
                  draws=clusterucb_draws([math.ceil(n / k)] * k, n, cfg.targeted.draws, cfg.targeted.csp, epochs))
    rows = []
    for m in ("lead", *PEERS):
        terms = work(m, sizes)
        kinds = {kind: sum(t.n for t in terms if t.kind == kind) for kind in ("forward", "gradient", "training")}
        rows.append((m, kinds, seconds(terms, c)))
    lead_s = rows[0][2]
    lines = [f"\nprojected (formulas x measured seconds a token; not run): N = {n:,}, budget {budget:,}, "
             f"{PAPER['rounds']} rounds for LEAD, {epochs} epochs for the peers, warm-up {sizes.warmup:,} x "
             f"{sizes.warmup_epochs} epochs, validation {val} samples, IterIT window {sizes.windows[0]:,}, "
             f"ClusterUCB draws {sizes.draws[0]:,} an epoch ({k} clusters)",
             "| method | forward passes | gradient passes | warm-up training passes | projected hours here | / LEAD's |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, kinds, sec in rows:
        lines.append(f"| {m} | {kinds['forward']:,} | {kinds['gradient']:,} | {kinds['training']:,} | "
                     f"{sec / 3600:.1f} | {sec / lead_s:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from leadsel.cli import demo_config_path
    from leadsel.config import load_config
    from leadsel.runner import run
    from leadsel.select import METHODS

    rounds, methods = 3, ["lead", *PEERS]
    args = list(argv)
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    if "--methods" in args:
        i = args.index("--methods")
        methods = args[i + 1].split(",")
        del args[i:i + 2]
    keep = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = Path(args[i + 1])
        del args[i:i + 2]
    config = args.pop(0) if args and "=" not in args[0] else demo_config_path()
    costs = []
    with tempfile.TemporaryDirectory(prefix="leadsel-selection-cost-") as tmp:
        out = keep or Path(tmp)
        for m in methods:
            per = [f"train.epochs={rounds}"] if METHODS[m].fixed_length else [f"rounds={rounds}"]
            cfg = load_config(config, [*args, f"method={m}", *per, f"output_dir={out / m}", "scoring.cache=false",
                                       "evaluate=false"])
            print(f"== {m}", file=sys.stderr, flush=True)
            run(cfg)  # with --keep: a finished run is not run again, an interrupted one resumes
            costs.append(selection_cost(out / m))
        print(f"selection cost, same pool and budget, {rounds} rounds (LEAD) / epochs (peers), cache off:")
        print(table(costs))
        check_formulas(out, methods)
        base = load_config(config, [*args, "scoring.cache=true", "evaluate=false", f"output_dir={out / '_timing'}"])
        print(projection(token_costs(base), base, [out / m for m in methods]))


if __name__ == "__main__":
    main(sys.argv[1:])
