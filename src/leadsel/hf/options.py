"""The trainer options the plug-in cannot honour, refused at construction with what to change.

One HF epoch is one round, whose samples leadsel chose and ordered; a round's length is decided
as it goes. So the trainer must not reorder, pack, regroup or re-weight the rows, must not size
anything from a number of steps known in advance, must checkpoint only at a round's end, and (for
LEAD) must leave the gradient in place after backward for the round's statistics.
"""
from __future__ import annotations


def refusals(args, *, lead_family: bool, own_scheduler: bool, sft: bool, compute_loss_func=None) -> list[str]:
    """What is wrong with these trainer arguments, one sentence each (empty: nothing)."""
    bad = []

    def no(cond: bool, why: str) -> None:
        if cond:
            bad.append(why)

    no(compute_loss_func is not None, "compute_loss_func: the loss is leadsel's per-sample loss (each sample's mean "
       "response-token loss, every sample weighing the same); pass none")
    no(getattr(args, "max_steps", -1) > 0, f"max_steps={args.max_steps}: the selection ends training (budget, "
       "rounds); leave max_steps at -1")
    strategy = getattr(args, "train_sampling_strategy", "random")
    no(strategy != "random" or getattr(args, "group_by_length", False),
       f"train_sampling_strategy={strategy!r}: the rows are trained in leadsel's order; leave it at 'random' "
       "(the plug-in's sampler replaces it)")
    save = str(getattr(args.save_strategy, "value", args.save_strategy))
    no(save not in ("no", "epoch"), f"save_strategy={save!r}: a checkpoint must fall at the end of a round to "
       "resume exactly; use 'epoch' (one epoch is one round) or 'no'")
    no(bool(getattr(args, "auto_find_batch_size", False)), "auto_find_batch_size: the rounds are laid out for one "
       "batch size; set per_device_train_batch_size yourself")
    acc = getattr(args, "accelerator_config", None)
    for key in ("split_batches", "dispatch_batches"):
        no(bool(getattr(acc, key, False)), f"accelerator_config.{key}: each process must read its own "
           "micro-batches of the round's layout; leave it off")
    no(getattr(args, "n_gpu", 1) > 1, "several GPUs in one process (nn.DataParallel): launch one process per GPU "
       "with `accelerate launch` or `torchrun`")
    if lead_family:
        sched = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        no(not own_scheduler and sched not in ("constant", "constant_with_warmup"),
           f"lr_scheduler_type={sched!r}: LEAD's rounds decide their length as they go, so a schedule that needs "
           "the total number of steps cannot be sized; use 'constant' or 'constant_with_warmup'")
        warm = getattr(args, "warmup_steps", 0) or 0
        no(float(warm) != int(warm) or (getattr(args, "warmup_ratio", 0) or 0) > 0,
           "a warm-up given as a ratio would be taken of an upper bound of the steps: give warmup_steps as a "
           "whole number of steps")
        no(bool(getattr(args, "fp16", False)), "fp16: the loss scaler keeps the gradient scaled when LEAD's statistics "
           "read it; use bf16 (or fp32)")
        no(bool(getattr(args, "deepspeed", None)), "deepspeed: DeepSpeed steps the optimizer inside backward, so the "
           "gradient LEAD's statistics read (delta, the summed gradient) is gone; use DDP, or a static method")
        no(bool(getattr(args, "fsdp", None)), "fsdp: each process holds only shards of the gradient LEAD's "
           "statistics read; use DDP, or a static method")
    if sft:
        no(bool(getattr(args, "packing", False)), "packing: each row must be one sample, whose loss LEAD reads; set "
           "packing=False")
        no(bool(getattr(args, "padding_free", False)), "padding_free: rows are right-padded samples; set "
           "padding_free=False")
        no(getattr(args, "loss_type", "nll") != "nll", f"loss_type={getattr(args, 'loss_type', None)!r}: leadsel "
           "trains its per-sample negative log-likelihood; use loss_type='nll'")
        no((getattr(args, "label_smoothing_factor", 0) or 0) > 0, "label_smoothing_factor: the losses LEAD reads are "
           "plain negative log-likelihoods; set it to 0")
    return bad


def check(args, **kw) -> None:
    """Raise ``ValueError`` listing every refused option (see :func:`refusals`)."""
    bad = refusals(args, **kw)
    if bad:
        raise ValueError("the leadsel plug-in cannot honour these trainer options:\n  - " + "\n  - ".join(bad))
