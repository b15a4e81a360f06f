"""Select with leadsel, train with your own stack (docs/hf.md): a leadsel run (a static method such as
ifd, loss or less, or LEAD's finished selection), its selection exported as a datasets directory
(`leadsel export RUN_DIR --to hf DIR`), then plain TRL SFTTrainer on it.

    python examples/select_then_train.py CONFIG OUT [leadsel key=value ...]
"""
import sys

from accelerate import PartialState
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from leadsel.config import load_config
from leadsel.export import export_run
from leadsel.model.load import resolve_model
from leadsel.runner import run

config, out, *overrides = sys.argv[1:]
cfg = load_config(config, [f"output_dir={out}/selection", *overrides])
run(cfg)                                                    # = leadsel run CONFIG ...
export_run(cfg.output_dir, "hf", f"{out}/subset", overwrite=True)
subset = load_from_disk(f"{out}/subset")                    # id, source, messages, times_used, first_round
model_name = resolve_model(cfg.model.name, cfg.model.cache_dir or cfg.cache_dir)
tokenizer = AutoTokenizer.from_pretrained(model_name)
cpu = PartialState().device.type == "cpu"  # bf16 on an accelerator, fp32 on CPU
trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_name), processing_class=tokenizer,
                     train_dataset=subset.select_columns(["messages"]),
                     args=SFTConfig(output_dir=f"{out}/sft", per_device_train_batch_size=2, report_to="none",
                                    num_train_epochs=1, save_strategy="no", use_cpu=cpu, bf16=not cpu))
trainer.train()
print(f"trained on {len(subset)} selected samples -> {out}/sft")
