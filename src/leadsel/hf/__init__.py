"""LEAD inside the trainers people already use: ``LeadTrainer`` (HF ``Trainer``) and
``LeadSFTTrainer`` (TRL ``SFTTrainer``, ``pip install "leadsel[trl]"``), driven by a
``LeadSelection`` built from a leadsel config (docs/hf.md).

    from leadsel.hf import LeadSelection, LeadSFTTrainer
    lead = LeadSelection.from_yaml("lead.yaml")
    trainer = LeadSFTTrainer(model=model, args=SFTConfig(...), train_dataset=pool,
                             processing_class=tokenizer, lead=lead)
    trainer.train()          # one epoch = one round
    lead.save()              # <output_dir>/leadsel: a leadsel run directory

:mod:`.selection` holds the selection, :mod:`.rows` lays a round out as the trainer's batches,
:mod:`.options` refuses what cannot be honoured, :mod:`.trainer` hooks into the trainers.
"""
from __future__ import annotations

from .selection import LeadSelection
from .trainer import LeadTrainer

__all__ = ["LeadSelection", "LeadSFTTrainer", "LeadTrainer"]


def __getattr__(name: str):
    if name == "LeadSFTTrainer":  # built on first use: importing leadsel.hf does not need TRL
        from .trainer import make_sft_trainer

        globals()[name] = cls = make_sft_trainer()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
