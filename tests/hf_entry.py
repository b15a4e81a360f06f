"""A LeadTrainer run of lead on the tiny model, for the distributed test (launched under torchrun):

    python tests/hf_entry.py CHECKPOINT OUT key=value ...   (the leadsel config's overrides)
"""
import sys

from helpers import plugin

from leadsel.config import load_config

ckpt, out, *overrides = sys.argv[1:]
trainer, lead = plugin(load_config(None, overrides), ckpt, out, ddp_timeout=120)
trainer.train()
lead.save()
if trainer.accelerator.is_main_process:
    trainer.save_model(f"{out}/model")
