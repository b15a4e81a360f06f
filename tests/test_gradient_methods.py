"""Dynamic and ClusterUCB end to end on a tiny model: a warm-up round, then per epoch a selection by
LESS gradient scores at the current checkpoint (the whole pool, or bandit draws over gradient
clusters), every scoring pass counted in run.json."""
import math

import numpy as np
import pytest

from helpers import die_after_shards, run_method


def test_dynamic_scores_the_whole_pool_every_epoch(setup, tmp_path):
    d, ckpt = setup
    rows, man, t = run_method(d, ckpt, tmp_path / "dyn", "dynamic")
    # warm-up: 2 steps x batch 2 x accumulation 2 = 8 random samples, then 2 selection epochs of 10
    assert [r["phase"] for r in rows] == ["warmup", "select", "select"]
    assert [r["n_selected"] for r in rows] == [8, 10, 10] and [r["n_scored"] for r in rows] == [0, 40, 40]
    p = man["passes"]
    assert p["forward"]["select-grad"] == p["backward"]["select-grad"] == 2 * 40
    assert p["forward"]["select-grad-val"] == 2 * (3 + 2)  # the validation sets, once per selection
    assert p["backward"]["train"] == 8 + 10 + 10
    score = np.asarray(t["grad_score"], dtype=np.float64)
    assert np.all(np.abs(score) <= 1 + 1e-6)
    rank = {i: k for k, i in enumerate(sorted(t["id"]))}
    top = sorted(range(40), key=lambda i: (-score[i], rank[t["id"][i]]))[:10]
    assert set(rows[-1]["selected_ids"]) == {t["id"][i] for i in top}  # the last epoch: the top 10 by score


def test_clusterucb_draws_through_the_bandit(setup, tmp_path):
    d, ckpt = setup
    rows, man, t = run_method(d, ckpt, tmp_path / "cucb", "clusterucb", targeted__k=3, targeted__draws=0.5)
    labels = np.asarray(t["cluster"])
    sizes = np.bincount(labels)
    assert len(sizes) == 3 and sizes.sum() == 40
    # cold start max(floor(0.05 |c|), 1) per cluster, then floor(40 x (0.5 - 0.05)) = 18 bandit draws
    drawn = sum(max(math.floor(0.05 * c), 1) for c in sizes) + 18
    sel = rows[1:]
    assert [r["n_drawn"] for r in sel] == [drawn, drawn] and [sum(r["draws_per_arm"]) for r in sel] == [drawn, drawn]
    assert [r["n_scored"] for r in sel] == [40 + drawn, drawn]  # the first selection also clusters the pool
    assert man["passes"]["backward"]["select-grad"] == 40 + 2 * drawn
    assert all(r["n_selected"] == 10 for r in sel)
    score = dict(zip(t["id"], t["grad_score"]))
    assert all(np.isfinite(score[i]) for r in sel for i in r["selected_ids"])  # trained only drawn samples


def test_clusterucb_settings_are_checked(setup, tmp_path):
    d, ckpt = setup
    with pytest.raises(ValueError, match="clusterucb needs targeted.k"):
        run_method(d, ckpt, tmp_path / "nok", "clusterucb", targeted__draws=0.5)
    with pytest.raises(ValueError, match=r"top budget \(10\) of the samples it draws each epoch"):
        run_method(d, ckpt, tmp_path / "few", "clusterucb", targeted__k=3, targeted__draws=0.1)


@pytest.mark.parametrize("method", ["dynamic", "clusterucb"])
def test_pool_pass_killed_midway_resumes_from_its_store(setup, tmp_path, monkeypatch, method):
    """Killed during the first selection's pool-wide pass (Dynamic's scoring, ClusterUCB's
    clustering) after 2 of its 5 shards: the resumed run skips them and ends like a run never killed."""
    d, ckpt = setup
    extra = dict(scoring__checkpoint_every=8, **({"targeted__k": 3, "targeted__draws": 0.5} if method == "clusterucb" else {}))
    ref_rows, ref_man, ref = run_method(d, ckpt, tmp_path / "ref", method, **extra)
    revive = die_after_shards(monkeypatch, 2)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_method(d, ckpt, run_dir, method, **extra)
    assert len(list((run_dir / "grad-store").glob("*/features.f16"))) == 1
    revive()
    rows, man, t = run_method(d, ckpt, run_dir, method, **extra)
    p = man["passes"]
    assert p["cached_forward"]["select-grad"] == 16  # 2 shards of 8, from the store
    # the pass is not counted twice: done + resumed = what the uninterrupted run did
    assert p["forward"]["select-grad"] + 16 == ref_man["passes"]["forward"]["select-grad"]
    timing = ("seconds", "checkpoint_seconds", "select_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in ref_rows]
    np.testing.assert_array_equal(t["grad_score"], ref["grad_score"])  # NaN where never drawn
    assert t.get("cluster") == ref.get("cluster")
    assert not (run_dir / "grad-store").exists() or not any((run_dir / "grad-store").iterdir())
