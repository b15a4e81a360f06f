"""LEAD inside TRL's SFTTrainer (docs/hf.md). Each epoch is one LEAD round; the selection ends training.

    python examples/trl_sft_lead.py POOL.jsonl MODEL OUT [leadsel key=value ...]
"""
import sys

from accelerate import PartialState
from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from leadsel.hf import LeadSelection, LeadSFTTrainer

pool_path, model_name, out, *overrides = sys.argv[1:]
pool = load_dataset("json", data_files=pool_path, split="train")  # records with id, source, messages
tokenizer = AutoTokenizer.from_pretrained(model_name)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_name),
                       LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
lead = LeadSelection.from_yaml(None, "method=lead", "budget=0.1", "rounds=20", *overrides)
cpu = PartialState().device.type == "cpu"  # bf16 on an accelerator, fp32 on CPU
args = SFTConfig(output_dir=out, per_device_train_batch_size=2, gradient_accumulation_steps=4, learning_rate=2e-4,
                 lr_scheduler_type="constant", save_strategy="epoch", report_to="none", use_cpu=cpu, bf16=not cpu)
trainer = LeadSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=tokenizer, lead=lead)
trainer.train()  # resume a killed run with trainer.train(resume_from_checkpoint=True)
print("selection:", lead.save())  # a leadsel run directory
trainer.save_model(f"{out}/model")
