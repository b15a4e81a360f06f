"""The precision policy: what a run computes in (model.precision) and what its frozen base weights
are stored in (model.weights), each chosen by device and recorded with its reason."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import config, randomise_lora_b, save_tiny_checkpoint
from leadsel.model.load import load_model, model_fingerprint
from leadsel.model.loss import per_sample_loss
from leadsel.model.precision import autocast, choose_weights
from leadsel.schema import LoraSettings


def test_weights_policy_by_device_and_finetuning():
    # auto: bf16 base only for LoRA on an accelerator that computes bf16
    assert choose_weights("auto", "cuda", "lora", "bf16")[0] == "bf16"
    assert choose_weights("auto", "cuda", "lora", "fp32")[0] == "fp32"
    assert choose_weights("auto", "cuda", "full", "bf16")[0] == "fp32"
    dtype, why = choose_weights("auto", "cpu", "lora", "bf16")
    assert dtype == "fp32" and "0.20 nats" in why  # the CPU default the measurements support
    assert choose_weights("bf16", "cpu", "lora", "bf16") == ("bf16", "set in config")
    assert choose_weights("fp32", "cuda", "lora", "bf16") == ("fp32", "set in config")
    with pytest.raises(ValueError, match="model.finetuning: lora"):
        choose_weights("bf16", "cuda", "full", "bf16")
    with pytest.raises(ValueError, match="model.precision to bf16"):
        choose_weights("bf16", "cuda", "lora", "fp32")


def test_bf16_base_keeps_lora_and_optimizer_state_fp32(tmp_path, tok):
    ckpt = save_tiny_checkpoint(tmp_path / "m")
    lora = LoraSettings(r=4)
    m32, m16 = load_model(ckpt, "lora", lora, "fp32"), load_model(ckpt, "lora", lora, "bf16")
    base16 = {n: p.dtype for n, p in m16.named_parameters() if "lora_" not in n}
    assert base16 and set(base16.values()) == {torch.bfloat16}
    assert {p.dtype for n, p in m16.named_parameters() if "lora_" in n} == {torch.float32}
    assert all(p.requires_grad == ("lora_" in n) for n, p in m16.named_parameters())
    # a bf16 base is another function: its scores never share a cache entry with the fp32 one
    assert model_fingerprint(m16, ckpt) != model_fingerprint(m32, ckpt)
    assert model_fingerprint(m32, ckpt) == model_fingerprint(load_model(ckpt, "lora", lora), ckpt)

    randomise_lora_b(m32)
    with torch.no_grad():  # the same adapter on both bases (LoRA A is drawn at random when added)
        adapter = dict(m32.named_parameters())
        for n, p in m16.named_parameters():
            if "lora_" in n:
                p.copy_(adapter[n])
    text = [tok.apply_chat_template([{"role": "user", "content": "what is two plus two"},
                                     {"role": "assistant", "content": "four thanks"}], tokenize=False)]
    enc = tok(text, return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[:, :-3] = -100
    with autocast("cpu", "bf16"):
        l16, _ = per_sample_loss(m16, enc.input_ids, enc.attention_mask, labels)
        l32, _ = per_sample_loss(m32, enc.input_ids, enc.attention_mask, labels)
    assert l16.dtype == torch.float32
    # under autocast the matmuls see bf16 weights either way; only the embeddings and norms differ
    # (1e-6 here; up to 0.20 nats on the bundled model, docs/performance.md)
    assert abs(float(l16.detach() - l32.detach())) < 1e-2

    params = [p for p in m16.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    with autocast("cpu", "bf16"):
        l16, _ = per_sample_loss(m16, enc.input_ids, enc.attention_mask, labels)
    l16.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    opt.step()
    states = [s for s in opt.state.values()]
    assert len(states) == len(params)
    assert {s["exp_avg"].dtype for s in states} == {s["exp_avg_sq"].dtype for s in states} == {torch.float32}


def test_run_records_the_weights_and_why(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    out = tmp_path / "run"
    run(config(d, ckpt, out, method="random", budget=0.25, evaluate="false", model__precision="bf16",
               model__weights="bf16"))
    model = json.loads((out / "run.json").read_text())["model"]
    assert (model["precision"], model["weights"], model["weights_reason"]) == ("bf16", "bf16", "set in config")
    default = tmp_path / "default"
    run(config(d, ckpt, default, method="random", budget=0.25, evaluate="false"))
    model = json.loads((default / "run.json").read_text())["model"]
    assert model["weights"] == "fp32" and model["weights_reason"].startswith("CPU")


def test_bf16_weights_without_bf16_compute_are_refused_by_name(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    with pytest.raises(ValueError, match="model.weights: bf16"):
        run(config(d, ckpt, tmp_path / "r", method="random", model__weights="bf16"))  # precision fp32

