"""Per-sample LoRA gradient features (LESS): exact per-sample gradients, Adam preconditioning,
projection + normalisation, the resumable float16 store, and the LESS score."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from helpers import make_llama, randomise_lora_b

from leadsel.data.encode import EncodedPool, collate
from leadsel.model.load import add_lora
from leadsel.model.loss import per_sample_loss
from leadsel.scoring.counter import PassCounter
from leadsel.scoring.features import gradient_features, less_scores
from leadsel.scoring.grad_store import GradientStore
from leadsel.scoring.grads import AdamState, adam_precondition, per_sample_grads, trainable_parameters

PAD = 1
LENGTHS = [7, 12, 5, 9, 10]


def lora_model(dropout: float = 0.0):
    """Tiny llama + LoRA r=4 on all linear layers, lora_B perturbed so grads w.r.t. lora_A are non-zero."""
    settings = types.SimpleNamespace(r=4, alpha=8, dropout=dropout, target_modules=["all-linear"])
    return randomise_lora_b(add_lora(make_llama(), settings)).eval()


def make_pool(lengths=LENGTHS, seed=0) -> EncodedPool:
    rng = np.random.default_rng(seed)
    toks, sups = [], []
    for L in lengths:
        toks.append(rng.integers(2, 30, L).astype(np.int32))
        sup = np.zeros(L, dtype=bool)
        sup[3:] = True  # 3 prompt tokens, the rest is the response
        sups.append(sup)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = len(lengths)
    return EncodedPool(np.concatenate(toks), np.concatenate(sups), offsets, np.arange(n), [f"s{i}" for i in range(n)],
                       ["src"] * n)


def one_by_one(model, pool, i):
    """Reference: the loss of sample i alone (no padding), .backward(), .grad flattened in order."""
    model.zero_grad(set_to_none=True)
    loss, _ = per_sample_loss(model, **collate(pool, [i], PAD))
    loss.sum().backward()
    g = torch.cat([p.grad.reshape(-1) for _, p in trainable_parameters(model)])
    model.zero_grad(set_to_none=True)
    return g


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


class StandIn:
    """A stand-in projection with the RademacherProjection interface (dense, fine at this size)."""

    def __init__(self, in_dim, out_dim=16, seed=0):
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.S = np.random.default_rng(seed).choice([-1.0, 1.0], size=(in_dim, out_dim)).astype(np.float32)

    def project(self, G):
        return G @ self.S / np.sqrt(self.out_dim)


def projection(P, out_dim=32, seed=0):
    try:
        from leadsel.scoring.projection import RademacherProjection
    except ImportError:  # pragma: no cover - the projection module is written separately
        return StandIn(P, out_dim, seed)
    return RademacherProjection(P, out_dim=out_dim, seed=seed, block=5000)


@pytest.fixture(scope="module")
def model():
    return lora_model()


@pytest.fixture(scope="module")
def pool():
    return make_pool()


def test_per_sample_grads_equal_one_by_one_autograd(pool):
    model = lora_model(dropout=0.3)  # dropout must be off during feature computation
    model.train()
    batch = collate(pool, range(len(pool)), PAD)  # right-padded, lengths 5..12
    assert (batch["attention_mask"] == 0).any()
    G, _loss = per_sample_grads(model, **batch)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    names = [n for n, _ in trainable_parameters(model)]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    P = sum(p.numel() for _, p in trainable_parameters(model))
    assert G.shape == (len(pool), P) and G.dtype == torch.float32
    model.eval()
    for i in range(len(pool)):
        ref = one_by_one(model, pool, i)
        assert rel_err(G[i], ref) < 1e-5, (i, rel_err(G[i], ref))
        # lora_A gradients are non-zero (lora_B was perturbed) and match too
        k = trainable_parameters(model)[0][1].numel()
        assert names[0].endswith("lora_A.default.weight") and G[i, :k].abs().max() > 0
        assert rel_err(G[i, :k], ref[:k]) < 1e-5
    model.train()
    assert torch.equal(per_sample_grads(model, **batch)[0], G)  # deterministic, dropout really off


def adamw_after_two_steps(model, pool, betas=(0.8, 0.95), eps=1e-6):
    params = [p for _, p in trainable_parameters(model)]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=betas, eps=eps, weight_decay=0.1)
    saved = [p.detach().clone() for p in params]
    for step in range(2):
        opt.zero_grad()
        loss, _ = per_sample_loss(model, **collate(pool, [step, step + 2], PAD))
        loss.mean().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return opt, saved


def test_adam_preconditioning_matches_hand_computation(pool):
    model = lora_model()
    opt, saved = adamw_after_two_steps(model, pool)
    params = [p for _, p in trainable_parameters(model)]
    G, _ = per_sample_grads(model, **collate(pool, [0, 1, 4], PAD))
    state = AdamState.from_optimizer(opt, params)
    b1, b2, eps = 0.8, 0.95, 1e-6
    for variant in ("bias_corrected", "released"):
        got = adam_precondition(G.clone(), state, variant)
        start = 0
        for p in params:
            st = opt.state[p]
            assert float(st["step"]) == 2
            m, v = st["exp_avg"].reshape(-1), st["exp_avg_sq"].reshape(-1)
            g = G[:, start:start + p.numel()]
            m1 = b1 * m + (1 - b1) * g
            v1 = b2 * v + (1 - b2) * g ** 2
            if variant == "bias_corrected":  # t = 2 steps taken: correct with t + 1 = 3
                want = (m1 / (1 - b1 ** 3)) / (torch.sqrt(v1 / (1 - b2 ** 3)) + eps)
            else:  # LESS's released code: no bias correction, eps inside the root
                want = m1 / torch.sqrt(v1 + eps)
            torch.testing.assert_close(got[:, start:start + p.numel()], want, rtol=1e-5, atol=1e-6)
            start += p.numel()
        assert start == G.shape[1]
    # no state yet (t = 0, m = v = 0): bias-corrected feature is g / (|g| + eps)
    fresh = torch.optim.AdamW(params, betas=(b1, b2), eps=eps)
    got = adam_precondition(G.clone(), AdamState.from_optimizer(fresh, params))
    torch.testing.assert_close(got, G / (G.abs() + eps), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        adam_precondition(G.clone(), state, "other")
    assert any(not torch.equal(p, s) for p, s in zip(params, saved))  # the optimizer really stepped


def test_features_unit_norm_seeded_and_equal_to_manual(model, pool):
    P = sum(p.numel() for _, p in trainable_parameters(model))
    idx = [4, 0, 2, 3]
    kw = {"pad_id": PAD, "progress": False, "batch_tokens": 64, "max_batch_size": 3}
    counter = PassCounter()
    f1 = gradient_features(model, pool, idx, projection=projection(P, seed=7), counter=counter, **kw)
    assert f1.shape == (4, 32) and f1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f1, axis=1), 1.0, rtol=1e-5)
    assert counter.forward["grad"] == 4 and counter.backward["grad"] == 4
    assert counter.forward_tokens["grad"] == sum(LENGTHS[i] for i in idx)
    f2 = gradient_features(model, pool, idx, projection=projection(P, seed=7), **kw)
    assert np.array_equal(f1, f2)  # same seed, same features
    f3 = gradient_features(model, pool, idx, projection=projection(P, seed=8), **kw)
    assert not np.allclose(f1, f3)
    # equals normalise(project(g)) of the plain per-sample gradients
    G, _ = per_sample_grads(model, **collate(pool, idx, PAD))
    Z = projection(P, seed=7).project(G.numpy())
    np.testing.assert_allclose(f1, Z / np.linalg.norm(Z, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    # with an optimizer: normalise(project(adam(g)))
    m2 = lora_model()
    opt, _ = adamw_after_two_steps(m2, pool)
    fa = gradient_features(m2, pool, idx, projection=projection(P, seed=7), optimizer=opt,
                           adam_variant="released", **kw)
    G2, _ = per_sample_grads(m2, **collate(pool, idx, PAD))
    A = adam_precondition(G2, AdamState.from_optimizer(opt, [p for _, p in trainable_parameters(m2)]), "released")
    Z = projection(P, seed=7).project(A.numpy())
    np.testing.assert_allclose(fa, Z / np.linalg.norm(Z, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="projection takes"):
        gradient_features(model, pool, idx, projection=StandIn(P + 1), **kw)


class Stop(Exception):
    pass


def test_store_resumes_bitwise_and_refuses_mismatch(model, pool, tmp_path):
    P = sum(p.numel() for _, p in trainable_parameters(model))
    idx = [0, 1, 2, 3, 4]
    kw = {"pad_id": PAD, "progress": False, "batch_tokens": 64, "max_batch_size": 2, "shard": 2}
    full = gradient_features(model, pool, idx, projection=projection(P, seed=5),
                             store=GradientStore(tmp_path / "a", "model-fp"), **kw)

    def stop_after_first(k, rows_done):
        if k == 0:
            raise Stop

    with pytest.raises(Stop):
        gradient_features(model, pool, idx, projection=projection(P, seed=5),
                          store=GradientStore(tmp_path / "b", "model-fp"), on_shard=stop_after_first, **kw)
    side = json.loads((tmp_path / "b" / "features.json").read_text())
    assert side["done_shards"] == [0] and side["done"] == 2 and not side["complete"]
    counter = PassCounter()
    resumed = gradient_features(model, pool, idx, projection=projection(P, seed=5),
                                store=GradientStore(tmp_path / "b", "model-fp"), counter=counter, **kw)
    assert counter.forward["grad"] == 3 and counter.cached_forward["grad"] == 2  # shard 0 skipped
    assert counter.backward["grad"] == 3 and counter.cached_backward["grad"] == 2
    assert (tmp_path / "a" / "features.f16").read_bytes() == (tmp_path / "b" / "features.f16").read_bytes()
    assert np.array_equal(full, resumed)
    side = json.loads((tmp_path / "b" / "features.json").read_text())
    assert side["shape"] == [5, 32] and side["dtype"] == "float16" and side["fingerprint"] == "model-fp"
    assert side["projection_seed"] == 5 and side["projection_dim"] == 32 and side["complete"]
    assert side["adam_variant"] is None and side["done_shards"] == [0, 1, 2]
    assert (tmp_path / "b" / "features.f16").stat().st_size == 5 * 32 * 2
    # the stored result is the in-memory one rounded to float16
    plain = gradient_features(model, pool, idx, projection=projection(P, seed=5), **kw)
    assert np.array_equal(full, plain.astype(np.float16).astype(np.float32))
    # a complete store is read back without any computation
    counter = PassCounter()
    again = gradient_features(model, pool, idx, projection=projection(P, seed=5),
                              store=GradientStore(tmp_path / "b", "model-fp"), counter=counter, **kw)
    assert np.array_equal(again, full) and counter.forward == {} and counter.cached_forward["grad"] == 5
    # mismatches are refused
    for store, proj, rows in [(GradientStore(tmp_path / "b", "other-fp"), projection(P, seed=5), idx),
                              (GradientStore(tmp_path / "b", "model-fp"), projection(P, seed=6), idx),
                              (GradientStore(tmp_path / "b", "model-fp"), projection(P, 16, seed=5), idx),
                              (GradientStore(tmp_path / "b", "model-fp"), projection(P, seed=5), idx[:4])]:
        with pytest.raises(ValueError, match="another request"):
            gradient_features(model, pool, rows, projection=proj, store=store, **kw)


def test_less_scores_hand_made():
    train = np.array([[1.0, 0, 0],    # x1
                      [0, 1.0, 0],    # x2
                      [3.0, 4.0, 0],  # x3, normalised to (0.6, 0.8, 0)
                      [0, 0, 2.0]])   # x4, normalised to (0, 0, 1)
    val = {"A": np.array([[1.0, 0, 0], [0, 1.0, 0]]),
           "B": np.array([[0, 0, 1.0], [0.6, 0.8, 0]])}
    # x1: A mean cos (1 + 0)/2 = 0.5;     B (0 + 0.6)/2 = 0.3  -> 0.5
    # x2: A (0 + 1)/2 = 0.5;              B (0 + 0.8)/2 = 0.4  -> 0.5
    # x3: A (0.6 + 0.8)/2 = 0.7;          B (0 + 1)/2  = 0.5  -> 0.7
    # x4: A (0 + 0)/2 = 0;                B (1 + 0)/2  = 0.5  -> 0.5
    np.testing.assert_allclose(less_scores(train, val), [0.5, 0.5, 0.7, 0.5], rtol=1e-6)
    # one subtask only: x4 scores 0
    np.testing.assert_allclose(less_scores(train, {"A": val["A"]}), [0.5, 0.5, 0.7, 0.0], atol=1e-7)
    with pytest.raises(ValueError):
        less_scores(train, {})
    with pytest.raises(ValueError):
        less_scores(train, {"A": np.zeros((0, 3))})


def test_scratch_store_starts_afresh_on_another_request(tmp_path):
    """A scratch store (one pass's resume state) is emptied, not refused, when the request differs."""
    kw = dict(n=5, dim=3, seed=0, adam_variant=None, rows="r")
    store = GradientStore(tmp_path / "s", "weights-1", scratch=True)
    assert store.open(shard=2, **kw) == set()
    store.write(0, np.ones((2, 3)))
    store.commit_shard(0, 2)
    assert GradientStore(tmp_path / "s", "weights-1", scratch=True).open(shard=2, **kw) == {0}  # resumes
    assert GradientStore(tmp_path / "s", "weights-1", scratch=True).open(shard=4, **kw) == set()  # other shards
    again = GradientStore(tmp_path / "s", "weights-1", scratch=True)
    again.open(shard=4, **kw)
    again.write(0, np.ones((4, 3)))
    again.commit_shard(0, 4)
    assert GradientStore(tmp_path / "s", "weights-2", scratch=True).open(shard=4, **kw) == set()  # other weights
    with pytest.raises(ValueError, match="another request"):  # a store that is not scratch refuses
        GradientStore(tmp_path / "s", "weights-3").open(shard=4, **kw)


def test_checkpointed_features_equal_the_plain_ones_and_leave_the_model_as_it_was(pool):
    # activation checkpointing in the feature pass (train.gradient_checkpointing): each decoder
    # layer is recomputed in backward, the hooks tap the first forward only, dropout stays off
    from leadsel.model.load import set_checkpointing
    from leadsel.scoring.grads import GradTaps, checkpointed, eval_mode, tapped_grads

    model = lora_model(dropout=0.3)
    batch = collate(pool, range(len(pool)), PAD)
    taps = GradTaps(model)
    layers = [m for m in model.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    assert len(layers) == 2
    with eval_mode(model):
        plain, _ = tapped_grads(model, taps, batch, "fp32")
        calls = []
        for layer in layers:  # count each layer's MLP forwards: twice each when the layer is recomputed
            layer.mlp.register_forward_pre_hook(lambda m, a: calls.append(1))
        with checkpointed(model, True):
            assert all(m.training for m in layers) and not any(m.training for m in layers[0].self_attn.modules())
            ckpt, _ = tapped_grads(model, taps, batch, "fp32")
        assert len(calls) == 2 * len(layers)
        assert not any(m.training for m in model.modules())  # the flags are back
    assert rel_err(ckpt, plain) < 1e-6 and plain.abs().max() > 0
    assert set_checkpointing(model, False) is False  # checkpointing was off before, and is off again
    # on a model whose trainer had it on, it stays on
    set_checkpointing(model, True)
    with eval_mode(model), checkpointed(model, True):
        again, _ = tapped_grads(model, taps, batch, "fp32")
    assert set_checkpointing(model, True) is True and rel_err(again, plain) < 1e-6
