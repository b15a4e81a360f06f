"""Peak memory per stage against vocabulary, tokens per batch and trainable size, fitted to a formula
and extrapolated to the paper's 8B setting.

    python benchmarks/memory.py [--out FILE.json] [--points center,V8k,...]

Each point is a random-weight Llama built from a config (no download), with the GPU setting of an
8B run: bf16 frozen base weights (model.weights bf16), bf16 autocast, LoRA on the 7 projections in
fp32, batch 1. One fresh process per (point, stage) runs the stage once through leadsel's own code:

    scoring       per_sample_loss under inference mode (one batch of a loss pass)
    training      Trainer.train on one sample: forward, backward, AdamW step, LEAD's statistics
    training_gc   the same with train.gradient_checkpointing
    features      tapped_grads: one sample's exact per-sample gradient (LESS, Dynamic, ClusterUCB)
    features_gc   the same with activation checkpointing (train.gradient_checkpointing)
    checkpoint    Checkpointer.save after one training step (adapter, AdamW state, a LEAD state)

and reports the peak above the memory held before it (the model and its batch): on CPU the peak
resident set (VmHWM, reset through /proc/self/clear_refs after malloc_trim), on an accelerator
torch's peak allocated bytes. The points vary one dimension at a time around a centre (hidden
256, 4 layers, vocabulary 32,768, 1,024 tokens of which 512 supervised, LoRA r 16), plus one with
21M trainable parameters (at the centre's sizes the trainable term is lost in the noise), and
each stage is fitted by least squares to

    peak = a * tokens*hidden*layers + a1 * tokens*hidden + b * min(supervised, logit_chunk)*vocab
           + c * trainable + e

(the terms a stage has: scoring keeps one layer's activations, so it has a1 and not a). The script
prints the points (measured against fitted), the coefficients, and the prediction for
Llama-3.1-8B (hidden 4096, 32 layers, vocabulary 128,256, 3,080 tokens, all supervised, LoRA r 64
on the 7 projections: 167.8M trainable), with the bf16 weights (2 bytes per parameter) added.
The prediction is a projection from CPU measurements; docs/performance.md says so.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CENTER = {"hidden": 256, "layers": 4, "vocab": 32768, "tokens": 1024, "supervised": 512, "r": 16, "chunk": 1024}
POINTS = {
    "center": {},
    "V8k": {"vocab": 8192}, "V64k": {"vocab": 65536},
    "T256": {"tokens": 256, "supervised": 128}, "T3072": {"tokens": 3072, "supervised": 1536},
    "r4": {"r": 4}, "r64": {"r": 64},
    "H512": {"hidden": 512}, "L8": {"layers": 8},
    "P21M": {"hidden": 512, "layers": 8, "r": 256},  # a trainable size whose optimizer state shows
}
STAGES = ("scoring", "training", "training_gc", "features", "features_gc", "checkpoint")
TERMS = {  # the formula's terms each stage is fitted with
    "scoring": ("TH", "CV", "one"),
    "training": ("THL", "CV", "P", "one"),
    "training_gc": ("THL", "TH", "CV", "P", "one"),
    "features": ("THL", "CV", "P", "one"),
    "features_gc": ("THL", "TH", "CV", "P", "one"),
    "checkpoint": ("P", "one"),
}
LLAMA_8B = {"hidden": 4096, "layers": 32, "vocab": 128256, "tokens": 3080, "supervised": 3080, "r": 64,
            "chunk": 1024, "intermediate": 14336, "heads": 32, "kv_heads": 8}
LLAMA_8B_PARAMS = 8_030_261_248


def dims(point: dict) -> dict:
    d = {**CENTER, **point}
    d.setdefault("intermediate", int(3.5 * d["hidden"]))
    d.setdefault("heads", d["hidden"] // 64)
    d.setdefault("kv_heads", max(1, d["heads"] // 4))
    return d


def projection_shapes(d: dict) -> list[tuple[int, int]]:
    """(in, out) of one layer's 7 projections: q, k, v, o, gate, up, down."""
    h, i, kv = d["hidden"], d["intermediate"], d["hidden"] // d["heads"] * d["kv_heads"]
    return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]


def trainable(d: dict) -> int:
    """LoRA parameters on the 7 projections: r * (in + out) each, per layer."""
    return d["layers"] * d["r"] * sum(a + b for a, b in projection_shapes(d))


def features_of(d: dict) -> dict:
    t, h, layers = d["tokens"], d["hidden"], d["layers"]
    return {"THL": t * h * layers, "TH": t * h, "CV": min(d["supervised"], d["chunk"]) * d["vocab"],
            "P": trainable(d), "one": 1.0}


# ---------------------------------------------------------------------------------------------- one stage
class Peak:
    """Peak memory above the current level: torch's allocator on an accelerator, VmHWM on CPU."""

    def __init__(self, device):
        import torch

        self.device, self.torch = device, torch
        self.accel = device.type != "cpu"

    def _rss(self, field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/self/status has no {field}")

    def start(self) -> None:
        if self.accel:
            mod = getattr(self.torch, self.device.type)
            mod.synchronize()
            mod.reset_peak_memory_stats()
            self.base = mod.memory_allocated()
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
            self.base = self._rss("VmRSS")

    def stop(self) -> int:
        if self.accel:
            mod = getattr(self.torch, self.device.type)
            mod.synchronize()
            return int(mod.max_memory_allocated() - self.base)
        return self._rss("VmHWM") - self.base


def build(d: dict, device, weights: str = "bf16", rows: int = 1):
    """A random Llama of these dimensions with LoRA on the 7 projections, and a batch of ``rows``
    samples of ``tokens`` tokens, the last ``supervised`` of each supervised."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from leadsel.model.load import add_lora
    from leadsel.schema import LoraSettings

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=d["vocab"], hidden_size=d["hidden"], intermediate_size=d["intermediate"],
                      num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                      num_key_value_heads=d["kv_heads"], max_position_embeddings=max(4096, d["tokens"]),
                      tie_word_embeddings=d.get("tied", False), attn_implementation="sdpa")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[weights]
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: an 8B model never exists in fp32
    try:
        with torch.device(device):
            base = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    base.config.use_cache = False
    model = add_lora(base, LoraSettings(r=d["r"], alpha=2 * d["r"], target_modules=PROJECTIONS))
    ids = torch.randint(0, d["vocab"], (rows, d["tokens"]), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, : d["tokens"] - d["supervised"]] = -100
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": labels.to(device)}
    return model, batch


def pool_of(batch, repeat: int = 1):
    """The batch's samples, ``repeat`` times over, as an encoded pool (what a Trainer trains from)."""
    import numpy as np

    from leadsel.data.encode import EncodedPool

    ids = np.tile(batch["input_ids"].cpu().numpy().astype(np.int32), (repeat, 1))
    sup = np.tile((batch["labels"] != -100).cpu().numpy(), (repeat, 1))
    n, t = ids.shape
    return EncodedPool(tokens=ids.reshape(-1), supervised=sup.reshape(-1),
                       offsets=np.arange(n + 1, dtype=np.int64) * t, index=np.arange(n),
                       ids=[f"s{i}" for i in range(n)], sources=["x"] * n)


def trainer_for(model, batch, accelerator, gc: bool, chunk: int):
    from leadsel.schema import TrainConfig
    from leadsel.train.trainer import Trainer

    cfg = TrainConfig(per_device_batch_size=1, gradient_accumulation_steps=1, gradient_checkpointing=gc)
    return Trainer(model, pool_of(batch), cfg, accelerator, pad_id=0, precision="bf16", logit_chunk=chunk)


def run_stage(model, batch, d: dict, stage: str, accelerator) -> dict:
    """Peak bytes of ``stage`` above what is held before it (the model and its batch)."""
    import numpy as np
    import torch

    from leadsel.model.loss import per_sample_loss
    from leadsel.model.precision import autocast
    from leadsel.scoring.grads import GradTaps, checkpointed, eval_mode, tapped_grads
    from leadsel.train.checkpoint import Checkpointer

    device = accelerator.device
    peak = Peak(device)
    t0 = time.perf_counter()
    if stage == "scoring":
        with eval_mode(model):
            peak.start()
            with torch.inference_mode(), autocast(device.type, "bf16"):
                per_sample_loss(model, **batch, chunk=d["chunk"])
            used = peak.stop()
    elif stage in ("training", "training_gc"):
        peak.start()
        trainer_for(model, batch, accelerator, stage == "training_gc", d["chunk"]).train([0])
        used = peak.stop()
    elif stage in ("features", "features_gc"):
        taps = GradTaps(model)
        with eval_mode(model), checkpointed(model, stage == "features_gc"):
            peak.start()
            tapped_grads(model, taps, batch, "bf16", chunk=d["chunk"])
            used = peak.stop()
    elif stage == "checkpoint":
        trainer = trainer_for(model, batch, accelerator, False, d["chunk"])
        trainer.train([0])
        selector = {"ref_grad": {str(k): np.zeros(65536, dtype=np.float32) for k in range(7)}}
        with tempfile.TemporaryDirectory() as tmp:
            peak.start()
            Checkpointer(tmp).save(1, model=model, trainer=trainer, selector_state=selector, extra={},
                                   accelerator=accelerator)
            used = peak.stop()
    else:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    return {"peak_bytes": int(used), "seconds": round(time.perf_counter() - t0, 2), "device": str(device)}


def measure(d: dict, stage: str) -> dict:
    """``stage`` in this process, on a model built for it (the CPU's peak needs a fresh process)."""
    from accelerate import Accelerator

    acc = Accelerator()
    model, batch = build(d, acc.device)
    return run_stage(model, batch, d, stage, acc)


def measure_all(d: dict, accelerator, stages=STAGES) -> dict:
    """Every stage on one model, in this process: right on an accelerator, whose peak counter is
    reset between stages and whose freed memory is freed; on CPU use one process per stage."""
    import gc

    import torch

    model, batch = build(d, accelerator.device)
    out = {}
    for stage in stages:
        out[stage] = run_stage(model, batch, d, stage, accelerator)
        gc.collect()
        if accelerator.device.type != "cpu":
            getattr(torch, accelerator.device.type).empty_cache()
    return out


# ---------------------------------------------------------------------------------------------- the fit
def fit(rows: list[dict], stage: str):
    import numpy as np

    terms = TERMS[stage]
    X = np.array([[features_of(r["dims"])[t] for t in terms] for r in rows], dtype=np.float64)
    y = np.array([r["stages"][stage]["peak_bytes"] for r in rows], dtype=np.float64)
    scale = np.abs(X).max(0)
    scale[scale == 0] = 1.0
    coef = np.linalg.lstsq(X / scale, y, rcond=None)[0] / scale
    return dict(zip(terms, coef.tolist())), (X @ coef).tolist()


def predict(coefs: dict, d: dict) -> float:
    f = features_of(d)
    return float(sum(c * f[t] for t, c in coefs.items()))


def gb(x: float) -> str:
    return f"{x / 1e9:7.3f}"


def child(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    print(json.dumps(measure(spec["dims"], spec["stage"])))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the points, fits and prediction as JSON here")
    ap.add_argument("--points", default=",".join(POINTS), help="comma-separated subset of " + ", ".join(POINTS))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per stage process")
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    names = args.points.split(",")
    for n, name in enumerate(names, 1):
        d = dims(POINTS[name])
        row = {"point": name, "dims": d, "stages": {}}
        for stage in STAGES:
            spec = json.dumps({"dims": d, "stage": stage})
            out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                                 env=env, timeout=args.timeout)
            if out.returncode != 0:
                sys.exit(f"{name}/{stage} failed:\n{out.stderr[-3000:]}")
            row["stages"][stage] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"[{n}/{len(names)}] {name:7s} {stage:12s} {gb(row['stages'][stage]['peak_bytes'])} GB "
                  f"({row['stages'][stage]['seconds']} s)", flush=True)
        rows.append(row)

    fits = {}
    print("\npeak above the model and batch, GB (measured / fitted)")
    print(f"{'point':7s} {'trainable':>10s} " + " ".join(f"{s:>17s}" for s in STAGES))
    for stage in STAGES:
        fits[stage] = fit(rows, stage) if len(rows) >= len(TERMS[stage]) else (None, None)
    for k, r in enumerate(rows):
        cells = []
        for stage in STAGES:
            m = r["stages"][stage]["peak_bytes"]
            f = fits[stage][1][k] if fits[stage][1] else math.nan
            cells.append(f"{gb(m)} /{gb(f)}")
        print(f"{r['point']:7s} {trainable(r['dims']):10d} " + " ".join(cells))
    print("\nfitted bytes per unit (THL tokens*hidden*layers, TH tokens*hidden, CV min(sup, chunk)*vocab, "
          "P trainable, one)")
    for stage in STAGES:
        if fits[stage][0]:
            print(f"  {stage:12s} " + ", ".join(f"{t} {c:.4g}" for t, c in fits[stage][0].items()))

    pred = {}
    weights = LLAMA_8B_PARAMS * 2 + trainable(LLAMA_8B) * 4
    print(f"\nprojected for Llama-3.1-8B, 3,080 tokens, LoRA r 64 ({trainable(LLAMA_8B) / 1e6:.1f}M trainable), "
          f"logit_chunk 1024, per rank:")
    print(f"  weights (bf16 base + fp32 LoRA)       {gb(weights)} GB")
    for stage in STAGES:
        if fits[stage][0]:
            pred[stage] = predict(fits[stage][0], LLAMA_8B)
            print(f"  {stage:12s} above the weights     {gb(pred[stage])} GB   total {gb(weights + pred[stage])} GB")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "fits": {s: f[0] for s, f in fits.items()},
                                              "llama_8b": {"weights": weights, "stages": pred}}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.path.insert(0, str(ROOT / "src"))
        child(sys.argv[2:])
    else:
        main(sys.argv[1:])
