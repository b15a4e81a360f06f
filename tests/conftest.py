"""Shared fixtures: a tiny word-level tokenizer with the ChatML template and tiny random models.

Nothing is downloaded: the tokenizer is built here from a fixed word list; models are
random-initialised 2-layer configs.
"""
from __future__ import annotations

import pytest

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


@pytest.fixture
def tok():
    return make_tokenizer()


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
