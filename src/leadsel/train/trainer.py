"""One training loop for every method, on accelerate (one code path: CPU, one GPU, many).

``Trainer.train(indices)`` trains one pass over the given samples, in the given order, with
gradient accumulation, and returns a :class:`TrainResult`: every sample's loss from the forward
that trained it, and, per optimizer step, the first-order statistics LEAD needs (docs/algorithms.md
§1.3, computed by :mod:`.firstorder`): the learning rate used, ``delta = -g·u/eta`` (g the batch
gradient as it stands after backward, u the parameter update the step made), and the running sum
of g over the call. The trainer does not know which method chose the indices.

The step loss is the mean of the per-sample losses of the step's samples (every sample weighs
the same whatever its length), so per-device batch 1 x accumulation 4 trains exactly like
batch 4 x accumulation 1.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import dist
from .firstorder import FirstOrder, clip_coefficient, step_losses
from ..data.encode import EncodedPool, collate
from ..model.load import set_checkpointing
from ..model.loss import LossModule
from ..model.precision import autocast
from ..utils import trim_heap


@dataclass
class StepStat:
    lr: float
    delta: float        # -g·u / lr (nan when lr == 0)
    grad_norm: float    # before clipping
    loss: float         # mean per-sample loss of the step
    n_samples: int


@dataclass
class TrainResult:
    indices: np.ndarray                 # samples in the order trained
    losses: np.ndarray                  # float32, each sample's in-loop loss (aligned with indices)
    steps: list[StepStat] = field(default_factory=list)
    grad_sum: np.ndarray | None = None  # float32, sum over steps of the flattened trainable gradient
    sample_lrs: np.ndarray | None = None  # learning rate of the step each sample was trained in

    @property
    def delta(self) -> float:
        """Mean over the call's optimizer steps of -g·u/eta (nan if none)."""
        vals = [s.delta for s in self.steps if not math.isnan(s.delta)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def lrs(self) -> list[float]:
        return [s.lr for s in self.steps]


def steps_for(n_samples: int, cfg, num_processes: int = 1) -> int:
    """Optimizer steps that training ``n_samples`` samples takes."""
    return math.ceil(n_samples / (cfg.per_device_batch_size * cfg.gradient_accumulation_steps * num_processes))


def lr_lambda(cfg, total_steps: int | None):
    """Multiplier of the peak learning rate at optimizer step s (HF-style linear warm-up)."""
    kind, warm = cfg.lr_scheduler, cfg.warmup_steps
    if kind in ("linear", "cosine") and not total_steps:
        raise ValueError(f"train.lr_scheduler={kind} needs the number of planned optimizer steps")

    def f(s: int) -> float:
        if s < warm:
            return s / max(1, warm)
        if kind == "constant":
            return 1.0
        if kind == "step":
            return cfg.scheduler_gamma ** ((s - warm) // cfg.scheduler_step_size)
        progress = min(1.0, (s - warm) / max(1, total_steps - warm))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class Trainer:
    def __init__(self, model: torch.nn.Module, pool: EncodedPool, cfg, accelerator, pad_id: int,
                 precision: str = "fp32", total_steps: int | None = None, optimizer: str = "adamw",
                 track: bool = True, on_step=None, logit_chunk: int | None = None,
                 gradient_metric: str = "euclidean"):
        """``track=False`` skips the statistics (delta, grad_sum); ``on_step(global_step)`` is called
        after every optimizer step; ``logit_chunk``: the loss's (``model.logit_chunk``);
        ``gradient_metric``: euclidean, or adam (the round's gradient sum in Adam's metric, as the
        selector asks: :meth:`FirstOrder.flat`)."""
        self.cfg, self.pool, self.acc, self.pad_id, self.precision = cfg, pool, accelerator, pad_id, precision
        self.track, self.on_step, self.gradient_metric = track, on_step, gradient_metric
        set_checkpointing(model, cfg.gradient_checkpointing)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameter")
        if optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                    eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
        elif optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer {optimizer!r} is not one of adamw, sgd")
        self.module, self.optimizer = accelerator.prepare(LossModule(model, logit_chunk), opt)
        # stepped by hand once per optimizer step: the schedule is in optimizer steps whatever
        # the number of processes
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, total_steps))
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.global_step = 0
        self.samples_seen = 0
        self.stats_seconds = 0.0  # time spent on the statistics (delta, grad_sum), for the overhead benchmark

    @property
    def model(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.module).model

    def train(self, indices, desc: str | None = None) -> TrainResult:
        """One pass over ``indices`` in that order; ``desc``: show a progress bar (samples, ETA)."""
        cfg, acc = self.cfg, self.acc
        order = np.asarray(indices, dtype=np.int64)
        world, rank, bs = acc.num_processes, acc.process_index, cfg.per_device_batch_size
        per_step = bs * cfg.gradient_accumulation_steps * world
        first = FirstOrder(self.params, self.track)
        sample_lrs = np.zeros(len(order), dtype=np.float64)
        seen: list[tuple[int, float]] = []  # (position in order, loss) of this process's samples
        steps: list[StepStat] = []
        self.module.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=desc, unit="sample", dynamic_ncols=True, leave=False,
                   disable=desc is None or not acc.is_local_main_process)
        for s in range(0, len(order), per_step):
            chunk = order[s:s + per_step]
            at = np.arange(s, s + len(chunk))[rank::world]  # this process's share, as positions in order
            micro = [at[j:j + bs] for j in range(0, len(at), bs)]
            weight = world / len(chunk)
            if not micro:  # this rank got nothing in a short last step: a zero-weight forward
                micro, weight = [np.arange(s, s + 1)], 0.0
            lr = self.optimizer.param_groups[0]["lr"]
            sample_lrs[s:s + per_step] = lr
            for m, mb in enumerate(micro):
                batch = {k: v.to(acc.device) for k, v in collate(self.pool, order[mb], self.pad_id).items()}
                sync = nullcontext() if m == len(micro) - 1 else acc.no_sync(self.module)
                with sync:
                    with autocast(acc.device.type, self.precision):
                        losses, _ = self.module(**batch)
                    acc.backward(losses.sum() * weight)
                if weight:
                    seen += list(zip(mb.tolist(), losses.detach().float().cpu().tolist()))
            norm = first.before_step()
            if cfg.max_grad_norm is not None:
                acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            trim_heap(acc.device.type)
            delta = first.delta(lr, clip_coefficient(norm, cfg.max_grad_norm))
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            steps.append(StepStat(lr=lr, delta=delta, grad_norm=norm, loss=float("nan"),  # set below
                                  n_samples=len(chunk)))
            bar.update(len(chunk))
            if self.on_step is not None:
                self.on_step(self.global_step)
        bar.close()
        self.samples_seen += len(order)
        losses = np.full(len(order), np.nan, dtype=np.float32)
        for part in dist.gather(acc, seen):
            for pos, loss in part:
                losses[pos] = loss
        for st, loss in zip(steps, step_losses(losses, per_step, len(steps))):  # the same on every process
            st.loss = loss
        flat = first.flat(self.optimizer if self.gradient_metric == "adam" else None) if len(order) else None
        self.stats_seconds += first.seconds
        return TrainResult(indices=order, losses=losses, steps=steps, grad_sum=flat, sample_lrs=sample_lrs)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "global_step": self.global_step, "samples_seen": self.samples_seen}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step, self.samples_seen = state["global_step"], state["samples_seen"]
