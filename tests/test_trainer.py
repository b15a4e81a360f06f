"""The training loop: accumulation invariance, in-loop losses, first-order statistics."""
import numpy as np
import pytest
import torch

from leadsel.config import LoraSettings, TrainConfig
from leadsel.data.encode import encode
from leadsel.data.records import Sample
from leadsel.model.load import add_lora
from leadsel.model.loss import per_sample_loss
from leadsel.train.trainer import Trainer, lr_lambda
from helpers import make_llama, make_tokenizer

TEXTS = [("hi there", "hello"), ("how are you", "fine thanks"), ("what is two plus two", "four"),
         ("a b c", "d e f g"), ("one two", "three four five"), ("hi", "six seven"),
         ("e f", "g h a"), ("hello there", "hi you")]


@pytest.fixture
def pool():
    tok = make_tokenizer()
    samples = [Sample(id=str(i), source="t", messages=[{"role": "user", "content": u},
                                                       {"role": "assistant", "content": a}])
               for i, (u, a) in enumerate(TEXTS)]
    return encode(samples, tok, 64), tok.pad_token_id


def trainer(pool, lora=True, optimizer="adamw", **kw):
    from accelerate import Accelerator

    enc, pad = pool
    model = make_llama(seed=1)
    if lora:
        model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    cfg = TrainConfig(**{"learning_rate": 1e-2, "max_grad_norm": None, **kw})
    return Trainer(model, enc, cfg, Accelerator(cpu=True), pad, "fp32", total_steps=10, optimizer=optimizer)


def weights(t):
    return torch.cat([p.detach().flatten() for p in t.params])


@pytest.mark.parametrize("lora", [True, False])
def test_batch1_accum4_equals_batch4_accum1(pool, lora):
    order = [3, 0, 5, 1, 7, 2, 6, 4]
    # Adam's step lr * m / (sqrt(v) + eps) turns a float-rounding difference d of a gradient that
    # nearly cancels to 0 into a weight difference up to lr * d / eps: with the default eps (1e-8)
    # a few of the 78k full-model weights differed by up to 9e-5 on a machine without AVX-512,
    # from summation order alone. eps 1e-3 bounds that amplification (lr / eps = 10), so what is
    # compared is the accumulation, not how Adam conditions near-zero gradients.
    a = trainer(pool, lora, per_device_batch_size=1, gradient_accumulation_steps=4, adam_epsilon=1e-3)
    b = trainer(pool, lora, per_device_batch_size=4, gradient_accumulation_steps=1, adam_epsilon=1e-3)
    ra, rb = a.train(order), b.train(order)
    assert len(ra.steps) == len(rb.steps) == 2
    np.testing.assert_allclose(ra.losses, rb.losses, atol=1e-5)
    assert torch.allclose(weights(a), weights(b), atol=1e-5)
    np.testing.assert_allclose([s.delta for s in ra.steps], [s.delta for s in rb.steps], rtol=1e-4)
    np.testing.assert_allclose(ra.grad_sum, rb.grad_sum, atol=1e-5)


def test_in_loop_losses_are_the_pre_update_losses(pool):
    t = trainer(pool, per_device_batch_size=4, gradient_accumulation_steps=1)
    enc, pad = pool
    from leadsel.data.encode import collate

    with torch.no_grad():
        b = collate(enc, [2, 5, 1, 0], pad)
        expected, _ = per_sample_loss(t.model, **b)
    r = t.train([2, 5, 1, 0, 3])
    np.testing.assert_allclose(r.losses[:4], expected.numpy(), atol=1e-6)
    assert r.indices.tolist() == [2, 5, 1, 0, 3] and len(r.steps) == 2
    assert r.steps[0].n_samples == 4 and r.steps[1].n_samples == 1
    assert r.steps[0].loss == pytest.approx(float(expected.mean()), abs=1e-6)


def test_sgd_delta_is_squared_gradient_norm_and_grad_sum_is_the_gradient(pool):
    t = trainer(pool, optimizer="sgd", per_device_batch_size=8, gradient_accumulation_steps=1)
    enc, pad = pool
    from leadsel.data.encode import collate

    losses, _ = per_sample_loss(t.model, **collate(enc, list(range(8)), pad))
    grads = torch.autograd.grad(losses.mean(), t.params)
    g = torch.cat([x.flatten() for x in grads])
    r = t.train(list(range(8)))
    assert r.steps[0].delta == pytest.approx(float(g @ g), rel=1e-4)  # -g.u/eta = |g|^2 for SGD
    np.testing.assert_allclose(r.grad_sum, g.numpy(), atol=1e-6)
    assert r.steps[0].grad_norm == pytest.approx(float(g.norm()), rel=1e-5)


def test_adam_first_step_delta_is_l1_norm(pool):
    # first Adam step: u = -eta * g / (|g| + eps) elementwise, so -g.u/eta = sum g^2/(|g|+eps)
    t = trainer(pool, per_device_batch_size=8, gradient_accumulation_steps=1, adam_epsilon=1e-8)
    enc, pad = pool
    from leadsel.data.encode import collate

    losses, _ = per_sample_loss(t.model, **collate(enc, list(range(8)), pad))
    g = torch.cat([x.flatten() for x in torch.autograd.grad(losses.mean(), t.params)]).double()
    r = t.train(list(range(8)))
    assert r.steps[0].delta == pytest.approx(float((g * g / (g.abs() + 1e-8)).sum()), rel=1e-4)


def test_adam_metric_by_hand():
    from leadsel.train.firstorder import FirstOrder, adam_metric

    # one AdamW step (beta2 0.5, eps 0.1) on p with gradient (2, -1, 0): v = 0.5 g^2 = (2, 0.5, 0),
    # v_hat = v / (1 - 0.5) = g^2 -> sqrt(v_hat) + eps = (2.1, 1.1, 0.1) -> weights (2.1, 1.1, 0.1)^(-1/2)
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.5), eps=0.1, weight_decay=0.0)
    fresh = adam_metric(opt, [p])[0]   # not stepped yet: no metric
    assert fresh.tolist() == [1.0, 1.0, 1.0]
    first = FirstOrder([p])
    p.grad = torch.tensor([2.0, -1.0, 0.0])
    first.before_step()
    opt.step()
    want = torch.tensor([2.1, 1.1, 0.1]) ** -0.5
    torch.testing.assert_close(adam_metric(opt, [p])[0], want)
    # the round's sum (2, -1, 0) in that metric: g * w, so that (g w)·(g w) = g' P g = 4/2.1 + 1/1.1
    flat = first.flat(opt)
    np.testing.assert_allclose(flat, (torch.tensor([2.0, -1.0, 0.0]) * want).numpy(), rtol=1e-6)
    assert float(flat @ flat) == pytest.approx(4 / 2.1 + 1 / 1.1, rel=1e-6)
    np.testing.assert_array_equal(first.flat(), [2.0, -1.0, 0.0])   # euclidean: the sum itself
    with pytest.raises(ValueError, match="needs an Adam-family optimizer"):
        adam_metric(torch.optim.SGD([p], lr=0.1), [p])


def test_the_trainer_gives_the_gradient_sum_in_the_metric_asked(pool):
    from leadsel.train.firstorder import adam_metric

    plain = trainer(pool, per_device_batch_size=4, gradient_accumulation_steps=1)
    adam = trainer(pool, per_device_batch_size=4, gradient_accumulation_steps=1)
    adam.gradient_metric = "adam"
    a, b = plain.train(list(range(8))), adam.train(list(range(8)))
    w = torch.cat([x.flatten() for x in adam_metric(adam.optimizer, adam.params)]).numpy()
    np.testing.assert_allclose(b.grad_sum, a.grad_sum * w, rtol=1e-5, atol=1e-9)
    assert not np.allclose(b.grad_sum, a.grad_sum)


def test_clipping_keeps_delta_in_unclipped_gradient_units(pool):
    a = trainer(pool, optimizer="sgd", per_device_batch_size=8, gradient_accumulation_steps=1)
    b = trainer(pool, optimizer="sgd", per_device_batch_size=8, gradient_accumulation_steps=1,
                max_grad_norm=1e-3)
    da, db = a.train(list(range(8))).steps[0], b.train(list(range(8))).steps[0]
    # clipped SGD: u = -eta * c * g, so -g.u/eta = c |g|^2 with c = max_norm / |g|
    assert db.delta == pytest.approx(1e-3 * da.grad_norm, rel=1e-3)


def test_schedules():
    cfg = TrainConfig(lr_scheduler="step", scheduler_gamma=0.5, scheduler_step_size=2, warmup_steps=0)
    f = lr_lambda(cfg, None)
    assert [f(s) for s in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    cfg = TrainConfig(lr_scheduler="linear", warmup_steps=2)
    f = lr_lambda(cfg, 6)
    assert [f(s) for s in range(7)] == [0, 0.5, 1, 0.75, 0.5, 0.25, 0]
    cfg = TrainConfig(lr_scheduler="cosine")
    assert lr_lambda(cfg, 4)(2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="planned optimizer steps"):
        lr_lambda(TrainConfig(lr_scheduler="cosine"), None)


def test_lr_used_is_recorded_and_zero_lr_gives_nan_delta(pool):
    t = trainer(pool, per_device_batch_size=2, gradient_accumulation_steps=1, warmup_steps=2)
    r = t.train(list(range(8)))
    assert r.lrs == pytest.approx([0.0, 5e-3, 1e-2, 1e-2])
    assert np.isnan(r.steps[0].delta) and not np.isnan(r.delta)


def test_repeated_sample_gets_each_of_its_losses(pool):
    t = trainer(pool, per_device_batch_size=1, gradient_accumulation_steps=1)
    r = t.train([0, 0, 0])
    assert r.losses[0] > r.losses[1] > r.losses[2]  # trained on itself in between


def test_gradient_checkpointing_trains_the_same(pool):
    """Recomputing the activations in backward changes the memory, not the losses or the update."""
    order = [3, 0, 5, 1, 7, 2, 6, 4]
    a = trainer(pool, per_device_batch_size=2, gradient_accumulation_steps=2)
    b = trainer(pool, per_device_batch_size=2, gradient_accumulation_steps=2, gradient_checkpointing=True)
    on = [any(getattr(m, "gradient_checkpointing", False) for m in t.model.modules()) for t in (a, b)]
    assert on == [False, True]
    ra, rb = a.train(order), b.train(order)
    np.testing.assert_allclose(ra.losses, rb.losses, atol=1e-6)
    assert torch.allclose(weights(a), weights(b), atol=1e-6)
    np.testing.assert_allclose([s.delta for s in ra.steps], [s.delta for s in rb.steps], rtol=1e-5)
