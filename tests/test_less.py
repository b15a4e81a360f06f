"""The ``less`` baseline: LESS gradient scores under a warm-up adapter, summed over one checkpoint
per warm-up epoch weighted by its learning rate, then the top budget trained once (docs/algorithms.md §3.1)."""

import numpy as np
import pytest

from helpers import die_after_shards, run_and_read, val_paths


def test_checkpoint_sum_by_hand():
    from leadsel.scoring.less import checkpoint_sum

    S1 = np.array([[0.5, 0.3],    # checkpoint 1: sample 0 is closest to task A
                   [0.1, 0.4]])
    S2 = np.array([[0.2, 0.7],    # checkpoint 2: ... and to task B
                   [0.0, 0.1]])
    # sum over checkpoints first, weighted by lr (2e-4, 1e-4), then max over tasks:
    #   sample 0: A 2e-4*0.5 + 1e-4*0.2 = 1.2e-4;  B 2e-4*0.3 + 1e-4*0.7 = 1.3e-4  -> 1.3e-4
    #   sample 1: A 2e-4*0.1 + 1e-4*0.0 = 0.2e-4;  B 2e-4*0.4 + 1e-4*0.1 = 0.9e-4  -> 0.9e-4
    # (max first, then sum, would give 1.7e-4 for sample 0)
    np.testing.assert_allclose(checkpoint_sum([S1, S2], [2e-4, 1e-4]), [1.3e-4, 0.9e-4], rtol=1e-12)
    np.testing.assert_allclose(checkpoint_sum([S1], [1.0]), [0.5, 0.4])
    with pytest.raises(ValueError, match="one learning rate per checkpoint"):
        checkpoint_sum([S1, S2], [1.0])
    with pytest.raises(ValueError, match="at least one checkpoint"):
        checkpoint_sum([], [])


def test_task_similarity_columns_by_hand():
    from leadsel.scoring.features import less_scores, task_similarity

    train = np.array([[1.0, 0, 0], [0, 1.0, 0], [3.0, 4.0, 0], [0, 0, 2.0]])
    val = {"A": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "B": np.array([[0, 0, 1.0], [0.6, 0.8, 0]])}
    # mean cosine per task (test_grads.test_less_scores_hand_made works the same numbers)
    want = [[0.5, 0.3], [0.5, 0.4], [0.7, 0.5], [0.0, 0.5]]
    np.testing.assert_allclose(task_similarity(train, val), want, atol=1e-7)
    np.testing.assert_allclose(less_scores(train, val), np.max(want, axis=1), atol=1e-7)


def run_less(d, ckpt, run_dir, **extra):
    settings = dict(method="less", budget=0.25, warmup__train__epochs=2, grads__dim=64,
                    data__val_paths=val_paths(d), evaluate="false", warmup__train__learning_rate=3e-4,
                    warmup__train__lr_scheduler="linear", warmup__train__per_device_batch_size=2,
                    warmup__train__gradient_accumulation_steps=2)
    return run_and_read(d, ckpt, run_dir, **{**settings, **extra})


def test_less_trains_the_top_budget_by_score_and_caches_it(setup, tmp_path):
    d, ckpt = setup
    cache = tmp_path / "cache"
    rows, man, t = run_less(d, ckpt, tmp_path / "a", cache_dir=cache)
    p = man["passes"]
    # warm-up: 8 samples x 2 epochs; a checkpoint after each: 40 pool and 3 + 2 validation gradients
    assert p["backward"]["warmup"] == 16
    assert p["forward"]["less-grad"] == p["backward"]["less-grad"] == 2 * 40
    assert p["forward"]["less-grad-val"] == p["backward"]["less-grad-val"] == 2 * 5
    info = man["offline"]["less"]
    assert info["checkpoints"] == 2 and info["tasks"] == ["val_a", "val_b"] and not info["cached"]
    # linear decay over the warm-up's 16 / (2 x 2) = 4 steps: lr 3e-4 x (1, 0.75 | 0.5, 0.25), so the
    # checkpoints weigh the mean of each epoch's two steps: 3e-4 x 0.875 and 3e-4 x 0.375
    assert info["lrs"] == [pytest.approx(2.625e-4), pytest.approx(1.125e-4)]
    score = np.asarray(t["less"], dtype=np.float64)
    # a sum over 2 checkpoints of lr x a cosine
    assert np.all(np.isfinite(score)) and np.all(np.abs(score) <= 3.75e-4 + 1e-9) and np.ptp(score) > 0
    rank = {i: k for k, i in enumerate(sorted(t["id"]))}
    top = sorted(range(40), key=lambda i: (-score[i], rank[t["id"][i]]))[:10]
    assert [r["n_selected"] for r in rows] == [10] and set(rows[0]["selected_ids"]) == {t["id"][i] for i in top}
    assert p["backward"]["train"] == 10
    # another seed: the same scores from the cache, no warm-up, no gradient pass
    _, man2, t2 = run_less(d, ckpt, tmp_path / "b", cache_dir=cache, seed=7)
    p2 = man2["passes"]
    assert "warmup" not in p2["backward"] and "less-grad" not in p2["forward"]
    assert p2["cached_backward"]["warmup"] == 16 and p2["cached_forward"]["less-grad"] == 80
    assert man2["offline"]["less"]["cached"] and t2["less"] == t["less"]
    assert not list((cache / "scores").glob("*.partial"))  # the gradient stores are deleted once scored


def test_less_pool_pass_resumes_after_a_kill(setup, tmp_path, monkeypatch):
    d, ckpt = setup
    _, _, ref = run_less(d, ckpt, tmp_path / "ref", cache_dir=tmp_path / "c-ref", scoring__checkpoint_every=8)
    revive = die_after_shards(monkeypatch, 3)  # after the third shard of checkpoint 1: 24 of 40 rows
    cache = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        run_less(d, ckpt, tmp_path / "run", cache_dir=cache, scoring__checkpoint_every=8)
    assert list((cache / "scores").glob("less-*.partial/checkpoint1/features.f16"))
    revive()
    _, man, t = run_less(d, ckpt, tmp_path / "run", cache_dir=cache, scoring__checkpoint_every=8)
    p = man["passes"]
    # checkpoint 1 resumed its 3 finished shards; the warm-up training is re-done
    assert p["cached_forward"]["less-grad"] == 24 and p["forward"]["less-grad"] == 16 + 40
    assert p["backward"]["warmup"] == 16
    assert t["less"] == ref["less"]  # the same scores as the run that was never killed
