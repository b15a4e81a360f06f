"""``leadsel``: one command line over the Python API.

    leadsel demo [key=value ...]              build the bundled pool, score it, train on a random
                                              10% subset, report held-out loss before and after
    leadsel run CONFIG [key=value ...]        the same job from a YAML config
    leadsel score CONFIG [key=value ...]      only the offline scoring passes (cached)
    leadsel validate [CONFIG] [key=value ...] load and encode a pool; report formats, skips, rejects
    leadsel build-pool [CONFIG] [key=value ...]  build the bundled pool and print where it is
    leadsel config [CONFIG] [key=value ...] [--all]  print the resolved config (--all: commented)

Overrides use dotted keys: ``train.learning_rate=1e-4 data.paths=[a.jsonl,b.jsonl]``.
Set LEADSEL_DEBUG=1 to see tracebacks of errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__


def _config(args):
    from .config import load_config

    return load_config(getattr(args, "config", None), args.overrides)


def cmd_run(args) -> int:
    from .demo import run_random_subset

    cfg = _config(args)
    out = run_random_subset(cfg)
    b, a = out["before"], out["after"]
    print(f"\nrun directory: {out['run_dir']}  (precision {out['precision']})")
    print(f"pool {out['n_pool']} samples; trained on {out['n_trained']} (random subset)")
    print(f"{'held-out set':<14}{'base loss':>11}{'trained':>10}{'change':>9}")
    for name in b:
        x, y = b[name]["loss_per_sample"], a[name]["loss_per_sample"]
        print(f"{name:<14}{x:>11.4f}{y:>10.4f}{y - x:>+9.4f}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in out["stages"].items() if v is not None))
    return 0


def cmd_score(args) -> int:
    from .demo import offline_scores, write_scores
    from .session import Session

    cfg = _config(args)
    s = Session.open(cfg, method="score")
    with s.manifest.stage("score"):
        scores = offline_scores(s)
        import numpy as np

        write_scores(s, scores, np.zeros(len(s.pool), dtype=np.int32))
    s.manifest.set("passes", {"forward": dict(s.counter.forward)})
    s.manifest.complete()
    print(f"scored {len(s.pool)} samples -> {s.run_dir / 'scores.parquet'}")
    return 0


def cmd_validate(args) -> int:
    from .data.encode import encode
    from .data.load import load_pool
    from .session import build_bundled

    cfg = _config(args)
    tok = _tokenizer(cfg)
    paths = cfg.data.paths or [str(build_bundled(cfg, tok).pool)]
    samples, report = load_pool(paths, fmt=cfg.data.format, on_error=cfg.data.on_error, split=cfg.data.split)
    e = cfg.encoding
    enc = encode(samples, tok, e.max_length, e.supervise, e.truncation)
    print(json.dumps({"load": report.to_dict(), "encoding": enc.report()}, indent=2))
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
    from .config import commented_yaml, to_dict

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

    add("demo", cmd_run, "run the demo job on the bundled model and pool (a few minutes on 2 cores)", None)
    add("run", cmd_run, "run a job from a config: pool -> offline scores -> train -> held-out loss", "required")
    add("score", cmd_score, "compute (or reuse from the cache) the offline scores of a pool", "required")
    add("validate", cmd_validate, "load and encode a pool; report formats, skipped and rejected samples",
        "optional")
    add("build-pool", cmd_build_pool, "build the bundled real pool and its held-out splits", "optional")
    sp = add("config", cmd_config, "print the resolved config", "optional")
    sp.add_argument("--all", action="store_true", help="every option with its documentation")
    return p


def main(argv: list[str] | None = None) -> int:
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
        args.config = None
    from .config import ConfigError
    from .data.encode import TemplateError
    from .data.records import DataError

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
