"""Per-sample gradients of the trainable (LoRA) parameters and their Adam preconditioning, as in
LESS (Xia et al., ICML 2024); :mod:`.features` turns them into projected features.

Used by the gradient-based selectors (LESS, ClusterUCB, Dynamic). For every sample ``i`` of a
pool the feature is

    normalise( project( precondition( grad_theta loss_i ) ) )

* ``loss_i`` is :func:`leadsel.model.loss.per_sample_loss` (mean fp32 cross-entropy over the
  sample's response tokens), ``theta`` the parameters with ``requires_grad`` (the LoRA adapter),
  flattened in a fixed order: the order of ``model.named_parameters()`` restricted to
  ``requires_grad`` (:func:`trainable_parameters`); each parameter is ``p.reshape(-1)`` (row-major,
  i.e. ``lora_A.weight`` of shape ``(r, in)`` contributes ``r * in`` numbers, row by row).
* ``precondition`` (training samples, when an optimizer is given) is LESS's Adam update direction
  from the optimizer's state ``(m, v, t, beta1, beta2, eps)`` of each parameter:
  ``m' = b1 m + (1 - b1) g``, ``v' = b2 v + (1 - b2) g^2`` and

  - ``"bias_corrected"`` (default, the direction AdamW itself would take at step ``t + 1``):
    ``(m' / (1 - b1^(t+1))) / (sqrt(v' / (1 - b2^(t+1))) + eps)``;
  - ``"released"`` (LESS's released code, ``obtain_gradients_with_adam``): ``m' / sqrt(v' + eps)``.

  An optimizer without state for a parameter (no step taken yet) reads as ``m = v = 0, t = 0``:
  the bias-corrected feature is then ``g / (|g| + eps)`` (about ``sign(g)``) and the released one
  ``(1 - b1) g / sqrt((1 - b2) g^2 + eps)``. Weight decay, learning rate and AMSGrad are not part
  of the feature (AMSGrad state is refused). Validation samples use the plain gradient
  (``optimizer=None``).
* ``project`` is a fixed-seed random projection object with ``.project(G: (b, P)) -> (b, d)``
  (:class:`leadsel.scoring.projection.RademacherProjection`, block-wise, never a ``P x d``
  matrix); ``normalise`` is the row L2 normalisation (a zero row stays zero).

Method (per-sample gradients): *exact hooks*, not ``torch.func``. ``vmap(grad(...))`` over the HF
Llama model fails (transformers' ``create_causal_mask`` -> ``sdpa_mask`` ->
``_ignore_causal_mask_sdpa`` branches on tensor values, and ``per_sample_loss`` selects
supervised positions with a boolean mask, a data-dependent shape), so instead every
``nn.Linear`` that owns a trainable parameter (peft's ``lora_A``/``lora_B``) gets a forward hook
that keeps its input ``x`` (b, t, in) and puts a tensor hook on its output; one backward of the
**sum** of the batch's per-sample losses (``torch.autograd.grad`` w.r.t. the trainable
parameters, so no ``.grad`` of the model is written) delivers each output's gradient ``g``
(b, t, out), and the hook immediately forms the per-sample weight gradient
``einsum('bto,bti->boi', g, x)`` (and ``g.sum(1)`` for a trainable bias) into that sample's row.
This is exact because sample ``j``'s loss does not depend on sample ``b``'s activations (no
cross-sample interaction: per-token norms, attention within the sample, eval mode), so
``d(sum_j loss_j)/d out[b] = d loss_b / d out[b]``; padded positions get ``g = 0``. A trainable
parameter that is not the weight/bias of an ``nn.Linear`` (e.g. a trainable embedding, DoRA
magnitude) is refused with NotImplementedError; models whose batch elements interact (MoE with
capacity limits) would break the exactness argument.

Dropout is off: the model is put in ``eval()`` for the computation (so LoRA dropout is the
identity; checkpointing, below, flags only the decoder layers themselves as training) and every
module's previous train/eval flag is restored afterwards, as is torch's grad mode.

Memory, per batch of ``b`` samples with ``P`` trainable numbers: the activations of one forward
kept for its backward (as for a training step on that batch, without checkpointing), plus the
(b, P) float32 per-sample gradient matrix on the model's device, plus transiently one module's
(b, t, out) output gradient and (b, out, in) per-sample weight gradient, plus segment-sized
temporaries for the Adam preconditioning and the flattened Adam state ``m, v`` (2 P float32,
held once). The (b, P) matrix is then copied to the host (the projection is numpy) and projected
block by block; at most one batch of full per-sample gradients exists at a time. For a 7B
model with an r=128 LoRA on q/k/v/o (P ~ 134M) that is ~0.54 GB per sample in the batch, so keep
``max_batch_size`` small there.

Activation checkpointing (``train.gradient_checkpointing``, :func:`checkpointed`) recomputes
each decoder layer in backward; the first forward's hooks deliver the gradients, and still hold
each tapped layer's input (the inputs of q/k/v, o, gate/up and down: about 6.5 x tokens x
hidden numbers a layer) until its gradient arrives. The vocabulary logits are chunked as everywhere
(``model.logit_chunk``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..model.load import set_checkpointing
from ..model.loss import per_sample_loss
from ..model.precision import autocast

__all__ = ["ADAM_VARIANTS", "AdamState", "adam_precondition", "per_sample_grads", "trainable_parameters"]

ADAM_VARIANTS = ("bias_corrected", "released")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters with ``requires_grad``, in ``named_parameters()`` order: the feature order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- per-sample grads

class GradTaps:
    """Maps each trainable parameter to the ``nn.Linear`` that owns it and its flat offset."""

    def __init__(self, model: nn.Module):
        self.named = trainable_parameters(model)
        if not self.named:
            raise ValueError("the model has no trainable parameter; per-sample gradients need some")
        owner: dict[int, tuple[nn.Module, str]] = {}
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                for attr in ("weight", "bias"):
                    p = getattr(mod, attr, None)
                    if p is not None and p.requires_grad:
                        owner.setdefault(id(p), (mod, attr))
        missing = [n for n, p in self.named if id(p) not in owner]
        if missing:
            raise NotImplementedError(
                "per-sample gradients are computed for nn.Linear weights/biases only; these trainable "
                f"parameters are not: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        self.sizes = [p.numel() for _, p in self.named]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        # per module: [(attr, start, stop)]
        self.slots: dict[nn.Module, list[tuple[str, int, int]]] = {}
        for k, (_, p) in enumerate(self.named):
            mod, attr = owner[id(p)]
            self.slots.setdefault(mod, []).append((attr, int(self.offsets[k]), int(self.offsets[k + 1])))

    @contextmanager
    def recording(self, out: torch.Tensor):
        """Hooks that add each sample's gradient into row b of ``out`` (b, P) during a backward."""
        b = out.shape[0]

        def forward_hook(mod, inputs, output):
            if not (torch.is_grad_enabled() and output.requires_grad):
                return
            x = inputs[0]
            if x.shape[0] != b:
                raise NotImplementedError(
                    f"a trainable Linear saw an input of leading size {x.shape[0]}, not the batch size {b}; "
                    "per-sample attribution needs (batch, ..., features) inputs")
            slots = self.slots[mod]
            x = x.detach()
            box = [x]

            def tensor_hook(g):
                xf = box[0].reshape(b, -1, box[0].shape[-1]).float()
                gf = g.detach().reshape(b, -1, g.shape[-1]).float()
                for attr, s, e in slots:
                    if attr == "weight":
                        out[:, s:e] += torch.bmm(gf.transpose(1, 2), xf).reshape(b, -1)
                    else:
                        out[:, s:e] += gf.sum(1)
                box[0] = None  # release the input as soon as it is used

            output.register_hook(tensor_hook)

        handles = [mod.register_forward_hook(forward_hook) for mod in self.slots]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@contextmanager
def checkpointed(model: nn.Module, on: bool):
    """Activation checkpointing of the decoder layers for passes run in eval mode: transformers
    checkpoints a layer only when the layer is in training mode, so the checkpointed layers alone
    are flagged as training (their submodules stay in eval: dropout stays off). Each tapped
    ``nn.Linear`` then runs twice; the backward delivers the gradient of the first forward's
    output, whose hook adds it (the recomputed output's hook never fires, and is freed with it).
    The previous checkpointing setting and training flags are restored on exit."""
    if not on:
        yield
        return
    was = set_checkpointing(model, True)
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    flags = [(m, m.training) for m in layers]
    for m in layers:
        m.training = True
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t
        set_checkpointing(model, was)


@contextmanager
def eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


def tapped_grads(model, taps: GradTaps, batch: dict, precision: str, chunk: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    n = batch["input_ids"].shape[0]
    G = torch.zeros((n, taps.total), dtype=torch.float32, device=device)
    params = [p for _, p in taps.named]
    with torch.inference_mode(False), torch.enable_grad(), taps.recording(G):
        with autocast(device.type, precision):
            loss, _counts = per_sample_loss(model, **batch, chunk=chunk)
        torch.autograd.grad(loss.float().sum(), params, allow_unused=True)
    return G, loss.detach().float()


def per_sample_grads(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor, *, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample gradients (b, P) float32, per-sample losses (b,)) of a right-padded batch.

    Row ``i`` is ``d per_sample_loss_i / d theta`` flattened in :func:`trainable_parameters`
    order. The model is in eval mode meanwhile (modes restored); its ``.grad`` fields are untouched.
    """
    taps = GradTaps(model)
    device = next(model.parameters()).device
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
             "labels": labels.to(device)}
    with eval_mode(model):
        return tapped_grads(model, taps, batch, precision)


# ----------------------------------------------------------------------------- Adam

@dataclass
class AdamState:
    """Adam moments flattened in feature order, with per-parameter (beta1, beta2, eps, step).

    ``segments[k] = (start, stop, beta1, beta2, eps, step)`` for the k-th trainable parameter;
    ``step`` is the number of optimizer steps already taken (0 when the optimizer has no state)."""
    m: torch.Tensor
    v: torch.Tensor
    segments: list[tuple[int, int, float, float, float, float]]

    @classmethod
    def from_optimizer(cls, optimizer, params: list[torch.Tensor], device=None) -> AdamState:
        """Read ``exp_avg``/``exp_avg_sq``/``step`` and each group's betas/eps of a torch Adam/AdamW
        (or a wrapper exposing ``param_groups`` and ``state``, e.g. accelerate's) for ``params``."""
        groups = {}
        for grp in optimizer.param_groups:
            for p in grp["params"]:
                groups[id(p)] = grp
        ms, vs, segs, start = [], [], [], 0
        for p in params:
            grp = groups.get(id(p))
            if grp is None:
                raise ValueError("a trainable parameter is not in the optimizer's param_groups")
            if "betas" not in grp or "eps" not in grp:
                raise ValueError("the optimizer is not an Adam-type optimizer (no betas/eps)")
            if grp.get("amsgrad", False):
                raise ValueError("AMSGrad optimizer state is not supported for Adam preconditioning")
            st = optimizer.state.get(p, {})
            dev = device if device is not None else p.device
            if st and "exp_avg" in st:
                ms.append(st["exp_avg"].detach().reshape(-1).to(dev, torch.float32))
                vs.append(st["exp_avg_sq"].detach().reshape(-1).to(dev, torch.float32))
                step = float(st["step"].item() if torch.is_tensor(st["step"]) else st["step"])
            else:
                ms.append(torch.zeros(p.numel(), dtype=torch.float32, device=dev))
                vs.append(torch.zeros(p.numel(), dtype=torch.float32, device=dev))
                step = 0.0
            b1, b2 = grp["betas"]
            segs.append((start, start + p.numel(), float(b1), float(b2), float(grp["eps"]), step))
            start += p.numel()
        return cls(torch.cat(ms), torch.cat(vs), segs)


def adam_precondition(G: torch.Tensor, state: AdamState, variant: str = "bias_corrected") -> torch.Tensor:
    """LESS's Adam feature of per-sample gradients ``G`` (b, P), computed in place (returns ``G``)."""
    if variant not in ADAM_VARIANTS:
        raise ValueError(f"adam_variant {variant!r} is not one of {', '.join(ADAM_VARIANTS)}")
    if G.shape[1] != state.m.numel():
        raise ValueError(f"gradients have {G.shape[1]} columns, the Adam state {state.m.numel()}")
    for s, e, b1, b2, eps, t in state.segments:
        g = G[:, s:e]
        m = b1 * state.m[s:e] + (1 - b1) * g
        v = b2 * state.v[s:e] + (1 - b2) * g * g
        if variant == "bias_corrected":
            m = m / (1 - b1 ** (t + 1))
            v = v / (1 - b2 ** (t + 1))
            g.copy_(m / (v.sqrt() + eps))
        else:
            g.copy_(m / (v + eps).sqrt())
        del m, v
    return G
