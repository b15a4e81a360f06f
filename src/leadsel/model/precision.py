"""The precision policy: what a run computes in, what its frozen weights are stored in, and why.

Two settings, each recorded in ``run.json`` with its reason:

* ``model.precision`` (``model.precision`` / ``precision_reason``): ``auto`` chooses bf16 autocast
  (bf16 matmuls) where the device computes bf16 natively, else fp32. Every forward of a run --
  training, scoring, gradient features, held-out loss -- enters :func:`autocast` with that choice.
* ``model.weights`` (``model.weights`` / ``weights_reason``): the dtype of the frozen base weights.
  ``auto`` chooses bf16 on accelerators that compute bf16 natively and a LoRA run (half the
  memory of the largest thing a run holds); fp32 on CPU, where bf16 weights moved losses by up to
  0.20 nats in our measurements (docs/performance.md), and for full fine-tuning, whose trained
  weights are the master weights. LoRA weights and the optimizer state stay fp32 whatever this is.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(setting: str, device_type: str) -> tuple[str, str]:
    """(precision, reason). ``auto``: bf16 autocast where the device has native bf16, else fp32."""
    if setting in ("bf16", "fp32"):
        return setting, "set in config"
    if device_type == "cpu":
        ok = cpu_supports_bf16()
        return ("bf16", "CPU has avx512_bf16/amx_bf16") if ok else ("fp32", "CPU lacks native bf16")
    from accelerate.utils import is_bf16_available

    ok = is_bf16_available()
    return ("bf16", f"{device_type} supports bf16") if ok else ("fp32", f"{device_type} lacks bf16")


def choose_weights(setting: str, device_type: str, finetuning: str, precision: str) -> tuple[str, str]:
    """(dtype of the frozen base weights, reason); see the module's docstring."""
    if finetuning == "full":
        if setting == "bf16":
            raise ValueError("model.weights: bf16 needs model.finetuning: lora (full fine-tuning trains every "
                             "weight, and its master weights must stay fp32)")
        return "fp32", "full fine-tuning trains every weight (fp32 master weights)"
    if setting == "bf16":
        if precision != "bf16":
            raise ValueError("model.weights: bf16 computes under bf16 autocast: set model.precision to bf16 "
                             "(or auto on a device with native bf16), not fp32")
        return "bf16", "set in config"
    if setting == "fp32":
        return "fp32", "set in config"
    if device_type == "cpu":
        return "fp32", "CPU: bf16 weights moved losses by up to 0.20 nats here (fp32 weights, autocast as set)"
    if precision != "bf16":
        return "fp32", f"{device_type} computes in fp32 (model.precision)"
    return "bf16", f"{device_type} computes bf16 natively: frozen base weights bf16, LoRA and optimizer fp32"


def autocast(device_type: str, precision: str):
    """bf16 autocast context (fp32 master weights), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return nullcontext()
