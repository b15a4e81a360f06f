"""Scoring passes: length buckets, equality with direct losses, the cache, resume of a killed pass."""
import sys

import numpy as np
import pytest
import torch

from leadsel.config import ScoringConfig
from leadsel.data.encode import collate, encode
from leadsel.data.records import Sample
from leadsel.model.loss import per_sample_loss
from leadsel.scoring.cache import ScoreCache
from leadsel.scoring.counter import PassCounter
from leadsel.scoring.passes import ifd_from_losses, length_batches, loss_pass
from helpers import make_llama, make_tokenizer

WORDS = "a b c d e f g h one two three four five six seven hi hello there".split()


def make_pool(n=23, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        u = " ".join(rng.choice(WORDS, size=rng.integers(1, 12)))
        a = " ".join(rng.choice(WORDS, size=rng.integers(1, 6)))
        samples.append(Sample(id=f"s{i}", source="t", messages=[{"role": "user", "content": u},
                                                                {"role": "assistant", "content": a}]))
    tok = make_tokenizer()
    return encode(samples, tok, 64), tok.pad_token_id


def test_length_batches_pack_by_padded_tokens():
    lengths = np.array([5, 3, 9, 3, 7, 2])
    batches = length_batches(lengths, batch_tokens=12, max_batch_size=3)
    # sorted: 5(2) 1(3) 3(3) 0(5) 4(7) 2(9); 3*3=9<=12, then 5: 4*5>12 & size cap
    assert [b.tolist() for b in batches] == [[5, 1, 3], [0], [4], [2]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert [b.tolist() for b in length_batches(lengths, 100, 2)] == [[5, 1], [3, 0], [4, 2]]


def test_pass_runs_its_batches_longest_first(monkeypatch):
    # the peak comes with the first batch (an out-of-memory error at once, not at the end), and
    # each later batch fits in memory already freed
    import leadsel.scoring.passes as passes
    from leadsel import utils

    pool, pad = make_pool()
    widths, trims, real = [], [], passes.per_sample_loss

    def recording(model, input_ids, attention_mask, labels, **kw):
        widths.append(input_ids.shape[1])
        return real(model, input_ids, attention_mask, labels, **kw)

    monkeypatch.setattr(passes, "per_sample_loss", recording)
    monkeypatch.setattr(passes, "trim_heap", lambda device_type: trims.append(device_type))
    run(make_llama(), pool, pad)
    assert len(widths) > 3 and widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert trims == ["cpu"] * len(widths)  # the freed heap given back after every batch
    utils.trim_heap("cpu")
    if sys.platform.startswith("linux"):
        assert utils._trim  # glibc's malloc_trim was found


class Acc:  # the accelerator surface a pass uses, single process
    device = torch.device("cpu")
    process_index, num_processes, is_main_process, is_local_main_process = 0, 1, True, True


def run(model, pool, pad, **kw):
    scoring = ScoringConfig(batch_tokens=kw.pop("batch_tokens", 64), max_batch_size=4,
                            checkpoint_every=kw.pop("checkpoint_every", 4))
    return loss_pass(model, pool, accelerator=Acc(), pad_id=pad, precision="fp32", scoring=scoring,
                     progress=False, **kw)


def test_pass_equals_direct_one_by_one_losses():
    pool, pad = make_pool()
    model = make_llama()
    losses, tokens = run(model, pool, pad)
    with torch.no_grad():
        for i in [0, 7, 22]:
            one, cnt = per_sample_loss(model, **collate(pool, [i], pad))
            assert abs(float(one) - losses[i]) < 1e-5 and int(cnt) == tokens[i]


def test_cache_hit_skips_forwards(tmp_path):
    pool, pad = make_pool()
    model, cache = make_llama(), ScoreCache(tmp_path)
    c1, c2 = PassCounter(), PassCounter()
    a, _ = run(model, pool, pad, cache=cache, model_fp="m1", counter=c1)
    b, _ = run(model, pool, pad, cache=cache, model_fp="m1", counter=c2)
    assert c1.forward == {"loss": len(pool)} and c2.forward == {}
    np.testing.assert_array_equal(a, b)
    c3 = PassCounter()
    run(model, pool, pad, cache=cache, model_fp="m2", counter=c3)  # other model: recomputed
    assert c3.forward == {"loss": len(pool)}


def test_killed_pass_resumes_from_partial_shards(tmp_path):
    pool, pad = make_pool()
    model, cache = make_llama(), ScoreCache(tmp_path)
    full, _ = run(model, pool, pad)

    class Boom(RuntimeError):
        pass

    calls = {"n": 0}
    decoder = model.get_decoder()
    real_forward = decoder.forward

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise Boom()
        return real_forward(*a, **k)

    decoder.forward = dying  # the process dies in the fifth batch
    with pytest.raises(Boom):
        run(model, pool, pad, cache=cache, model_fp="m", batch_tokens=40)
    decoder.forward = real_forward
    shards = list(cache.partial_dir("loss", _fp(pool)).glob("*.npz"))
    assert shards, "partial results were saved before the kill"
    counter = PassCounter()
    resumed, _ = run(model, pool, pad, cache=cache, model_fp="m", counter=counter, batch_tokens=40)
    assert 0 < counter.forward["loss"] < len(pool)  # only what was not saved was recomputed
    np.testing.assert_allclose(resumed, full, atol=1e-6)
    assert not cache.partial_dir("loss", _fp(pool)).exists()


def _fp(pool):
    from leadsel.scoring.passes import pass_fingerprint

    return pass_fingerprint("m", pool, "loss", "fp32")


def test_ifd_kinds():
    cond, alone = np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0, 3.0])
    np.testing.assert_allclose(ifd_from_losses(cond, alone), [0.5, 2.0, 1.0])
    np.testing.assert_allclose(ifd_from_losses(cond, alone, "ppl_ratio"), np.exp([-1.0, 1.0, 0.0]), rtol=1e-6)
    with pytest.raises(ValueError, match="loss_ratio, ppl_ratio"):
        ifd_from_losses(cond, alone, "x")
