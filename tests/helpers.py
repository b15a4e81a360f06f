"""Helpers the tests share: a tiny word-level tokenizer with the ChatML template, tiny random
models, tiny instruction pools, and the config of a tiny run.

Nothing is downloaded: the tokenizer is built here from a fixed word list; models are
random-initialised 2-layer configs.
"""
from __future__ import annotations

import json

WORDS = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", "system", "user", "assistant",
         "hi", "hello", "there", "how", "are", "you", "fine", "thanks", "what", "is", "two", "plus",
         "four", "a", "b", "c", "d", "e", "f", "g", "h", "one", "three", "five", "six", "seven"]


def make_tokenizer(template: str = "chatml"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from leadsel.model.load import FALLBACK_TEMPLATES

    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = FALLBACK_TEMPLATES[template]
    return tok


def make_llama(vocab_size: int = len(WORDS), seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=1, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def make_gpt2(vocab_size: int = len(WORDS), seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def save_tiny_checkpoint(path, seed: int = 0):
    """A tiny Llama + tokenizer saved as a local checkpoint directory (loadable by name)."""
    make_llama(seed=seed).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def randomise_lora_b(model, name: str = "lora_B", seed: int = 3, scale: float = 0.5):
    """Give every ``lora_B`` weight (matching ``name``) random values, so that the adapter changes
    the model's function and gradients w.r.t. ``lora_A`` are not zero."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if name in n:
                p.copy_(torch.randn_like(p) * scale)
    return model


POOL_WORDS = "a b c d e f g h one two three four five six seven hi hello there".split()


def write_pool(path, n, seed, bad_line: str | None = None):
    import random

    r = random.Random(seed)
    lines = []
    for i in range(n):
        u = " ".join(r.choice(POOL_WORDS) for _ in range(r.randint(1, 8)))
        a = " ".join(r.choice(POOL_WORDS) for _ in range(r.randint(1, 5)))
        lines.append(json.dumps({"instruction": u, "input": "", "output": a, "id": f"{path.stem}-{i}"}))
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_run_inputs(d):
    """In directory ``d``: a tiny random Llama checkpoint, two pool files (alpha: 24 samples, beta:
    16) and a held-out file (6); returns (d, checkpoint path)."""
    ckpt = save_tiny_checkpoint(d / "model")
    write_pool(d / "alpha.jsonl", 24, 0)
    write_pool(d / "beta.jsonl", 16, 1)
    write_pool(d / "held.jsonl", 6, 2)
    return d, ckpt


def overrides(d, ckpt, run, **extra):
    base = {"data.paths": f"[{d / 'alpha.jsonl'},{d / 'beta.jsonl'}]", "data.eval_paths": f"[{d / 'held.jsonl'}]",
            "model.name": ckpt, "output_dir": str(run), "cache_dir": str(d / "cache"), "encoding.template": "chatml",
            "model.lora.r": 4, "warmup.lora.r": 4, "warmup.size": 8, "train.per_device_batch_size": 2,
            "train.gradient_accumulation_steps": 2, "progress": "false", "budget": 0.5, "lead.clusters": 3,
            "lead.rate": 0.3, "model.precision": "fp32"}
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def config(d, ckpt, run, **extra):
    from leadsel.config import load_config

    return load_config(None, overrides(d, ckpt, run, **extra))


def rows_of(run):
    return [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]


def val_paths(d):
    a, b = write_pool(d / "val_a.jsonl", 3, 11), write_pool(d / "val_b.jsonl", 2, 12)
    return f"[{a},{b}]"


def run_and_read(d, ckpt, run_dir, **settings):
    """Run with these settings; (rounds.jsonl rows, run.json, scores.parquet as a dict)."""
    import pyarrow.parquet as pq

    from leadsel.runner import run

    run(config(d, ckpt, run_dir, **settings))
    return (rows_of(run_dir), json.loads((run_dir / "run.json").read_text()),
            pq.read_table(run_dir / "scores.parquet").to_pydict())


def run_method(d, ckpt, run_dir, method, **extra):
    settings = dict(method=method, budget=0.25, train__epochs=2, targeted__warmup_steps=2, grads__dim=64,
                    data__val_paths=val_paths(d), evaluate="false")
    return run_and_read(d, ckpt, run_dir, **{**settings, **extra})


def die_after_shards(monkeypatch, n):
    """Make the process 'die' (KeyboardInterrupt) right after the n-th gradient-store shard is
    committed; returns the function that undoes it."""
    from leadsel.scoring.grad_store import GradientStore

    commit, calls = GradientStore.commit_shard, []

    def dying(self, k, rows):
        commit(self, k, rows)
        calls.append(k)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(GradientStore, "commit_shard", dying)
    return lambda: monkeypatch.setattr(GradientStore, "commit_shard", commit)


def plugin(cfg, ckpt, out, kind="hf", dataset=None, eval_dataset=None, **args):
    """(trainer, selection) of the plug-in on the tiny model, starting from the weights `leadsel
    run` starts from, with its optimizer, schedule, batch and accumulation (``cfg.train``)."""
    import torch
    from accelerate.utils import set_seed

    from leadsel.hf import LeadSelection, LeadSFTTrainer, LeadTrainer
    from leadsel.model.load import load_model, load_tokenizer
    from leadsel.train.trainer import lr_lambda

    lead = LeadSelection(cfg)
    set_seed(cfg.seed)
    model = load_model(ckpt, "lora", cfg.model.lora, "fp32")
    tok = load_tokenizer(ckpt, "chatml")
    tc = cfg.train
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.learning_rate,
                            betas=(tc.adam_beta1, tc.adam_beta2), eps=tc.adam_epsilon, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc, None))
    common = dict(output_dir=str(out), per_device_train_batch_size=tc.per_device_batch_size,
                  gradient_accumulation_steps=tc.gradient_accumulation_steps, max_grad_norm=tc.max_grad_norm, use_cpu=True, report_to="none", save_strategy="no",
                  lr_scheduler_type="constant", disable_tqdm=True, logging_steps=1000)
    common.update(args)
    if kind == "sft":
        from trl import SFTConfig

        a = SFTConfig(max_length=cfg.encoding.max_length, bf16=False, gradient_checkpointing=False, **common)
        cls = LeadSFTTrainer
    else:
        from transformers import TrainingArguments

        a, cls = TrainingArguments(**common), LeadTrainer
    return cls(model=model, args=a, processing_class=tok, lead=lead, optimizers=(opt, sched),
               train_dataset=dataset, eval_dataset=eval_dataset), lead
