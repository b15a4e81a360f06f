"""The per-sample loss: batched == one by one; == the HF loss of a single sample."""
import pytest
import torch

from leadsel.model.loss import per_sample_loss
from helpers import make_gpt2, make_llama


def batch_of(lengths, starts, vocab=30, seed=0, pad=1):
    g = torch.Generator().manual_seed(seed)
    n, w = len(lengths), max(lengths)
    ids = torch.full((n, w), pad)
    att = torch.zeros((n, w), dtype=torch.long)
    lab = torch.full((n, w), -100)
    for r, (L, s) in enumerate(zip(lengths, starts)):
        ids[r, :L] = torch.randint(2, vocab, (L,), generator=g)
        att[r, :L] = 1
        lab[r, s:L] = ids[r, s:L]
    return ids, att, lab


@pytest.mark.parametrize("make", [make_llama, make_gpt2])
@pytest.mark.parametrize("exact", [False, True])
def test_batched_equals_one_by_one(make, exact):
    model = make()
    ids, att, lab = batch_of([12, 5, 9, 16], [4, 2, 8, 1])
    with torch.no_grad():
        batched, counts = per_sample_loss(model, ids, att, lab, exact_logits=exact)
        for r in range(4):
            L = int(att[r].sum())
            one, c = per_sample_loss(model, ids[r:r + 1, :L], att[r:r + 1, :L], lab[r:r + 1, :L])
            assert abs(float(one) - float(batched[r])) < 1e-5
            assert int(c) == int(counts[r])
    assert counts.tolist() == [8, 3, 1, 15]  # supervised tokens that have a predecessor
    assert batched.dtype == torch.float32


@pytest.mark.parametrize("make", [make_llama, make_gpt2])
def test_single_sample_equals_hf_loss(make):
    model = make()
    ids, att, lab = batch_of([14], [6], seed=3)
    with torch.no_grad():
        ours, _ = per_sample_loss(model, ids, att, lab)
        hf = model(input_ids=ids, attention_mask=att, labels=lab).loss
    assert abs(float(ours) - float(hf)) < 1e-5


def test_fast_path_equals_full_logits_and_hand_computed_ce():
    model = make_llama()
    ids, att, lab = batch_of([10, 7], [3, 5], seed=5)
    with torch.no_grad():
        fast, _ = per_sample_loss(model, ids, att, lab)
        full, _ = per_sample_loss(model, ids, att, lab, exact_logits=True)
        logits = model(input_ids=ids, attention_mask=att).logits.float()
        # sample 1 by hand: positions 4..5 predict tokens 5..6
        lp = torch.log_softmax(logits[1], -1)
        hand = -(lp[4, ids[1, 5]] + lp[5, ids[1, 6]]) / 2
    assert torch.allclose(fast, full, atol=1e-6)
    assert abs(float(fast[1]) - float(hand)) < 1e-5


def test_gradients_flow_through_the_fast_path():
    model = make_llama()
    ids, att, lab = batch_of([8, 6], [2, 3])
    loss, _ = per_sample_loss(model, ids, att, lab)
    loss.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_a_sample_without_supervised_token_is_an_error():
    model = make_llama()
    ids, att, lab = batch_of([8, 6], [2, 6])  # second: labels only at... none (start == length)
    with pytest.raises(ValueError, match="no supervised token"):
        per_sample_loss(model, ids, att, lab)


@pytest.mark.parametrize("exact", [False, True])
def test_chunked_logits_give_the_same_losses_and_gradients(exact):
    """model.logit_chunk: the logits are built at most `chunk` supervised positions at a time (the
    head sees no larger input), and the losses and every gradient are those of the one-go loss."""
    ids, att, lab = batch_of([12, 5, 9, 16], [4, 2, 8, 1])  # 8 + 3 + 1 + 15 = 27 supervised positions
    results = []
    for chunk in (None, 4):
        model = make_llama().train()
        seen = []
        model.lm_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2] if exact else i[0].shape[0]))
        loss, counts = per_sample_loss(model, ids, att, lab, exact_logits=exact, chunk=chunk)
        (loss * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        if chunk is None or exact:  # the exact path's model builds its own logits, all at once
            assert max(seen) >= 16
        else:
            # 27 positions in chunks of 4: 7 head forwards, then each recomputed once in backward
            # (last chunk first)
            assert seen == [4] * 6 + [3] + [3] + [4] * 6
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, atol=1e-6)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6), n


def test_chunk_larger_than_the_positions_is_the_one_go_loss():
    model = make_llama()
    ids, att, lab = batch_of([10, 7], [3, 5], seed=5)
    with torch.no_grad():
        a, _ = per_sample_loss(model, ids, att, lab)
        b, _ = per_sample_loss(model, ids, att, lab, chunk=1000)
        c, _ = per_sample_loss(model, ids, att, lab, chunk=1)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-6)
