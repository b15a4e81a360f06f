"""``leadsel``: one command line over the Python API.

    leadsel demo | run | compare | score | eval | report | export | validate | build-pool | config

One handler per command; each command's flags are documented once, in its argparse help
(``leadsel COMMAND --help``); docs/cli.md says what each command does and writes.

Overrides use dotted keys: ``train.learning_rate=1e-4 data.paths=[a.jsonl,b.jsonl]``.
Set LEADSEL_DEBUG=1 to see tracebacks of errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, commented_yaml, load_config, to_dict
from .data.encode import TemplateError
from .data.records import DataError
from .dist import is_main_launch

# The handlers import the modules that load torch and transformers when they run: `python -c
# "import leadsel.runner"` takes 4.2-4.6 s on the 2-core dev machine, `import leadsel.cli` (config,
# yaml, numpy) 0.3 s, so `leadsel --help`, `leadsel config` and a bad argument answer at once.


def _config(args):
    return load_config(getattr(args, "config", None), args.overrides)


def demo_config_path() -> str:
    return str(Path(__file__).parent / "configs" / "demo.yaml")


def cmd_run(args) -> int:
    from .runner import run

    cfg = _config(args)
    out = run(cfg, resume=True if args.resume else None)
    if is_main_launch():
        print_summary(out)
    return 0


def print_summary(out: dict) -> None:
    done = " (already complete; nothing to do)" if out["already_complete"] else ""
    print(f"\nrun directory: {out['run_dir']}{done}  method {out['method']}, precision {out['precision']}")
    print(f"pool {out['n_pool']} samples; budget {out['budget']}; {out['rounds']} rounds trained "
          f"{out['samples_trained']} samples ({out['distinct_trained']} distinct)")
    if out["arms"]:
        print("arms pulled (cluster: rounds): " + ", ".join(f"{k}: {v}" for k, v in out["arms"].items()))
    if out["before"] and out["after"]:
        print_losses(out["before"], out["after"])
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in out["stages"].items() if v is not None))


def print_losses(base: dict, trained: dict) -> None:
    """Held-out loss per set (mean per sample), base against trained."""
    print(f"{'held-out set':<14}{'base loss':>11}{'trained':>10}{'change':>9}")
    for name in base:
        x, y = base[name]["loss_per_sample"], trained[name]["loss_per_sample"]
        print(f"{name:<14}{x:>11.4f}{y:>10.4f}{y - x:>+9.4f}")


def cmd_score(args) -> int:
    import numpy as np

    from .rundir import write_scores
    from .scoring.offline import offline_scores
    from .select import needs
    from .session import Session

    cfg = _config(args)
    s = Session.open(cfg, method="score")
    with s.manifest.stage("offline"):
        scores = offline_scores(s, needs(cfg) | {"u0"}, cfg.lead.ifd_kind)
        n = len(s.pool)
        if s.accelerator.is_main_process:
            write_scores(s, scores, {"times_used": np.zeros(n, dtype=np.int32),
                                     "first_round": np.full(n, -1, dtype=np.int32)})
    s.manifest.complete()
    s.accelerator.wait_for_everyone()
    if is_main_launch():
        print(f"scored {len(s.pool)} samples ({', '.join(sorted(scores))}) -> {s.run_dir / 'scores.parquet'}")
    return 0


def cmd_compare(args) -> int:
    from .compare import run_comparison
    from .report import write_report

    out = run_comparison(_config(args))
    if is_main_launch():
        print((Path(out["dir"]) / f"{out['tables']}.md").read_text())
        report = write_report(out["dir"])
        print(f"-> {out['dir']}/{out['tables']}.md, {out['tables']}.csv, {report.name}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(f"-> {write_report(args.path, args.output)}")
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    print(json.dumps(export_run(args.run_dir, args.to, args.out, overwrite=args.overwrite), indent=2))
    return 0


def cmd_eval(args) -> int:
    from .eval.heldout import evaluate_run

    harness = None
    if args.allow_download:
        os.environ["LEADSEL_ALLOW_DOWNLOAD"] = "1"
    if args.harness:
        harness = {"tasks": args.harness, "num_fewshot": args.num_fewshot, "limit": args.harness_limit,
                   "batch_size": args.harness_batch_size, "apply_chat_template": args.chat_template,
                   "include_path": args.harness_include}
    else:
        used = [f for f, v in (("--num-fewshot", args.num_fewshot is not None),
                               ("--harness-limit", args.harness_limit is not None),
                               ("--harness-include", args.harness_include), ("--chat-template", args.chat_template),
                               ("--no-heldout", not args.heldout)) if v]
        if used:
            raise ValueError(f"{', '.join(used)} only go with --harness TASKS")
    out = evaluate_run(args.run_dir, extra=args.extra or [], overrides=args.overrides, harness=harness,
                       heldout=args.heldout)
    if not is_main_launch():
        return 0
    if out.get("base") and out.get("trained"):
        print_losses(out["base"], out["trained"])
    if harness:
        print_harness(out["harness"])
    print(f"-> {args.run_dir}/eval.json")
    return 0


def print_harness(h: dict) -> None:
    """lm-eval metrics of the trained model, one line per task and metric."""
    chat = "chat template" if h["apply_chat_template"] else "no chat template"
    print(f"\nlm-eval {h['lm_eval']} ({chat}, limit {h['limit']}, batch size {h['batch_size']}, {h['device']}, "
          f"{h['precision']})")
    print(f"{'task':<28}{'n-shot':>7}  {'metric':<24}{'value':>9}{'stderr':>9}")
    rows = [(n, t.get("n_shot")) + (t["metrics"],) for n, t in h["tasks"].items()]
    rows += [(n, "") + (g["metrics"],) for n, g in h.get("groups", {}).items()]
    for name, shots, metrics in rows:
        for m, v in metrics.items():
            if "_stderr" in m or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            base, _, filt = m.partition(",")
            err = metrics.get(f"{base}_stderr" + (f",{filt}" if filt else ""))
            err = f"{err:>9.4f}" if isinstance(err, (int, float)) else f"{'':>9}"
            print(f"{name:<28}{shots!s:>7}  {m:<24}{v:>9.4f}{err}")


def _batch_size(text: str):
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer or auto")
    return n


def _int_from(lowest: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = lowest - 1
        if n < lowest:
            raise argparse.ArgumentTypeError(f"{text!r}: an integer >= {lowest}")
        return n
    return parse


def cmd_validate(args) -> int:
    from .data.store import Encoding, open_store
    from .session import build_bundled
    from .utils import cache_root

    cfg = _config(args)
    tok = _tokenizer(cfg)
    paths = cfg.data.paths or [str(build_bundled(cfg, tok).pool)]
    store = open_store(paths, tok, Encoding.of(cfg.encoding), cache_root(cfg.cache_dir),
                       fmt=cfg.data.format, on_error=cfg.data.on_error, split=cfg.data.split, progress=cfg.progress)
    print(json.dumps({"load": store.load_report.to_dict(), "encoding": store.encoding_report,
                      "token_store": str(store.root)}, indent=2))
    return 0


def _tokenizer(cfg):
    from .model.load import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(cfg.model.name, cfg.model.cache_dir or cfg.cache_dir), cfg.encoding.template)


def cmd_build_pool(args) -> int:
    from .session import build_bundled

    cfg = _config(args)
    built = build_bundled(cfg, _tokenizer(cfg))
    print(json.dumps({"pool": str(built.pool), "evals": {k: str(v) for k, v in built.evals.items()},
                      "vals": {k: str(v) for k, v in built.vals.items()}}, indent=2))
    return 0


def cmd_config(args) -> int:
    cfg = _config(args)
    if args.all:
        print(commented_yaml(cfg))
    else:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadsel", description=__doc__.split("\n\n")[0].strip() +
                                " Efficient, iterative, model-aware data selection for LLM instruction tuning.",
                                epilog="Overrides: dotted key=value pairs, e.g. train.learning_rate=1e-4. "
                                       "`leadsel config --all` lists every option.")
    p.add_argument("--version", action="version", version=f"leadsel {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, fn, help, config: str | None):
        sp = sub.add_parser(name, help=help, description=help)
        if config == "required":
            sp.add_argument("config", help="YAML config file")
        elif config == "optional":
            sp.add_argument("config", nargs="?", help="YAML config file (optional)")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
        sp.set_defaults(fn=fn)
        return sp

    sp = add("demo", cmd_run, "LEAD on the bundled model and pool (configs/demo.yaml; under 10 minutes on 2 cores)",
             None)
    sp.add_argument("--resume", action="store_true", help="continue the interrupted run in output_dir")
    sp = add("run", cmd_run, "a run from a config: offline scores -> selection rounds -> artifacts, "
             "held-out loss", "required")
    sp.add_argument("--resume", action="store_true",
                    help="continue the interrupted run in output_dir (an error if there is none); starting "
                         "a run again into its directory also continues it")
    add("score", cmd_score, "compute (or reuse from the cache) the offline scores of a pool", "required")
    add("compare", cmd_compare, "run compare.methods x compare.seeds on one pool, model and budget; write "
        "comparison.md/.csv (held-out loss mean ± std, cost); finished runs are skipped", "required")
    sp = sub.add_parser("eval", help="held-out loss of a finished run's trained model and its base model "
                                     "(and lm-evaluation-harness tasks: --harness)",
                        description="Held-out loss (per sample and per token) of RUN_DIR's trained model and of its "
                                    "base model on the run's eval sets (and --extra files); with --harness, also "
                                    "lm-evaluation-harness tasks on the trained model; writes eval.json.")
    sp.add_argument("run_dir", help="a finished run directory")
    sp.add_argument("--extra", action="append", metavar="FILE",
                    help="another held-out JSONL set (any supported format; repeat the flag for more)")
    sp.add_argument("overrides", nargs="*", metavar="key=value",
                    help="overrides of evaluation settings, e.g. eval_max_samples=0")
    h = sp.add_argument_group(
        "lm-evaluation-harness (pip install 'leadsel[eval]')",
        "Evaluate the trained model, in memory, on lm-eval tasks; the metrics and their settings go to "
        "eval.json under \"harness\". Runs offline unless --allow-download: a task whose data is on the "
        "Hugging Face hub then works only if the data is already in the local datasets cache; otherwise write a "
        "local task (dataset_path: json) and pass its folder with --harness-include.")
    h.add_argument("--harness", action="append", metavar="TASK1,TASK2",
                   help="lm-eval task, group or tag names, or task YAML paths, comma-separated (repeatable)")
    h.add_argument("--num-fewshot", type=_int_from(0), metavar="N",
                   help="few-shot examples per prompt (default: each task's own, else 0)")
    h.add_argument("--harness-limit", type=_int_from(1), metavar="N",
                   help="at most N documents per task (for a quick look; not comparable with full scores)")
    h.add_argument("--harness-batch-size", type=_batch_size, default=8, metavar="N",
                   help="batch size of lm-eval's passes, or auto (default 8)")
    h.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=False,
                   help="format prompts with the tokenizer's chat template (the run's template), few-shot "
                        "examples as turns (default: off)")
    h.add_argument("--harness-include", action="append", metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs (repeatable); lm-eval's built-in list is only "
                        "indexed when a task is not found there")
    h.add_argument("--allow-download", action="store_true",
                   help="let lm-eval fetch task data from the Hugging Face hub (off by default: leadsel downloads "
                        "nothing); the same as LEADSEL_ALLOW_DOWNLOAD=1")
    h.add_argument("--no-heldout", dest="heldout", action="store_false",
                   help="only the harness; the held-out losses already in eval.json are kept")
    sp.set_defaults(fn=cmd_eval)
    sp = sub.add_parser("report", help="report.html with plots of a run or a comparison (self-contained)",
                        description="Write a self-contained report.html (plots embedded) for a finished run directory "
                                    "(training loss, bandit arms, IDU per cluster, selection against the pool, held-out "
                                    "loss, cost) or a comparison directory (held-out loss per method with error bars, "
                                    "cost per stage, and the same plots for its runs).")
    sp.add_argument("path", help="a run directory (holding run.json) or a comparison directory (its output_dir)")
    sp.add_argument("-o", "--output", metavar="FILE", help="where to write (default: PATH/report.html)")
    sp.set_defaults(fn=cmd_report)
    sp = sub.add_parser("export", help="a finished run's selected samples as a dataset for your own trainer",
                        description="Write RUN_DIR's selection (the distinct samples it trained, in pool order) to "
                                    "OUT: jsonl keeps their input schema (selected.jsonl); parquet and hf (a datasets "
                                    "directory for load_from_disk) hold id, source, messages (the conversational shape "
                                    "TRL's SFTTrainer reads), times_used and first_round.")
    sp.add_argument("run_dir", help="a finished run directory")
    sp.add_argument("--to", required=True, choices=("jsonl", "parquet", "hf"), help="the output's format")
    sp.add_argument("out", help="the file (jsonl, parquet) or directory (hf) to write")
    sp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    sp.set_defaults(fn=cmd_export)
    add("validate", cmd_validate, "load and encode a pool; report formats, skipped and rejected samples",
        "optional")
    add("build-pool", cmd_build_pool, "build the bundled real pool and its held-out splits", "optional")
    sp = add("config", cmd_config, "print the resolved config", "optional")
    sp.add_argument("--all", action="store_true", help="every option with its documentation")
    return p


# oneDNN (PyTorch's CPU kernels) keeps up to 1,024 compiled kernels with their buffers, one per
# shape seen, and batches of changing length keep adding shapes; capped at 64, the demo's peak
# resident set fell from 2.76 to 2.28 GB (docs/performance.md). Read when torch first runs a CPU
# kernel, so set before that; a value in the environment is kept.
ONEDNN_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(*ONEDNN_CACHE)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # positional overrides may come without a config for commands where it is optional
    if getattr(args, "config", None) and "=" in args.config:
        args.overrides.insert(0, args.config)
        args.config = None
    if args.command == "demo":
        args.config = demo_config_path()
    try:
        return args.fn(args)
    except (ConfigError, DataError, TemplateError, FileNotFoundError, ValueError, RuntimeError) as e:
        if os.environ.get("LEADSEL_DEBUG"):
            raise
        print(f"leadsel {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the run directory is marked incomplete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
