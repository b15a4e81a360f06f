"""The GPU path, checked in one go (under 5 minutes on one CUDA GPU).

    python benchmarks/gpu_check.py [--out DIR]          on a machine with a GPU
    python benchmarks/gpu_check.py --smoke [--out DIR]  the same code on CPU with tiny shapes (tests)

Nothing is downloaded and nothing outside leadsel's own import path is needed (no ``datasets``,
no harness): the models are random-weight Llamas built from a config -- the bundled model's shape
(SmolLM2-135M: hidden 576, 30 layers, vocabulary 49,152) and Llama-3.1-8B's -- and the pool is
generated text over a word-level tokenizer built here with as many words as the vocabulary.
It reports, as it goes and in ``DIR/gpu_check.json``:

1. the device, versions, and the bf16 matmul peak measured here (TFLOP/s, 8192^2 matmuls);
2. LEAD end to end through ``python -m leadsel run`` on the bundled shape in bf16 (precision and
   weights ``auto``): offline scoring, rounds, artifacts; then the same run killed after an
   optimizer step (SIGKILL) and resumed with ``--resume``: the rounds must match;
3. scoring and training tokens/s and MFU against (1), for both shapes (model FLOPs per token:
   2 x the matmul parameters for a forward, 4 x for a LoRA step, whose frozen base gets input
   gradients but no weight gradients; attention's 2 x layers x tokens x hidden per token added);
4. peak GPU memory per stage of the 8B shape at 3,080 tokens (benchmarks/memory.py's stages, in
   one process: torch's peak counter is reset between stages) against that benchmark's fitted
   prediction (benchmarks/results/memory.json).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

import memory  # noqa: E402  (benchmarks/memory.py: the shapes, stages and the fitted formula)

BUNDLED = {"hidden": 576, "layers": 30, "vocab": 49152, "intermediate": 1536, "heads": 9, "kv_heads": 3,
           "tied": True}
SMOKE = {"hidden": 64, "layers": 2, "vocab": 512, "intermediate": 128, "heads": 4, "kv_heads": 2, "tied": True}
SMOKE_8B = {"hidden": 128, "layers": 2, "vocab": 1024, "tokens": 256, "supervised": 256, "r": 8, "chunk": 64,
            "intermediate": 448, "heads": 2, "kv_heads": 1}
NEEDED = ("torch", "transformers", "peft", "accelerate", "numpy", "tokenizers", "safetensors", "yaml", "tqdm",
          "pyarrow", "scipy")


def say(*a) -> None:
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------- 1
def environment(device) -> dict:
    import torch
    import transformers

    import leadsel

    env = {"device": str(device), "torch": torch.__version__, "transformers": transformers.__version__,
           "leadsel": leadsel.__version__, "missing": [m for m in NEEDED if importlib.util.find_spec(m) is None]}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1)
    return env


def matmul_peak(device, smoke: bool) -> float:
    """bf16 matmul FLOP/s measured here (the best of a few timed batches)."""
    import torch

    n, reps = (512, 3) if smoke else (8192, 20)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sync = getattr(torch, device.type).synchronize if device.type != "cpu" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------------------- 2
def write_inputs(d: Path, shape: dict, n_pool: int, seed: int = 0) -> tuple[str, list[str]]:
    """A random-weight model of ``shape`` with a word-level ChatML tokenizer, and a pool of
    generated samples from four sources; returns (model dir, pool files)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from leadsel.model.load import FALLBACK_TEMPLATES

    specials = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"]
    words = specials + [f"w{i}" for i in range(shape["vocab"] - len(specials))]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = FALLBACK_TEMPLATES["chatml"]
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048, pad_token_id=1,
                      tie_word_embeddings=shape["tied"])
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    r = random.Random(seed)
    paths = []
    for k, source in enumerate(("alpha", "beta", "gamma", "delta")):
        # each source its own slice of the vocabulary, so the clusters have something to find
        lo = 7 + k * (shape["vocab"] - 7) // 4
        pick = [f"w{i - 7}" for i in range(lo, lo + (shape["vocab"] - 7) // 4)]
        lines = [json.dumps({"id": f"{source}-{i}", "instruction": " ".join(r.choices(pick, k=r.randint(8, 60))),
                             "input": "", "output": " ".join(r.choices(pick, k=r.randint(8, 60)))})
                 for i in range(n_pool // 4)]
        p = d / f"{source}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    return str(d / "model"), paths


def leadsel_run(d: Path, model: str, paths: list[str], out: str, smoke: bool, extra_env=None, resume=False):
    empty = d / "empty.yaml"
    empty.write_text("{}\n")
    settings = {"method": "lead", "model.name": model, "data.paths": "[" + ",".join(paths) + "]",
                "encoding.template": "chatml", "output_dir": out, "cache_dir": str(d / "cache"), "budget": 0.3,
                "rounds": 6, "evaluate": "false", "progress": "false", "lead.clusters": 3, "lead.rate": 0.1,
                "warmup.size": 16, "warmup.lora.r": 8, "model.lora.r": 8, "train.per_device_batch_size": 4,
                "train.gradient_accumulation_steps": 2}
    if smoke:
        settings["model.precision"] = "fp32"
    cmd = [sys.executable, "-m", "leadsel", "run", str(empty), *[f"{k}={v}" for k, v in settings.items()]]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(extra_env or {})}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    return proc, time.perf_counter() - t


def rounds_of(out: str) -> list[dict]:
    p = Path(out) / "rounds.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []


def lead_end_to_end(d: Path, shape: dict, smoke: bool) -> dict:
    model, paths = write_inputs(d, shape, 64 if smoke else 240)
    whole, kill_dir = str(d / "whole"), str(d / "killed")
    proc, seconds = leadsel_run(d, model, paths, whole, smoke)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr[-2000:]}
    manifest = json.loads((Path(whole) / "run.json").read_text())
    rows = rounds_of(whole)
    res = {"seconds": round(seconds, 1), "rounds": len(rows), "precision": manifest["model"]["precision"],
           "weights": manifest["model"]["weights"], "device": manifest["model"]["device"],
           "stages_seconds": {k: v.get("seconds") for k, v in manifest["stages"].items()}}
    killed, _ = leadsel_run(d, model, paths, kill_dir, smoke, {"LEADSEL_KILL_AT_STEP": "3"})
    cut = len(rounds_of(kill_dir))
    resumed, _ = leadsel_run(d, model, paths, kill_dir, smoke, resume=True)
    again = rounds_of(kill_dir)
    keys = ("selected_ids", "arm")
    res.update(killed_returncode=killed.returncode, rounds_before_kill=cut, resumed_returncode=resumed.returncode,
               resume_same_selections=[{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys}
                                                                                  for r in rows],
               resume_max_mean_loss_diff=max((abs(a["mean_loss"] - b["mean_loss"]) for a, b in zip(again, rows)),
                                             default=None),
               checkpoint_left=(Path(kill_dir) / "checkpoint").exists())
    res["ok"] = (killed.returncode != 0 and resumed.returncode == 0 and res["resume_same_selections"]
                 and not res["checkpoint_left"] and len(rows) >= 2)
    if resumed.returncode != 0:
        res["error"] = resumed.stderr[-2000:]
    return res


# ---------------------------------------------------------------------------------------------- 3
def matmul_params(d: dict) -> int:
    """Parameters of the decoder's matmuls (the head is counted per supervised token)."""
    return d["layers"] * sum(a * b for a, b in memory.projection_shapes(d))


def throughput(d: dict, accelerator, peak_flops: float, tokens: int, batch: int, steps: int) -> dict:
    """Scoring and LoRA training tokens/s of shape ``d`` on ``batch`` x ``tokens`` samples."""
    import torch

    from leadsel.model.loss import per_sample_loss
    from leadsel.model.precision import autocast
    from leadsel.schema import TrainConfig
    from leadsel.scoring.grads import eval_mode
    from leadsel.train.trainer import Trainer

    d = memory.dims({**d, "tokens": tokens, "supervised": tokens // 2, "r": 64, "chunk": 1024})
    device = accelerator.device
    model, b = memory.build(d, device, rows=batch)
    sync = getattr(torch, device.type).synchronize if device.type != "cpu" else (lambda: None)
    attn = 2 * d["layers"] * tokens * d["hidden"]  # per token, causal: QK^T and AV over half the context
    fwd = 2 * matmul_params(d) + attn + 2 * d["hidden"] * d["vocab"] * 0.5
    with eval_mode(model), torch.inference_mode(), autocast(device.type, "bf16"):
        per_sample_loss(model, **b, chunk=1024)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            per_sample_loss(model, **b, chunk=1024)
        sync()
        score_tps = steps * batch * tokens / (time.perf_counter() - t)
    n = batch * steps
    trainer = Trainer(model, memory.pool_of(b, repeat=steps), TrainConfig(per_device_batch_size=batch, gradient_accumulation_steps=1),
                      accelerator, pad_id=0, precision="bf16", logit_chunk=1024)
    trainer.train(list(range(batch)))  # the first step allocates the optimizer's state
    sync()
    t = time.perf_counter()
    trainer.train(list(range(n)))
    sync()
    train_tps = n * tokens / (time.perf_counter() - t)
    return {"tokens_per_sample": tokens, "batch": batch,
            "scoring_tokens_per_s": round(score_tps), "scoring_mfu": round(score_tps * fwd / peak_flops, 4),
            "training_tokens_per_s": round(train_tps), "training_mfu": round(train_tps * 2 * fwd / peak_flops, 4)}


# ---------------------------------------------------------------------------------------------- 4
def memory_against_prediction(d: dict, accelerator) -> dict:
    measured = memory.measure_all(memory.dims(d), accelerator)
    fit_file = HERE / "results" / "memory.json"
    fits = json.loads(fit_file.read_text())["fits"] if fit_file.is_file() else {}
    out = {}
    for stage, m in measured.items():
        row = {"measured_gb": round(m["peak_bytes"] / 1e9, 3)}
        if fits.get(stage):
            row["predicted_gb"] = round(memory.predict(fits[stage], memory.dims(d)) / 1e9, 3)
        out[stage] = row
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: the code path, not the figures")
    ap.add_argument("--out", default=None, help="directory for gpu_check.json and the runs (default: a temp dir)")
    args = ap.parse_args(argv)
    import tempfile

    import torch
    from accelerate import Accelerator

    acc = Accelerator(cpu=args.smoke)
    if not args.smoke and acc.device.type == "cpu":
        say("no accelerator found: this check is for a GPU (use --smoke for the CPU code path)")
        return 2
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="leadsel-gpu-check-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke}
    t0 = time.perf_counter()

    def save():
        report["seconds"] = round(time.perf_counter() - t0, 1)
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))

    report["environment"] = environment(acc.device)
    say("environment:", json.dumps(report["environment"]))
    peak = matmul_peak(acc.device, args.smoke)
    report["bf16_matmul_tflops"] = round(peak / 1e12, 2)
    say(f"bf16 matmul peak: {peak / 1e12:.1f} TFLOP/s")
    save()
    report["lead_end_to_end"] = lead_end_to_end(out_dir, SMOKE if args.smoke else BUNDLED, args.smoke)
    say("LEAD end to end:", json.dumps(report["lead_end_to_end"]))
    save()
    shapes = {"bundled": (SMOKE if args.smoke else BUNDLED, 128 if args.smoke else 1024, 2 if args.smoke else 8),
              "llama-8b": (SMOKE_8B if args.smoke else memory.LLAMA_8B, 128 if args.smoke else 3080, 1)}
    report["throughput"] = {}
    for name, (shape, tokens, batch) in shapes.items():
        report["throughput"][name] = throughput(shape, acc, peak, tokens, batch, steps=2 if args.smoke else 4)
        say(f"throughput {name}:", json.dumps(report["throughput"][name]))
        gc.collect()
        if acc.device.type != "cpu":
            getattr(torch, acc.device.type).empty_cache()
        save()
    big = SMOKE_8B if args.smoke else memory.LLAMA_8B
    report["memory_8b"] = memory_against_prediction(big, acc)
    say(f"peak memory per stage ({'tiny' if args.smoke else '8B'} shape, {big['tokens']} tokens):",
        json.dumps(report["memory_8b"]))
    save()
    say(f"wrote {out_dir / 'gpu_check.json'} ({report['seconds']} s)")
    return 0 if report["lead_end_to_end"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
