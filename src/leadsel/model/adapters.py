"""A temporary LoRA adapter (LEAD's warm-up) that leaves no trace on the model it was added to.

Inside ``temporary_adapter`` a fresh LoRA adapter is the only trainable and the only active one.
Being fresh (``lora_B`` zero), it first computes the base model's function, not the main LoRA
adapter's. On exit, even after an exception, the adapter is removed and every parameter's
``requires_grad`` flag and every module's train/eval mode are restored; the model's own weights are
never written to (LoRA run: the "default" adapter is frozen inside; full run: ``unload``, never
merge), so they are bit-identical afterwards.

Checked against peft 0.21: ``add_adapter`` leaves the new adapter frozen and inactive;
``set_adapter(name)`` makes only ``name`` active and sets its parameters trainable and those of
every other adapter frozen, so going back through ``set_adapter`` would leave the previous adapter
trainable even if it was frozen before; hence the flags are saved and restored explicitly.
``get_peft_model`` freezes every base parameter and, when the model has gradient checkpointing on,
adds an input-embedding hook that makes the embeddings' output require grad; both are undone.
Creating the adapter draws from torch's random generator (``lora_A`` init), which is not restored.
"""
from __future__ import annotations

from contextlib import contextmanager


def lora_config(lora):
    """The peft ``LoraConfig`` for LoRA settings (``r``, ``alpha``, ``dropout``, ``target_modules``)."""
    from peft import LoraConfig

    targets = lora.target_modules
    target = "all-linear" if list(targets) == ["all-linear"] else targets
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=target, task_type="CAUSAL_LM")


@contextmanager
def temporary_adapter(model, lora, name: str = "warmup"):
    """Yield a model in which a fresh LoRA adapter `name` (settings `lora`) is the only trainable, active adapter; on exit restore `model` exactly.

    A ``PeftModel`` is yielded itself, with ``name`` added beside its adapters. A plain model is
    wrapped in place by ``get_peft_model`` and the wrapper yielded; on exit the LoRA layers are
    removed and ``model`` (the caller's reference) is again the plain model with plain layers.
    """
    from peft import PeftModel, get_peft_model

    grads = {id(p): p.requires_grad for p in model.parameters()}
    modes = {id(m): m.training for m in model.modules()}

    if isinstance(model, PeftModel):
        previous = model.active_adapter
        model.add_adapter(name, lora_config(lora))
        try:
            model.set_adapter(name)  # the other adapters are inactive and frozen now
            for p in model.parameters():
                p.requires_grad = False
            model.base_model.set_requires_grad(name, True)
            yield model
        finally:
            model.set_adapter(previous)
            model.delete_adapter(name)
            _restore(model, grads, modes)
        return

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    hooks = set(emb._forward_hooks) if emb is not None else set()
    attrs = {k: model.__dict__[k] for k in ("_require_grads_hooks", "_require_grads_hook") if k in model.__dict__}
    tp = getattr(getattr(model, "config", None), "pretraining_tp", None)
    peft_model = None
    try:
        peft_model = get_peft_model(model, lora_config(lora), adapter_name=name)
        yield peft_model
    finally:
        if peft_model is not None:
            peft_model.unload()  # puts the original base layers back, weights untouched
        if emb is not None:
            for key in set(emb._forward_hooks) - hooks:
                del emb._forward_hooks[key]
        for k in ("_require_grads_hooks", "_require_grads_hook"):
            model.__dict__.pop(k, None)
        model.__dict__.update(attrs)
        if tp is not None:
            model.config.pretraining_tp = tp
        _restore(model, grads, modes)


def _restore(model, grads, modes):
    for p in model.parameters():
        p.requires_grad = grads.get(id(p), p.requires_grad)
    for m in model.modules():
        if id(m) in modes:
            m.training = modes[id(m)]
