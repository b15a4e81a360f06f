"""temporary_adapter: a warm-up LoRA adapter that is alone trainable and active, then vanishes."""
from __future__ import annotations

import types

import pytest
import torch

from helpers import make_llama, randomise_lora_b
from leadsel.model.adapters import lora_config, temporary_adapter
from leadsel.model.load import add_lora

SETTINGS = types.SimpleNamespace(r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
IDS = torch.randint(2, 30, (2, 8), generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits.clone()


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model):
    return {"weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "trainable": trainable(model), "logits": logits(model),
            "modes": [(n, m.training) for n, m in model.named_modules()]}


def train_steps(model, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()


def assert_restored(model, snap):
    weights = {k: v for k, v in model.state_dict().items()}
    assert weights.keys() == snap["weights"].keys()
    assert all(torch.equal(weights[k], v) for k, v in snap["weights"].items())
    assert trainable(model) == snap["trainable"]
    assert [(n, m.training) for n, m in model.named_modules()] == snap["modes"]
    assert torch.equal(logits(model), snap["logits"])


def warmup_names(model):
    return {n for n, _ in model.named_parameters() if ".warmup." in n and ("lora_A" in n or "lora_B" in n)}


def lora_model():
    """A LoRA model whose 'default' adapter is non-trivial (random lora_B)."""
    return randomise_lora_b(add_lora(make_llama(), SETTINGS), "lora_B.default")


def test_lora_config_matches_add_lora():
    cfg = lora_config(SETTINGS)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.task_type) == \
        (4, 8, 0.0, "all-linear", "CAUSAL_LM")
    listed = lora_config(types.SimpleNamespace(r=2, alpha=4, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert listed.target_modules == {"q_proj", "v_proj"}
    added = add_lora(make_llama(), SETTINGS).peft_config["default"].to_dict()
    added.pop("target_modules")  # peft expands "all-linear" in place into the module names
    assert added == {k: v for k, v in cfg.to_dict().items() if k != "target_modules"}


def test_lora_model_warmup_adapter_alone_then_gone():
    model = lora_model()
    with model.disable_adapter():
        base_logits = logits(model)
    snap = snapshot(model)
    assert not torch.allclose(snap["logits"], base_logits)  # the default adapter really matters
    assert snap["trainable"] and all("lora_" in n and ".default." in n for n in snap["trainable"])

    with temporary_adapter(model, SETTINGS) as warm:
        assert warm is model and model.active_adapter == "warmup"
        assert model.peft_config["warmup"].target_modules == model.peft_config["default"].target_modules
        assert trainable(model) == warmup_names(model) != set()
        assert torch.equal(logits(model), base_logits)  # fresh adapter = base function, default unused
        train_steps(model)
        assert not torch.allclose(logits(model), base_logits)
        inside = {k: v for k, v in model.state_dict().items() if ".warmup." not in k}
        assert all(torch.equal(inside[k], snap["weights"][k]) for k in inside)

    assert model.active_adapter == "default"
    assert "warmup" not in model.peft_config and not any("warmup" in n for n, _ in model.named_modules())
    assert_restored(model, snap)


def test_lora_model_frozen_default_stays_frozen():
    """set_adapter('default') would make 'default' trainable; the flags are restored instead."""
    model = lora_model()
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    snap = snapshot(model)
    with temporary_adapter(model, SETTINGS):
        assert trainable(model) == warmup_names(model)
        train_steps(model, 1)
    assert trainable(model) == set()
    assert_restored(model, snap)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_full_model_wrapped_then_unloaded(checkpointing):
    model = make_llama()
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    q_proj = model.model.layers[0].self_attn.q_proj
    emb_hooks = dict(model.get_input_embeddings()._forward_hooks)
    snap = snapshot(model)
    assert len(snap["trainable"]) == len(list(model.parameters()))

    with temporary_adapter(model, SETTINGS) as warm:
        assert warm is not model and warm.get_base_model() is model
        assert trainable(warm) == warmup_names(warm) != set()
        assert torch.equal(logits(warm), snap["logits"])  # fresh adapter = base function
        train_steps(warm)
        assert not torch.allclose(logits(warm), snap["logits"])

    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model.model.layers[0].self_attn.q_proj is q_proj
    assert not any("lora" in n for n, _ in model.named_modules())
    assert all(p.requires_grad for p in model.parameters())
    assert dict(model.get_input_embeddings()._forward_hooks) == emb_hooks
    assert_restored(model, snap)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_exception_inside_restores(kind):
    model = lora_model() if kind == "lora" else make_llama()
    snap = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_adapter(model, SETTINGS) as warm:
            train_steps(warm, 1)
            raise RuntimeError("boom")
    assert not any("warmup" in n for n, _ in model.named_modules())
    if kind == "lora":
        assert model.active_adapter == "default" and list(model.peft_config) == ["default"]
    else:
        assert not any("lora" in n for n, _ in model.named_modules())
    assert_restored(model, snap)


def test_repeated_use():
    model = lora_model()
    snap = snapshot(model)
    for _ in range(2):
        with temporary_adapter(model, SETTINGS) as warm:
            train_steps(warm, 1)
    assert_restored(model, snap)
