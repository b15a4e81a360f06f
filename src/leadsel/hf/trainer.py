"""``LeadTrainer`` (on ``transformers.Trainer``) and ``LeadSFTTrainer`` (on ``trl.SFTTrainer``).

One HF epoch is one round, through the trainers' public extension points only:

- ``_get_train_sampler`` returns the round sampler (:mod:`.rows`): leadsel's micro-batches, padded
  to whole optimizer steps on every process;
- ``compute_loss`` returns leadsel's per-sample loss, each sample weighing ``1 / (samples in the
  step)`` (``loss_is_scaled_for_ga``: HF does not divide it again), and keeps each sample's loss
  with its position in the round;
- ``training_step``, on a step's last micro-batch (gradients synchronised, not yet clipped), adds
  the gradient to the round's sum and takes ``g·theta`` (:mod:`leadsel.train.firstorder`);
- a callback: ``on_optimizer_step`` takes delta, ``on_step_end`` ends the epoch after the round's
  last step, ``on_epoch_end`` gathers the losses from every process, gives the selector the round
  and plans the next (or stops), ``on_save`` writes the selection's state into the checkpoint;
- ``train(resume_from_checkpoint=...)`` restores it from ``checkpoint-*/leadsel/``.

The trainer does not know which method selects; the selection (:mod:`.selection`) does not know
which trainer trains.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .. import dist
from ..model.loss import per_sample_loss
from ..select import method_of
from ..train.checkpoint import read_state, write_state
from ..train.firstorder import FirstOrder, clip_coefficient, step_losses
from ..train.trainer import StepStat, TrainResult
from . import options
from .rows import Collator, PoolRows, RoundSampler, decode, encode_codes, layout
from .selection import LeadSelection

log = logging.getLogger(__name__)

class RoundRun:
    """One round as the trainer trains it: its plan, the per-sample losses of this process, and
    per optimizer step the learning rate, the norm, delta and the gradient sum."""

    def __init__(self, order: np.ndarray, per_step: int, start_step: int, params, track: bool):
        self.order, self.per_step, self.start_step = order, per_step, start_step
        self.n_steps = -(-len(order) // per_step)
        self.first = FirstOrder(params, track)
        self.seen: list[tuple[int, float]] = []
        self.steps: list[StepStat] = []
        self.sample_lrs = np.zeros(len(order), dtype=np.float64)
        self._norm = self._lr = 0.0
        self.t0 = time.perf_counter()

    def step_size(self, global_step: int) -> int:
        """How many samples the current optimizer step trains (the last one of a round may be short)."""
        return min(self.per_step, len(self.order) - (global_step - self.start_step) * self.per_step)

    def before_step(self, lr: float, global_step: int) -> None:
        self._lr = lr
        self._norm = self.first.before_step()
        k = global_step - self.start_step
        self.sample_lrs[k * self.per_step:(k + 1) * self.per_step] = lr

    def after_step(self, max_norm: float | None, skipped: bool) -> None:
        delta = float("nan") if skipped else self.first.delta(self._lr, clip_coefficient(self._norm, max_norm))
        k = len(self.steps)
        self.steps.append(StepStat(lr=self._lr, delta=delta, grad_norm=self._norm, loss=float("nan"),
                                   n_samples=min(self.per_step, len(self.order) - k * self.per_step)))

    def done(self, global_step: int) -> bool:
        return global_step - self.start_step >= self.n_steps

    def result(self, accelerator, optimizer=None) -> TrainResult:
        """The round as the selector reads it; ``optimizer``: give the gradient sum in its (Adam) metric."""
        losses = np.full(len(self.order), np.nan, dtype=np.float32)
        trained = np.zeros(len(self.order), dtype=bool)
        for part in dist.gather(accelerator, self.seen):
            for pos, loss in part:
                losses[pos], trained[pos] = loss, True
        if not trained.all():
            raise RuntimeError(f"{int((~trained).sum())} of the round's {len(losses)} samples were not trained")
        for st, loss in zip(self.steps, step_losses(losses, self.per_step, len(self.steps))):
            st.loss = loss
        return TrainResult(indices=self.order, losses=losses, steps=self.steps,
                           grad_sum=self.first.flat(optimizer) if len(self.order) else None, sample_lrs=self.sample_lrs)


class LeadCallback(TrainerCallback):
    """The rounds' bookkeeping at the trainer's events (see the module's docstring)."""

    def __init__(self, trainer: "LeadTrainerMixin"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kw):
        if not self.trainer._lead_next(state.global_step):  # nothing left (e.g. resumed from the last round)
            control.should_training_stop = True

    def on_epoch_begin(self, args, state, control, **kw):
        if self.trainer._lead_run is not None:
            self.trainer._lead_run.t0 = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kw):
        t = self.trainer
        t._lead_run.after_step(args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None,
                               bool(t.accelerator.optimizer_step_was_skipped))

    def on_step_end(self, args, state, control, **kw):
        if self.trainer._lead_run.done(state.global_step):
            control.should_epoch_stop = True

    def on_epoch_end(self, args, state, control, **kw):
        t = self.trainer
        run = t._lead_run
        if run is None:  # the epoch HF runs after the selection said it was done at the start: nothing trained
            control.should_save = control.should_evaluate = False
            return
        if not run.done(state.global_step):
            where = f"round {t.lead.round + 1} ended after {len(run.steps)} of its {run.n_steps} optimizer steps"
            if control.should_training_stop:  # another callback (or the user) stopped training mid-round
                log.warning("%s: training was stopped; the selector is not given the partial round, and no "
                            "checkpoint is saved in the middle of it", where)
                control.should_save, t._lead_snapshot = False, None
                return
            raise RuntimeError(where)
        adam = getattr(t.lead.selector, "gradient_metric", "euclidean") == "adam"
        t.lead.observe(run.order, run.result(t.accelerator, t.optimizer if adam else None), time.perf_counter() - run.t0)
        # the state a checkpoint of this round holds: taken before the next plan changes it
        t._lead_snapshot = copy.deepcopy(t.lead.state_dict()) if args.save_strategy != "no" else None
        if not t._lead_next(state.global_step):
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self.trainer.lead.optimizer_steps = state.global_step

    def on_save(self, args, state, control, **kw):
        t = self.trainer
        if t._lead_snapshot is None or not state.is_world_process_zero:
            return
        d = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / "leadsel"
        d.mkdir(parents=True, exist_ok=True)
        write_state(d, t._lead_snapshot)


class LeadTrainerMixin:
    """What ``LeadTrainer`` and ``LeadSFTTrainer`` add to their HF base (see the module's docstring)."""

    def __init__(self, model=None, args=None, *, lead: LeadSelection, train_dataset=None, data_collator=None,
                 **kwargs):
        if not isinstance(lead, LeadSelection):
            raise TypeError("lead= must be a leadsel.hf.LeadSelection")
        if args is None:
            raise ValueError(f"{type(self).__name__} needs its training arguments (args=), with output_dir set")
        optimizers = kwargs.get("optimizers") or (None, None)
        options.check(args, lead_family=not method_of(lead.cfg).fixed_length, own_scheduler=optimizers[1] is not None,
                      sft=self._lead_sft, compute_loss_func=kwargs.get("compute_loss_func"))
        tokenizer = kwargs.get("processing_class")
        if tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs the tokenizer (processing_class=)")
        self.lead = lead
        rows = PoolRows()
        collator = Collator(fallback=data_collator or self._lead_eval_collator(tokenizer))
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=self._lead_stand_in(rows),
                         **kwargs)
        self.train_dataset = rows
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = True
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        lead.attach(accelerator=self.accelerator, model=self.model, tokenizer=tokenizer, precision=precision,
                    output_dir=args.output_dir, dataset=train_dataset, max_length=self._lead_max_length(args))
        rows.n, collator.pool, collator.pad_id = len(lead.pool), lead.pool, tokenizer.pad_token_id
        self._lead_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self._lead_sampler = RoundSampler(lead.max_round_samples, self._lead_per_step)
        args.num_train_epochs = lead.max_rounds   # an upper bound: the selection stops training when it is done
        args.ignore_data_skip = True              # the sampler resumes at a round's start itself
        self._lead_params = [p for p in self.model.parameters() if p.requires_grad]
        self._lead_track = not method_of(lead.cfg).fixed_length
        self._lead_run: RoundRun | None = None
        self._lead_snapshot = None
        self.add_callback(LeadCallback(self))

    _lead_sft = False

    def _lead_eval_collator(self, tokenizer):
        """The collator of an eval set when none is given: the one ``Trainer`` picks for a tokenizer."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def _lead_max_length(self, args) -> int | None:
        """A length limit of the trainer's arguments that replaces ``encoding.max_length`` (none here)."""
        return None

    def _lead_stand_in(self, rows: PoolRows):
        """The ``train_dataset`` the base's constructor is given (SFT: a one-row ``datasets.Dataset``,
        the only type TRL accepts there); the trainer then trains ``rows``."""
        return rows

    def _lead_next(self, global_step: int) -> bool:
        """Plan the next round into the sampler; False when the selection is done."""
        order = self.lead.plan()
        if order is None:
            self._lead_run = None
            return False
        a = self.args
        steps = layout(len(order), a.per_device_train_batch_size, a.gradient_accumulation_steps, a.world_size)
        self._lead_sampler.set_round(encode_codes(order, steps))
        self._lead_run = RoundRun(order, self._lead_per_step, global_step, self._lead_params, self._lead_track)
        return True

    def _get_train_sampler(self, train_dataset=None):
        return self._lead_sampler

    def _lead_losses(self, model, inputs: dict, real: np.ndarray) -> torch.Tensor:
        """Each row's mean response-token loss (fp32), through the (wrapped) model's forward;
        ``real``: the rows that are not fillers."""
        return per_sample_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                               exact_logits=True, chunk=self.lead.cfg.model.logit_chunk)[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "lead_codes" not in inputs:  # evaluation on the user's own eval set
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        pos, _ = decode(inputs.pop("lead_codes").cpu().numpy())
        real = pos >= 0
        losses = self._lead_losses(model, inputs, real)
        self._lead_run.seen += list(zip(pos[real].tolist(), losses.detach().float().cpu().numpy()[real].tolist()))
        # as leadsel's loop: the step's gradient is the mean over its samples (DDP averages the
        # processes' gradients, hence x processes); fillers weigh 0
        mask = torch.as_tensor(real, dtype=losses.dtype, device=losses.device)
        loss = (losses * mask).sum() * (self.accelerator.num_processes / self._lead_run.step_size(self.state.global_step))
        return (loss, None) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients and self._lead_run is not None:
            self._lead_run.before_step(self.optimizer.param_groups[0]["lr"], self.state.global_step)
        return loss

    def train(self, resume_from_checkpoint=None, **kwargs):
        """As the base's; resuming from ``checkpoint-*`` also restores the selection exactly."""
        path = resume_from_checkpoint
        if path is True:
            path = last_complete_checkpoint(self.args.output_dir)
        if path:
            d = Path(path) / "leadsel"
            if not (d / "state.json").is_file():
                raise ValueError(f"{path} holds no leadsel state ({d}/state.json): it was not written by a "
                                 "LeadTrainer / LeadSFTTrainer with save_strategy='epoch'")
            self.lead.load_state_dict(read_state(d))
        with self.lead.session.manifest.stage("train"):
            return super().train(resume_from_checkpoint=path or None, **kwargs)


def last_complete_checkpoint(output_dir: str) -> str:
    """The latest ``checkpoint-*`` that holds the selection's state too (a kill between HF's save
    and the selection's leaves the newest one without it)."""
    found = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if p.name.rsplit("-", 1)[1].isdigit() and (p / "leadsel" / "state.json").is_file())
    if not found:
        raise ValueError(f"resume_from_checkpoint=True, but {output_dir} holds no checkpoint-* with a leadsel state")
    return str(found[-1][1])


class LeadTrainer(LeadTrainerMixin, Trainer):
    """``transformers.Trainer`` training what a :class:`LeadSelection` selects, round by round.

    ``LeadTrainer(model=..., args=TrainingArguments(...), train_dataset=pool, processing_class=tok,
    lead=LeadSelection.from_yaml(...))``; ``train_dataset`` is a ``datasets.Dataset`` of records in
    one of leadsel's input shapes (messages, alpaca, sharegpt, prompt/response), or None for the
    config's ``data:``."""


def _sft_base():
    try:
        from trl import SFTTrainer
    except ImportError as e:
        raise ImportError('LeadSFTTrainer needs TRL: pip install "leadsel[trl]"') from e
    return SFTTrainer


def make_sft_trainer():
    """``LeadSFTTrainer``: the mixin on ``trl.SFTTrainer`` (built when first asked for, so that
    importing leadsel.hf does not need TRL)."""
    base = _sft_base()

    class LeadSFTTrainer(LeadTrainerMixin, base):
        """``trl.SFTTrainer`` training what a :class:`LeadSelection` selects, round by round. The
        pool is leadsel's encoding (TRL prepares only an eval set); the per-sample loss comes from
        TRL's fused LM head (the logits are never built whole), which also gives TRL's metrics."""
        _lead_sft = True

        def _lead_eval_collator(self, tokenizer):
            from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            return DataCollatorForLanguageModeling(pad_token_id=pad)

        def _lead_max_length(self, args) -> int | None:
            """``SFTConfig.max_length`` when it was set to a length other than TRL's default."""
            default = next(f.default for f in dataclasses.fields(type(args)) if f.name == "max_length")
            return args.max_length if args.max_length not in (None, default) else None

        def _lead_stand_in(self, rows: PoolRows):
            from datasets import Dataset

            return Dataset.from_dict({"input_ids": [[0, 0]], "labels": [[0, 0]]})  # already tokenized: TRL keeps it

        def _lead_losses(self, model, inputs: dict, real: np.ndarray) -> torch.Tensor:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"], fused_lm_head=True, use_cache=False)
            counts = out.label_mask.sum(1)
            if (counts == 0).any():
                raise ValueError("a sample in the batch has no supervised token; encoding should have rejected it")
            self._lead_metrics(out, inputs["attention_mask"], torch.as_tensor(real, device=counts.device))
            return -out.log_probs.float().sum(1) / counts

        def _lead_metrics(self, out, attention_mask, real) -> None:
            """TRL's training metrics (entropy, mean_token_accuracy, num_tokens), of the real rows."""
            gather = self.accelerator.gather  # not gather_for_metrics: it drops ranks at the end of a dataloader
            n = gather(out.label_mask[real].sum()).sum()
            entropy = gather(out.entropy.detach()[real].sum()).sum()
            top1 = gather(out.is_top1[real].sum()).sum()
            m = self._metrics["train"]
            m["entropy"].append((entropy / n).item() if n > 0 else 0.0)
            m["mean_token_accuracy"].append((top1 / n).item() if n > 0 else 0.0)
            self._total_train_tokens += gather(attention_mask[real].sum()).sum().item()
            m["num_tokens"] = [self._total_train_tokens]

    return LeadSFTTrainer
