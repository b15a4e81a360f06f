"""The first-order statistics of a round's optimizer steps that LEAD reads (docs/algorithms.md §1.3).

Per optimizer step, with g the batch gradient as it stands after backward (before clipping) and u
the update the step made: the gradient's norm, ``delta = -g·u / lr``, and the running sum of g
over the round. ``-g·u`` is taken without copying the parameters: ``g·theta`` (in float64) before
and after ``optimizer.step()``, while the gradients are still in place; the gradient a clipped
step leaves is divided by the clip coefficient to give back g. With plain SGD ``delta ==
||g||^2`` exactly; under Adam it keeps loss units.

Both of leadsel's training loops use it: its own (:mod:`.trainer`) and the HF ``Trainer`` plug-in
(:mod:`leadsel.hf`), so the two compute the same numbers the same way.
"""
from __future__ import annotations

import time

import numpy as np
import torch


def clip_coefficient(norm: float, max_norm: float | None) -> float:
    """The factor torch's ``clip_grad_norm_`` multiplies the gradient by (1 when not clipping)."""
    return 1.0 if max_norm is None else min(1.0, max_norm / (norm + 1e-6))


class FirstOrder:
    """The statistics of one round's steps over ``params`` (the trainable parameters); with
    ``track=False`` only the norm (no delta, no gradient sum)."""

    def __init__(self, params: list[torch.Tensor], track: bool = True):
        self.params, self.track = params, track
        self.grad_sum = [torch.zeros_like(p, dtype=torch.float32) for p in params] if track else None
        self.seconds = 0.0   # spent on delta and the gradient sum (the overhead benchmark reads it)
        self._g_theta = 0.0

    def _dot(self) -> float:
        return float(sum((p.grad.double() * p.detach().double()).sum() for p in self.params if p.grad is not None))

    def before_step(self) -> float:
        """After a step's backward, before clipping: add g to the sum, keep g·theta; g's norm."""
        if self.track:
            t0 = time.perf_counter()
            for buf, p in zip(self.grad_sum, self.params):
                buf += p.grad
            self._g_theta = self._dot()
            self.seconds += time.perf_counter() - t0
        return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in self.params)))

    def delta(self, lr: float, coef: float) -> float:
        """After ``optimizer.step()``, the (clipped) gradient still in place: -g·u / lr (nan when
        not tracking or lr is 0); ``coef`` is the clip coefficient the step applied."""
        if not self.track or lr <= 0:
            return float("nan")
        t0 = time.perf_counter()
        g_u = self._dot() / coef - self._g_theta  # g·theta_new - g·theta_old, unclipped g
        self.seconds += time.perf_counter() - t0
        return -g_u / lr

    def flat(self, optimizer=None) -> np.ndarray | None:
        """The gradient sum, flattened in parameter order (float32), or None when not tracking. With
        an Adam-family ``optimizer``, in its metric: each entry times (sqrt(v_hat) + eps)^(-1/2), so
        that a dot product of two such vectors is g1' P g2 with Adam's preconditioner P (see
        :func:`adam_metric`)."""
        if not self.track:
            return None
        t0 = time.perf_counter()
        bufs = self.grad_sum if optimizer is None else [b * w for b, w in zip(self.grad_sum, adam_metric(optimizer, self.params))]
        out = torch.cat([b.flatten() for b in bufs]).cpu().numpy()
        self.seconds += time.perf_counter() - t0
        return out


def adam_metric(optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per parameter, (sqrt(v_hat) + eps)^(-1/2) from an Adam-family optimizer's state: v_hat =
    exp_avg_sq / (1 - beta2^step), Adam's bias-corrected second moment. Its square is the diagonal
    P = 1 / (sqrt(v_hat) + eps) an Adam step preconditions the gradient with (u = -lr P m_hat),
    the metric delta = -g·u / lr is measured in. A parameter not stepped yet gets 1 (no metric yet)."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        group, state = group_of.get(id(p)), optimizer.state.get(p, {})
        if group is None or "betas" not in group:
            raise ValueError("lead.cos_metric: adam needs an Adam-family optimizer (AdamW, Adam): "
                             f"this one is {type(optimizer).__name__}")
        if "exp_avg_sq" not in state:
            out.append(torch.ones_like(p, dtype=torch.float32))
            continue
        step = float(state["step"])
        v_hat = state["exp_avg_sq"].float() / (1.0 - group["betas"][1] ** step)
        out.append((v_hat.sqrt() + group["eps"]).rsqrt())
    return out


def step_losses(losses: np.ndarray, per_step: int, n_steps: int) -> list[float]:
    """The mean per-sample loss of each optimizer step's samples, in training order."""
    return [float(np.mean(losses[k * per_step:(k + 1) * per_step].astype(np.float64))) for k in range(n_steps)]

