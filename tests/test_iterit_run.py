"""IterIT end to end on a tiny model: round 1 is the greedy selection over the base-model IFD, each
later round re-scores exactly the top window of the ranking with the current weights (real
forward passes, counted in run.json) and re-selects inside it; ``baseline`` selects once."""
import json

import numpy as np

from helpers import config, rows_of


def pool_responses(d):
    from leadsel.data.load import load_pool

    samples, _ = load_pool([d / "alpha.jsonl", d / "beta.jsonl"])
    return {x.id: x.response for x in samples}


def artifacts(run_dir):
    import pyarrow.parquet as pq

    t = pq.read_table(run_dir / "scores.parquet").to_pydict()
    return t, json.loads((run_dir / "run.json").read_text()), rows_of(run_dir)


def test_iterit_rescores_the_window_with_the_current_weights(setup, tmp_path, monkeypatch):
    from transformers.models.llama import modeling_llama

    from leadsel.runner import run
    from leadsel.select.iterit_core import iterit_select, rerank, window

    d, ckpt = setup
    seen = []
    orig = modeling_llama.LlamaModel.forward

    def forward(self, *a, **k):
        seen.append(int((k.get("input_ids") if k.get("input_ids") is not None else a[0]).shape[0]))
        return orig(self, *a, **k)

    run_dir = tmp_path / "iterit"
    cfg = config(d, ckpt, run_dir, method="iterit", budget=0.25, train__epochs=2, evaluate="false")
    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", forward)
    out = run(cfg)
    t, man, rows = artifacts(run_dir)
    ids = t["id"]
    resp = pool_responses(d)
    responses = [resp[i] for i in ids]
    base = np.asarray(t["ifd_base"], dtype=np.float64)
    # IFD under the base model: the ppl ratio exp(L(y|x) - L(y)) of the cached base losses
    assert np.allclose(base, np.exp(np.asarray(t["u0"], np.float64) - np.asarray(t["u0_alone"], np.float64)),
                       rtol=1e-5)
    picks, info = iterit_select(base, responses, 10, 0.1)
    assert len(rows) == 2 and rows[0]["n_scored"] == 0 and rows[0]["n_selected"] == 10
    assert set(rows[0]["selected_ids"]) == {ids[i] for i in picks}
    # round 2: the window is the top ceil(3 x 10) of round 1's ranking (capped by the candidates),
    # re-scored under the trained weights; the selection is redone inside it
    w = window(info["ranking"], 10, 3.0)
    assert rows[1]["n_scored"] == rows[1]["window"] == len(w)
    cplx = np.asarray(t["complexity"], dtype=np.float64)
    outside = np.setdiff1d(np.arange(len(ids)), w)
    assert np.array_equal(cplx[outside], base[outside].astype(np.float32).astype(np.float64))
    assert not np.allclose(cplx[w], base[w])  # the weights changed, so did the scores
    picks2, _ = rerank(w, cplx[w], responses, 10, 0.1, ranking=info["ranking"])
    assert set(rows[1]["selected_ids"]) == {ids[i] for i in picks2}
    # those scoring passes are real forwards, counted: the decoder saw the trained samples, the
    # window twice (with and without the prompt), and nothing else during the rounds
    fwd = man["passes"]["forward"]
    assert fwd["select-loss"] == fwd["select-loss-alone"] == len(w)
    offline = fwd.get("loss", 0) + fwd.get("loss-alone", 0)  # what the cache did not already hold
    assert sum(seen) == offline + out["samples_trained"] + 2 * len(w)
    assert rows[1]["select_seconds"] > 0


def test_iterit_baseline_selects_once(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "baseline"
    run(config(d, ckpt, run_dir, method="iterit", iterit__strategy="baseline", budget=0.25, train__epochs=2,
               evaluate="false"))
    t, man, rows = artifacts(run_dir)
    assert set(rows[0]["selected_ids"]) == set(rows[1]["selected_ids"]) and rows[1]["n_scored"] == 0
    assert "select-loss" not in man["passes"]["forward"]
    assert np.array_equal(np.asarray(t["complexity"]), np.asarray(t["ifd_base"], dtype=np.float32))


def test_iterit_with_fewer_candidates_than_the_budget_says_so(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "short"
    run(config(d, ckpt, run_dir, method="iterit", budget=0.9, evaluate="false"))
    t, man, rows = artifacts(run_dir)
    cand = int((np.asarray(t["ifd_base"]) < 1).sum())
    assert cand < 36
    assert rows[0]["n_selected"] == cand and rows[0]["shortfall"] == 36 - cand
