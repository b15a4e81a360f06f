"""The precision policy: which precision a run computes in, why, and the context that applies it.

``auto`` chooses bf16 autocast (fp32 master weights, bf16 matmuls) where the device computes bf16
natively, else fp32; ``run.json`` records the choice and its reason (``model.precision``,
``model.precision_reason``). Every forward of a run -- training, scoring, gradient features,
held-out loss -- enters :func:`autocast` with that choice.
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


def autocast(device_type: str, precision: str):
    """bf16 autocast context (fp32 master weights), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return nullcontext()
