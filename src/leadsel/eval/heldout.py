"""``leadsel eval RUN_DIR``: held-out loss of a finished run's trained model and of its base model.

The run's own config is rebuilt from its ``run.json`` (the same pool, so the held-out sets are
checked again not to overlap it; the same template, max length and precision), the trained
adapter (or model) is loaded from ``RUN_DIR/model``, and every held-out set is scored: the
bundled per-source eval splits (HumanEval: the canonical solution given the prompt) and any
``data.eval_paths``, plus ``--extra`` JSONL files. The result replaces ``eval.json`` and the
``eval`` entry of ``run.json``; nothing else in the run directory changes.
"""
from __future__ import annotations

import json
from pathlib import Path


def eval_record(s, base: dict | None, trained: dict | None, trained_fp: str | None = None) -> dict:
    """What ``eval.json`` holds: the losses and the settings that produced them."""
    return {"base": base, "trained": trained, "template": s.cfg.encoding.template or "model's own",
            "max_length": s.cfg.encoding.max_length, "precision": s.precision, "model_fingerprint": s.base_fp,
            "trained_fingerprint": trained_fp}


def load_trained(s, model_dir: Path) -> None:
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


def evaluate_run(run_dir: str | Path, extra: list[str] = (), overrides: list[str] = ()) -> dict:
    from ..config import load_config
    from ..model.load import model_fingerprint
    from ..session import Session
    from ..utils import atomic_write_json

    run_dir = Path(run_dir)
    manifest_path = run_dir / "run.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: RUN_DIR must be a leadsel run directory")
    man = json.loads(manifest_path.read_text(encoding="utf-8"))
    if man.get("status") != "complete":
        raise ValueError(f"{run_dir} holds an incomplete run: finish it first (start the same run again)")
    config = man["config"]
    paths = list(config["data"].get("eval_paths", [])) + [str(Path(p).resolve()) for p in extra]
    cfg = load_config(None, [f"output_dir={run_dir}", *overrides], values=config)
    cfg.data.eval_paths = paths
    s = Session.open(cfg, method=man["method"], record=False)
    base = s.evaluate(base=True, label="eval (base)")  # before the trained weights: a full model is replaced
    load_trained(s, run_dir / "model")
    trained = s.evaluate(base=False, label="eval (trained)")
    record = eval_record(s, base, trained, model_fingerprint(s.model, s.model_path,
                                                             hash_weights=cfg.model.finetuning == "full"))
    atomic_write_json(run_dir / "eval.json", record)
    man["eval"] = {"base": base, "trained": trained}
    atomic_write_json(manifest_path, man)
    return record
