"""``leadsel eval RUN_DIR``: held-out loss of a finished run's trained model and of its base model.

The run's own config is rebuilt from its ``run.json`` (the same pool, so the held-out sets are
checked again not to overlap it; the same template, max length and precision), the trained
adapter (or model) is loaded from ``RUN_DIR/model``, and every held-out set is scored: the
bundled per-source eval splits (HumanEval: the canonical solution given the prompt) and any
``data.eval_paths``, plus ``--extra`` JSONL files. The result replaces ``eval.json`` and the
``eval`` entry of ``run.json``; nothing else in the run directory changes.

``--harness TASKS`` also evaluates the trained model, in memory, on lm-evaluation-harness tasks
(:mod:`.harness`; the ``eval`` extra); the record goes under ``"harness"`` in both files. The
tasks are resolved and their data loaded before anything else, so a wrong name fails at once.
Each part is replaced only when it is computed again: a held-out-only evaluation keeps an
earlier ``harness`` entry, and ``--no-heldout`` (harness only) keeps the held-out losses.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import load_config
from ..dist import launched_processes
from ..model.load import model_fingerprint
from ..session import Session
from ..utils import atomic_write_json
from .harness import harness_eval, prepare_tasks


def eval_record(s: Session, base: dict | None, trained: dict | None, trained_fp: str | None = None) -> dict:
    """What ``eval.json`` holds: the losses and the settings that produced them."""
    return {"base": base, "trained": trained, "template": s.cfg.encoding.template or "model's own",
            "max_length": s.cfg.encoding.max_length, "precision": s.precision, "model_fingerprint": s.base_fp,
            "trained_fingerprint": trained_fp}


def load_trained(s: Session, model_dir: Path) -> None:
    """Put the trained weights of ``model_dir`` into the session's model."""
    import torch

    if s.cfg.model.finetuning == "lora":
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        f = model_dir / "adapter_model.safetensors"
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: is {model_dir.parent} a finished LoRA run?")
        result = set_peft_model_state_dict(s.model, load_file(str(f)))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{f} does not fit the run's LoRA settings: unexpected {result.unexpected_keys[:3]}")
    else:
        from transformers import AutoModelForCausalLM

        trained = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        s.model.load_state_dict(trained.state_dict())


def evaluate_run(run_dir: str | Path, extra: list[str] = (), overrides: list[str] = (), harness: dict | None = None,
                 heldout: bool = True) -> dict:
    """Re-evaluate the finished run in ``run_dir``; the new ``eval.json`` record.

    ``harness``: keyword arguments of :func:`.harness.harness_eval` (``tasks`` required, e.g.
    ``{"tasks": "arc_easy", "num_fewshot": 0, "limit": 100, "include_path": "my_tasks"}``); its
    device and precision are the run's. ``heldout=False``: skip the held-out losses (keep the old ones).
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / "run.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: RUN_DIR must be a leadsel run directory")
    man = json.loads(manifest_path.read_text(encoding="utf-8"))
    if man.get("status") != "complete":
        raise ValueError(f"{run_dir} holds an incomplete run: finish it first (start the same run again)")
    if not heldout and not harness:
        raise ValueError("nothing to evaluate: --no-heldout needs --harness TASKS")
    if not heldout and extra:
        raise ValueError("--extra adds a held-out set: it does not go with --no-heldout")
    prepared, harness_kwargs = None, dict(harness or {})
    if harness and launched_processes() > 1:
        raise ValueError("--harness evaluates in one process: run `leadsel eval --harness` without a launcher")
    if harness:
        if "tasks" not in harness_kwargs:
            raise ValueError("harness settings need 'tasks'")
        # resolve the names and load the task data now: a wrong name fails before the long part
        prepared = prepare_tasks(harness_kwargs.pop("tasks"), harness_kwargs.pop("include_path", None))
    config = man["config"]
    paths = list(config["data"].get("eval_paths", [])) + [str(Path(p).resolve()) for p in extra]
    cfg = load_config(None, [f"output_dir={run_dir}", *overrides], values=config)
    cfg.data.eval_paths = paths
    s = Session.open(cfg, method=man["method"], record=False)
    eval_path = run_dir / "eval.json"
    old = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path.is_file() else {}
    # before the trained weights: a full model is replaced
    base = s.evaluate(base=True, label="eval (base)") if heldout else None
    load_trained(s, run_dir / "model")
    trained = s.evaluate(base=False, label="eval (trained)") if heldout else None
    fp = model_fingerprint(s.model, s.model_path, hash_weights=cfg.model.finetuning == "full")
    record = eval_record(s, base, trained, fp) if heldout else (old or eval_record(s, None, None, fp))
    kept = {k: v for k, v in (man.get("eval") or {}).items() if k.startswith("val_")}   # validation losses stay
    entry = {"base": base, "trained": trained, **kept} if heldout else dict(man.get("eval") or {})
    if prepared is not None:
        h = harness_eval(s.model, s.tokenizer, prepared, **({"precision": s.precision} | harness_kwargs))
        h["template"] = s.cfg.encoding.template or "model's own"
        h["trained_fingerprint"] = fp
        record["harness"] = entry["harness"] = h
    elif "harness" in old:  # the same trained model: an earlier harness result still holds
        record["harness"] = old["harness"]
        if "harness" in (man.get("eval") or {}):
            entry["harness"] = man["eval"]["harness"]
    man["eval"] = entry
    if s.accelerator.is_main_process:
        atomic_write_json(eval_path, record)
        atomic_write_json(manifest_path, man)
    s.accelerator.wait_for_everyone()
    return record
