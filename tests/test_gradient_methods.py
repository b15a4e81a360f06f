"""Dynamic and ClusterUCB end to end on a tiny model: a warm-up round, then per epoch a selection by
LESS gradient scores at the current checkpoint (the whole pool, or bandit draws over gradient
clusters), every scoring pass counted in run.json."""
import json
import math

import numpy as np
import pytest

from test_cli import write_pool
from test_runner import config, rows_of, setup  # noqa: F401  (setup is a fixture)


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
    from leadsel.scoring import grads

    commit, calls = grads.GradientStore.commit_shard, []

    def dying(self, k, rows):
        commit(self, k, rows)
        calls.append(k)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(grads.GradientStore, "commit_shard", dying)
    return lambda: monkeypatch.setattr(grads.GradientStore, "commit_shard", commit)


def test_dynamic_scores_the_whole_pool_every_epoch(setup, tmp_path):  # noqa: F811
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


def test_clusterucb_draws_through_the_bandit(setup, tmp_path):  # noqa: F811
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


def test_clusterucb_settings_are_checked(setup, tmp_path):  # noqa: F811
    d, ckpt = setup
    with pytest.raises(ValueError, match="clusterucb needs targeted.k"):
        run_method(d, ckpt, tmp_path / "nok", "clusterucb", targeted__draws=0.5)
    with pytest.raises(ValueError, match=r"top budget \(10\) of the samples it draws each epoch"):
        run_method(d, ckpt, tmp_path / "few", "clusterucb", targeted__k=3, targeted__draws=0.1)


@pytest.mark.parametrize("method", ["dynamic", "clusterucb"])
def test_pool_pass_killed_midway_resumes_from_its_store(setup, tmp_path, monkeypatch, method):  # noqa: F811
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
