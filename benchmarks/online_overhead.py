"""What LEAD's online stage costs on top of plain training (target: <= 3% extra time).

    python benchmarks/online_overhead.py [CONFIG] [key=value ...] [--repeat N]   (default: demo config)

In one process, on the config's model and pool (offline scores from the cache, computed if
missing), LEAD's rounds are first run once to record its sample sequence. Then two models with
the same LoRA settings train that sequence round by round, interleaved, and ``--repeat`` times
with the order of the two alternated, so that machine noise hits both alike:

    lead     plan (bandit + IDU top-k), train with the first-order statistics on (delta, summed
             gradient), observe (IDU update, cosines, reward, bandit update)
    replay   the same indices, trained with the statistics off and no selector

It prints both totals and their ratio, and, because a 2-core machine's noise can exceed the
effect, the overhead measured directly: the selector's own time (plan + observe) and the
trainer's time inside the statistics code, against the replay's training time. The per-round
checkpoint time (resume, not selection) is printed apart.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    import copy

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import numpy as np
    import torch
    from accelerate.utils import set_seed

    from leadsel.cli import demo_config_path
    from leadsel.config import load_config
    from leadsel.model.load import load_model
    from leadsel.scoring.offline import offline_scores
    from leadsel.select import PoolView, RoundStats, build_selector, needs
    from leadsel.session import Session
    from leadsel.train.checkpoint import Checkpointer, load_trainable_state, trainable_state
    from leadsel.train.trainer import Trainer

    repeat = 2
    if "--repeat" in argv:
        i = argv.index("--repeat")
        repeat = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    path = argv[0] if argv and "=" not in argv[0] else demo_config_path()
    overrides = [a for a in argv if "=" in a]
    tmp = tempfile.mkdtemp(prefix="leadsel-overhead-")
    cfg = load_config(path, [f"output_dir={tmp}/run", "evaluate=false", *overrides])
    s = Session.open(cfg, method=cfg.method)
    scores = offline_scores(s, needs(cfg), cfg.lead.ifd_kind)
    set_seed(cfg.seed)
    selector, info = build_selector(cfg, PoolView(s.pool.ids, s.pool.sources, scores))
    lead = Trainer(s.model, s.pool, cfg.train, s.accelerator, s.pad_id, s.precision, track=True)
    other = load_model(s.model_path, cfg.model.finetuning, cfg.model.lora).to(s.accelerator.device)
    replay = Trainer(other, s.pool, cfg.train, s.accelerator, s.pad_id, s.precision, track=False)
    ckpt = Checkpointer(tmp)
    print(f"model {cfg.model.name} ({s.precision}), pool {len(s.pool)}, budget {info['budget']}, "
          f"trainable parameters {sum(p.numel() for p in s.model.parameters() if p.requires_grad):,}")
    # the sequence LEAD chooses (its own training run, not timed); every timed pass starts both
    # models from the same initial state, so LEAD makes the same choices again
    start = {t: (trainable_state(t.model), copy.deepcopy(t.state_dict())) for t in (lead, replay)}
    plans, r = [], 1
    while (idx := selector.plan(r)) is not None:
        res = lead.train(idx)
        selector.observe(idx, res.losses, RoundStats.of(res))
        plans.append(idx)
        r += 1
    t_lead = t_replay = t_select = t_ckpt = 0.0
    ratios = []
    for rep in range(repeat):
        for t, (weights, state) in start.items():
            load_trainable_state(t.model, weights)
            t.load_state_dict(copy.deepcopy(state))
        set_seed(cfg.seed)
        selector, _ = build_selector(cfg, PoolView(s.pool.ids, s.pool.sources, scores))
        lead.stats_seconds = 0.0
        for r, want in enumerate(plans, start=1):
            def run_lead():
                t0 = time.perf_counter()
                idx = selector.plan(r)
                t1 = time.perf_counter()
                if idx is None or not np.array_equal(idx, want):
                    raise RuntimeError(f"round {r}: LEAD chose differently from its recorded run")
                res = lead.train(idx)
                t2 = time.perf_counter()
                selector.observe(idx, res.losses, RoundStats.of(res))
                t3 = time.perf_counter()
                return t3 - t0, (t1 - t0) + (t3 - t2), idx

            def run_replay():
                t0 = time.perf_counter()
                replay.train(want)
                return time.perf_counter() - t0

            if (rep + r) % 2:
                a, sel_t, idx = run_lead()
                b = run_replay()
            else:
                b = run_replay()
                a, sel_t, idx = run_lead()
            t0 = time.perf_counter()
            ckpt.save(r, model=s.model, trainer=lead, selector_state=selector.state_dict(), extra={},
                      accelerator=s.accelerator)
            t_ckpt += time.perf_counter() - t0
            t_lead, t_replay, t_select = t_lead + a, t_replay + b, t_select + sel_t
            ratios.append(a / b)
            print(f"pass {rep + 1} round {r:>2}: {len(idx):>3} samples  lead {a:7.2f}s  replay {b:7.2f}s",
                  flush=True)
        t_stats = lead.stats_seconds
    samples = sum(len(p) for p in plans) * repeat
    ratio = t_lead / t_replay
    direct = (t_select / repeat + t_stats) / (t_replay / repeat)
    print(f"\n{len(plans)} rounds x {repeat} passes, {samples} samples, torch threads {torch.get_num_threads()}")
    print(f"lead online stage      {t_lead:8.2f} s")
    print(f"replay, selection off  {t_replay:8.2f} s")
    print(f"ratio lead/replay      {ratio:8.4f}  -> overhead {100 * (ratio - 1):+.2f}% (noisy: 2 shared cores)")
    print(f"per-round ratios       median {np.median(ratios):.4f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    print(f"measured directly, per pass: selector plan+observe {t_select / repeat:.3f} s, trainer statistics "
          f"{t_stats:.3f} s, against {t_replay / repeat:.2f} s of training -> overhead {100 * direct:.2f}% "
          f"(target <= 3%)")
    print(f"checkpoints (resume)   {t_ckpt:8.2f} s  ({t_ckpt / (len(plans) * repeat):.2f} s per round)")
    np.testing.assert_equal(len(selector.columns()["idu"]), len(s.pool))


if __name__ == "__main__":
    main(sys.argv[1:])
