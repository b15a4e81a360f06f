"""Training throughput of leadsel's own loop, plain TRL SFTTrainer and the plug-in LeadSFTTrainer.

    python benchmarks/trainer_throughput.py [CONFIG] [key=value ...] [--samples N] [--repeat R]
        (default: the demo config -- the bundled SmolLM2-135M with LoRA r 16 -- and 64 samples)

In one process, on the same samples (the first N of the config's pool, leadsel's encoding), the
same model and LoRA settings, the same AdamW and constant learning rate, the same batch,
accumulation and number of optimizer steps, fp32 on CPU (bf16 autocast where the config's
precision resolves to it), gradient checkpointing as the config says:

    leadsel   leadsel's own loop (train/trainer.py)
    trl       plain trl.SFTTrainer on the same token ids and labels (sequential sampling of the
              rows put in that order)
    plugin    LeadSFTTrainer with method `full` (one round of the N samples): the plug-in's
              sampler, collator, loss and callbacks, without LEAD's statistics (their cost is
              benchmarks/online_overhead.py's)

All three train the samples in the same order (the one `full` plans for the seed), so their
micro-batches, and the padding in them, are the same.

Each runs ``--repeat`` times, interleaved in turn (noise on a 2-core machine hits all alike);
the fastest repetition of each is kept. It prints samples/s and tokens/s (all tokens of the
trained rows, prompt included), the plug-in's overhead over plain SFTTrainer (target <= 3%) and
leadsel's loop against TRL (target >= 1.0x). What each computes differently: leadsel's loop and the
plug-in weigh every sample alike (the mean of per-sample means), TRL weighs tokens (the sum
over the step's supervised tokens / their count); leadsel's loop builds logits only at supervised
positions, TRL and the plug-in use TRL's fused LM head (all positions on CPU); TRL computes its
entropy and token-accuracy metrics on the way, the plug-in does not.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import numpy as np
    import torch
    from accelerate.utils import set_seed
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from leadsel.cli import demo_config_path
    from leadsel.config import load_config
    from leadsel.hf import LeadSelection, LeadSFTTrainer
    from leadsel.model.load import load_model
    from leadsel.select import PoolView, build_selector
    from leadsel.session import Session
    from leadsel.train.trainer import Trainer

    hf_logging.set_verbosity_error()
    opts = {"--samples": 64, "--repeat": 2}
    for flag in list(opts):
        if flag in argv:
            i = argv.index(flag)
            opts[flag] = int(argv[i + 1])
            argv = argv[:i] + argv[i + 2:]
    n, repeat = opts["--samples"], opts["--repeat"]
    path = argv[0] if argv and "=" not in argv[0] else demo_config_path()
    tmp = tempfile.mkdtemp(prefix="leadsel-throughput-")
    cfg = load_config(path, [f"output_dir={tmp}/run", "evaluate=false", "method=full", "train.epochs=1",
                             "progress=false", *[a for a in argv if "=" in a]])
    s = Session.open(cfg, method="full")
    pool, tc = s.pool, cfg.train
    n = min(n, len(pool))
    per_step = tc.per_device_batch_size * tc.gradient_accumulation_steps
    n -= n % per_step
    steps = n // per_step
    rows = np.arange(n)
    tokens = int(pool.lengths[rows].sum())
    # the order the plug-in's `full` trains its n-sample pool in: every loop trains it
    view = PoolView([pool.ids[int(i)] for i in rows], [pool.sources[int(i)] for i in rows])
    order = build_selector(cfg, view)[0].plan(1)
    records = [pool.sample(int(i)) for i in order]
    data = Dataset.from_dict({"input_ids": [t.astype(np.int64).tolist() for t, _ in records],
                              "labels": [lab.astype(np.int64).tolist() for _, lab in records]})
    subset = f"{tmp}/subset.jsonl"
    with open(subset, "wb") as f:  # the same n samples as a pool file, for the plug-in
        for rec in s.store.records(rows):
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
    print(f"{n} samples, {tokens} tokens, {steps} optimizer steps of {per_step}; model {cfg.model.name}, "
          f"LoRA r {cfg.model.lora.r}, precision {s.precision}, gradient checkpointing {tc.gradient_checkpointing}",
          file=sys.stderr)

    def fresh():
        set_seed(cfg.seed)
        return load_model(s.model_path, cfg.model.finetuning, cfg.model.lora).to(s.accelerator.device)

    def optimizers(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.learning_rate,
                                betas=(tc.adam_beta1, tc.adam_beta2), eps=tc.adam_epsilon,
                                weight_decay=tc.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)

    cpu = s.accelerator.device.type == "cpu"
    args = dict(per_device_train_batch_size=tc.per_device_batch_size,
                gradient_accumulation_steps=tc.gradient_accumulation_steps, max_grad_norm=tc.max_grad_norm or 0.0,
                lr_scheduler_type="constant", report_to="none", save_strategy="no", disable_tqdm=True,
                logging_steps=10 ** 6, use_cpu=cpu, bf16=s.precision == "bf16", max_length=None,
                gradient_checkpointing=tc.gradient_checkpointing, dataloader_num_workers=0)

    def run_leadsel() -> float:
        t = Trainer(fresh(), pool, tc, s.accelerator, s.pad_id, s.precision, track=False,
                    logit_chunk=cfg.model.logit_chunk)
        t0 = time.perf_counter()
        t.train(order)
        return time.perf_counter() - t0

    def run_trl(k: int) -> float:
        model = fresh()
        t = SFTTrainer(model=model, processing_class=s.tokenizer, train_dataset=data, optimizers=optimizers(model),
                       args=SFTConfig(output_dir=f"{tmp}/trl{k}", max_steps=steps,
                                      train_sampling_strategy="sequential", **args))
        t0 = time.perf_counter()
        t.train()
        assert t.state.global_step == steps
        return time.perf_counter() - t0

    def run_plugin(k: int) -> float:
        model = fresh()
        lead = LeadSelection(cfg)  # method full, one epoch: the n samples of the pool it is given
        t = LeadSFTTrainer(model=model, processing_class=s.tokenizer, lead=lead, optimizers=optimizers(model),
                           train_dataset=Dataset.from_json(subset),
                           args=SFTConfig(output_dir=f"{tmp}/plugin{k}", **args))
        t0 = time.perf_counter()
        t.train()
        assert t.state.global_step == steps, t.state.global_step
        assert lead.rows[0]["selected_ids"] == [view.ids[int(i)] for i in order]
        return time.perf_counter() - t0

    times = {"leadsel": [], "trl": [], "plugin": []}
    for k in range(repeat):
        loops = [("leadsel", run_leadsel), ("trl", lambda: run_trl(k)), ("plugin", lambda: run_plugin(k))]
        for name, fn in (loops if k % 2 == 0 else loops[::-1]):
            times[name].append(fn())
            print(f"  rep {k + 1} {name:8s} {times[name][-1]:.2f}s", file=sys.stderr, flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f"{'loop':10s} {'seconds':>8s} {'samples/s':>10s} {'tokens/s':>10s}   (fastest of {repeat})")
    for name, sec in best.items():
        print(f"{name:10s} {sec:8.2f} {n / sec:10.2f} {tokens / sec:10.1f}")
    print(f"plug-in overhead over plain SFTTrainer: {100 * (best['plugin'] / best['trl'] - 1):+.1f}% (target <= 3%)")
    print(f"leadsel's loop against TRL: {best['trl'] / best['leadsel']:.2f}x TRL's speed (target >= 1.0x)")


if __name__ == "__main__":
    main(sys.argv[1:])
