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
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

PEERS = ("iterit", "less", "dynamic", "clusterucb")


def selection_cost(run_dir: Path) -> dict:
    """Selection passes and seconds of a finished run (see the module docstring)."""
    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    p = man["passes"]

    def total(kind: str) -> int:
        return sum(v for stage, v in p.get(kind, {}).items() if stage != "train" and not stage.startswith("eval-"))

    return {"method": man["method"], "rounds": len(rows), "trained": sum(r["n_selected"] for r in rows),
            "forward": total("forward") + total("cached_forward"), "backward": total("backward") + total("cached_backward"),
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


if __name__ == "__main__":
    main(sys.argv[1:])
