"""Runs end to end on a tiny local model: every method, the artifact contract, the forward count of
the online stage, the shared offline cache, the run-directory policy, and kill-and-resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import config, overrides, rows_of, write_pool

ROW_KEYS = {"round", "arm", "arm_probs", "reward", "reward_norm", "n_selected", "selected_ids", "unique_used",
            "lr", "D", "beta", "cos_phi", "delta", "mean_loss", "seconds"}
TIMING = ("seconds", "checkpoint_seconds", "select_seconds")


def test_lead_run_writes_the_artifact_contract(setup, tmp_path):
    import pyarrow.parquet as pq
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from leadsel.runner import run

    d, ckpt = setup
    out = run(config(d, ckpt, tmp_path / "run"))
    run_dir = tmp_path / "run"
    man = json.loads((run_dir / "run.json").read_text())
    assert man["status"] == "complete" and man["method"] == "lead"
    assert {"model", "data", "offline", "eval_before", "train", "eval_after", "save"} <= set(man["stages"])
    rows = rows_of(run_dir)
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    assert [r["round"] for r in rows] == list(range(1, len(rows) + 1))
    budget = man["selection"]["budget"]
    assert budget == 20  # 0.5 of 40
    used = [r["unique_used"] for r in rows]
    assert used == sorted(used) and used[-1] == budget  # stops exactly at the budget
    assert rows[0]["D"] == 0.0 and rows[0]["rule"] == "round1"
    assert all(abs(sum(r["arm_probs"]) - 1) < 1e-9 for r in rows)
    table = pq.read_table(run_dir / "scores.parquet").to_pydict()
    assert {"id", "source", "cluster", "ifd", "u0", "idu", "times_used", "first_round"} <= set(table)
    assert len(table["id"]) == 40 and set(table["source"]) == {"alpha", "beta"}
    trained = {i for r in rows for i in r["selected_ids"]}
    times = dict(zip(table["id"], table["times_used"]))
    assert {i for i, t in times.items() if t > 0} == trained
    assert sum(times.values()) == sum(r["n_selected"] for r in rows) == out["samples_trained"]
    first = dict(zip(table["id"], table["first_round"]))
    for r in rows:
        for i in r["selected_ids"]:
            assert first[i] <= r["round"]
    assert max(times.values()) <= 4  # max_uses
    selected = [json.loads(x)["id"] for x in (run_dir / "selected.jsonl").read_text().splitlines()]
    assert set(selected) == trained and len(selected) == budget
    assert man["passes"]["backward"]["train"] == out["samples_trained"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpt), run_dir / "model")
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
    assert not (run_dir / "checkpoint").exists()  # removed once the run is complete


def test_lead_reads_cos_phi_in_adams_metric_when_asked(setup, tmp_path, monkeypatch):
    from leadsel.train.firstorder import FirstOrder

    d, ckpt = setup
    seen = []
    flat = FirstOrder.flat
    monkeypatch.setattr(FirstOrder, "flat", lambda self, optimizer=None: seen.append(optimizer is not None) or flat(self, optimizer))
    rows = {}
    for metric in ("euclidean", "adam"):
        from leadsel.runner import run

        seen.clear()
        run(config(d, ckpt, tmp_path / metric, lead__cos_metric=metric, lead__gradient_sketch=0, evaluate="false"))
        rows[metric] = rows_of(tmp_path / metric)
        assert seen and all(s == (metric == "adam") for s in seen)   # the trainer was asked for that metric
    # the same round 1 (nothing read the metric yet), then cosines of other vectors
    assert rows["adam"][0]["selected_ids"] == rows["euclidean"][0]["selected_ids"]
    mixed = [(a["cos_phi"], e["cos_phi"]) for a, e in zip(rows["adam"], rows["euclidean"])
             if a["rule"] == e["rule"] == "mix" and a["arm"] == e["arm"]]
    assert mixed and any(abs(a - e) > 1e-6 for a, e in mixed)


def test_online_stage_runs_no_forward_pass_over_the_pool(setup, tmp_path, monkeypatch):
    """Every forward during the rounds is a training forward: the batch rows the decoder sees in the
    train stage add up to exactly the samples trained."""
    from transformers.models.llama import modeling_llama

    from leadsel import manifest as manifest_mod
    from leadsel.runner import run

    d, ckpt = setup
    phase, calls = ["none"], []
    orig_forward, orig_stage = modeling_llama.LlamaModel.forward, manifest_mod.RunManifest.stage

    def forward(self, *a, **k):
        ids = k.get("input_ids") if k.get("input_ids") is not None else a[0]
        calls.append((phase[0], int(ids.shape[0])))
        return orig_forward(self, *a, **k)

    from contextlib import contextmanager

    @contextmanager
    def stage(self, name):
        phase[0] = name
        with orig_stage(self, name):
            yield
        phase[0] = "none"

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", forward)
    monkeypatch.setattr(manifest_mod.RunManifest, "stage", stage)
    out = run(config(d, ckpt, tmp_path / "run", cache_dir=tmp_path / "cache"))  # a cold cache
    in_rounds = sum(n for p, n in calls if p == "train")
    assert out["samples_trained"] > 0
    assert in_rounds == out["samples_trained"]
    # the counter is not blind: offline, 8 warm-up training rows + 3 scoring passes over 40 samples
    assert sum(n for p, n in calls if p == "offline") == 8 + 3 * 40
    man = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "train" not in man["passes"]["forward"]
    # tokens: every scoring pass over the pool, and every trained sample's full length
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict()
    length = dict(zip(t["id"], t["length"]))
    assert man["passes"]["forward_tokens"]["loss"] == man["passes"]["forward_tokens"]["warm-loss"] == sum(length.values())
    trained = [i for r in rows_of(tmp_path / "run") for i in r["selected_ids"]]
    assert man["passes"]["backward_tokens"]["train"] == sum(length[i] for i in trained)
    assert not man["passes"]["cached_forward"] and not man["passes"]["cached_backward"]  # a cold cache


@pytest.mark.parametrize("method", ["random", "full", "ifd", "loss", "lead-no-idu", "lead-no-bandit", "lead-no-task"])
def test_every_method_runs_on_the_same_machinery(setup, tmp_path, method):
    import pyarrow.parquet as pq

    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / method
    run(config(d, ckpt, run_dir, method=method, evaluate="false", train__epochs=2))
    rows = rows_of(run_dir)
    t = pq.read_table(run_dir / "scores.parquet").to_pydict()
    ids, times = t["id"], np.asarray(t["times_used"])
    used = {i for i, x in zip(ids, times) if x > 0}
    if method in ("random", "full", "ifd", "loss"):
        n = 40 if method == "full" else 20
        assert len(rows) == 2 and all(r["n_selected"] == n for r in rows)  # train.epochs passes
        assert set(rows[0]["selected_ids"]) == set(rows[1]["selected_ids"]) == used and len(used) == n
        assert rows[0]["selected_ids"] != rows[1]["selected_ids"]  # each epoch in its own order
        rank = {i: k for k, i in enumerate(sorted(ids))}
        if method == "loss":
            u0 = np.asarray(t["u0"])
            top = sorted(range(40), key=lambda i: (-u0[i], rank[ids[i]]))[:20]
            assert used == {ids[i] for i in top}
        if method == "ifd":
            ifd = np.asarray(t["ifd"], dtype=np.float64)
            ok = [i for i in range(40) if np.isfinite(ifd[i]) and ifd[i] <= 1]
            flagged = [i for i in range(40) if i not in ok]
            top = sorted(ok, key=lambda i: (-ifd[i], rank[ids[i]]))[:20]
            fill = sorted(flagged, key=lambda i: (ifd[i] if np.isfinite(ifd[i]) else np.inf, rank[ids[i]]))
            top += fill[:20 - len(top)]  # Cherry-LLM's IFD <= 1 first; the closest flagged ones fill the rest
            assert used == {ids[i] for i in top}
            man = json.loads((run_dir / "run.json").read_text())
            assert man["selection"]["filled_from_flagged"] == max(0, 20 - len(ok))
    else:
        assert len(used) == 20
        if method == "lead-no-idu":
            assert all(r["D"] == 0.0 and r["rule"] == "off" and r["cos_phi"] is None for r in rows)
        if method == "lead-no-bandit":
            for r in rows:
                probs = np.asarray(r["arm_probs"])
                live = probs[probs > 0]
                assert np.allclose(live, 1 / len(live))
        if method == "lead-no-task":
            assert all(set(r["tasks"]) == {"all"} for r in rows)


def test_a_second_seed_reuses_every_offline_score(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    run(config(d, ckpt, tmp_path / "s1", seed=1, evaluate="false"))
    run(config(d, ckpt, tmp_path / "s2", seed=2, evaluate="false", method="ifd"))
    first = json.loads((tmp_path / "s1" / "run.json").read_text())
    second = json.loads((tmp_path / "s2" / "run.json").read_text())
    # the first run of this cache dir may or may not have scored (another test may have): the
    # second, with another seed and method, never does
    assert second["offline"]["warmup"]["cached"] is True
    assert "warmup" not in second["passes"].get("backward", {})
    assert not set(second["passes"]["forward"]) & {"loss", "warm-loss", "warm-loss-alone"}
    assert first["offline"]["warmup"]["fingerprint"] == second["offline"]["warmup"]["fingerprint"]
    # what the method needs is recorded all the same, as work the cache spared
    p1, p2 = first["passes"], second["passes"]
    assert p2["cached_backward"]["warmup"] == 8 and p2["cached_forward"]["warm-loss-alone"] == 40
    for kind in ("warm-loss", "warm-loss-alone"):
        need1 = p1["forward_tokens"].get(kind, 0) + p1["cached_forward_tokens"].get(kind, 0)
        assert need1 == p2["cached_forward_tokens"][kind] > 0


def test_run_directory_policy(setup, tmp_path):
    from leadsel.rundir import RunDirError
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "run"
    run(config(d, ckpt, run_dir, evaluate="false", method="random"))
    before = (run_dir / "rounds.jsonl").read_bytes()
    with pytest.raises(RunDirError, match=r"different config \(train.learning_rate: 0.0002 -> 0.001"):
        run(config(d, ckpt, run_dir, evaluate="false", method="random", train__learning_rate=1e-3))
    assert (run_dir / "rounds.jsonl").read_bytes() == before  # never overwritten
    again = run(config(d, ckpt, run_dir, evaluate="false", method="random", progress="true"))
    assert again["already_complete"] is True
    with pytest.raises(RunDirError, match="holds no run to resume"):
        run(config(d, ckpt, tmp_path / "empty"), resume=True)


def test_lead_refuses_a_schedule_that_needs_a_known_length(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    with pytest.raises(ValueError, match="LEAD's rounds decide"):
        run(config(d, ckpt, tmp_path / "run", train__lr_scheduler="cosine"))


def _cli(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "leadsel", "run", *args], capture_output=True, text=True,
                          env=env, timeout=600)


KILL_SETTINGS = {"lead": dict(budget=0.6, lead__rate=0.25, lead__smoothing=0.1),
                 "iterit": dict(budget=0.25, train__epochs=4),  # re-scores a window before rounds 2-4
                 "dynamic": dict(budget=0.25, train__epochs=3, targeted__warmup_steps=2, grads__dim=64),
                 "clusterucb": dict(budget=0.25, train__epochs=3, targeted__warmup_steps=2, grads__dim=64,
                                    targeted__k=3, targeted__draws=0.5)}


@pytest.mark.parametrize("method", ["lead", "iterit", "dynamic", "clusterucb"])
def test_killed_run_resumes_to_the_same_result(setup, tmp_path, method):
    """A real SIGKILL in the middle of a round, then a restart into the same directory: the same
    round log and bitwise the same final weights as a run that was never interrupted."""
    from safetensors.torch import load_file

    d, ckpt = setup
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"method: {method}\n")
    extra = dict(**KILL_SETTINGS[method], model__lora__dropout=0.1, evaluate="false")
    if method in ("dynamic", "clusterucb"):
        from helpers import val_paths

        extra["data__val_paths"] = val_paths(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    out = _cli([cfg_file, *overrides(d, ckpt, straight, **extra)])
    assert out.returncode == 0, out.stderr
    ref = rows_of(straight)
    steps = np.cumsum([r["n_steps"] for r in ref])
    assert len(ref) >= 4
    # kill one step into round 3 (steps[1] steps end round 2)
    kill_at = int(steps[1]) + 1
    assert kill_at < steps[2]
    out = _cli([cfg_file, *overrides(d, ckpt, killed, **extra)], {"LEADSEL_KILL_AT_STEP": str(kill_at)})
    assert out.returncode == -9, (out.returncode, out.stderr[-2000:])
    man = json.loads((killed / "run.json").read_text())
    assert man["status"] == "incomplete"
    assert len(rows_of(killed)) == 2  # rounds 1 and 2 were complete; round 3 was cut
    assert json.loads((killed / "checkpoint" / "latest.json").read_text())["round"] == 2
    out = _cli([cfg_file, *overrides(d, ckpt, killed, **extra)])
    assert out.returncode == 0, out.stderr
    got = rows_of(killed)
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in ref]
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in got] == strip
    a, b = load_file(straight / "model" / "adapter_model.safetensors"), load_file(killed / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    man = json.loads((killed / "run.json").read_text())
    assert man["status"] == "complete" and man["rounds"]["resumed_from_round"] == 2 and len(man["resumed"]) == 1
    # the passes the method needed (done or from the cache) are those of the run never killed: the
    # resumed attempt's offline stage and its re-done round are not counted twice
    assert needed(man["passes"]) == needed(json.loads((straight / "run.json").read_text())["passes"])


def needed(passes):
    """{(forward|backward, stage): sample-passes done or taken from the cache}."""
    out = {}
    for kind in ("forward", "backward"):
        for prefix in ("", "cached_"):
            for stage, n in passes.get(prefix + kind, {}).items():
                out[kind, stage] = out.get((kind, stage), 0) + n
    return out


def test_eval_command_reproduces_the_runs_own_evaluation(setup, tmp_path):
    """`leadsel eval RUN_DIR` rebuilds the run's model from its artifacts and gets the numbers the
    run computed at its end; an extra held-out set is added, one overlapping the pool refused."""
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "run"
    run(config(d, ckpt, run_dir, method="random"))
    first = json.loads((run_dir / "eval.json").read_text())
    extra = write_pool(tmp_path / "extra.jsonl", 5, 7)
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "leadsel", "eval", str(run_dir), "--extra", str(extra)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    again = json.loads((run_dir / "eval.json").read_text())
    for when in ("base", "trained"):
        for k, v in first[when]["held"].items():
            assert again[when]["held"][k] == pytest.approx(v, abs=1e-6)
        assert again[when]["extra"]["n"] == 5
    assert again["trained"]["held"]["loss_per_sample"] != again["base"]["held"]["loss_per_sample"]
    assert again["trained_fingerprint"] == first["trained_fingerprint"] != again["model_fingerprint"]
    assert json.loads((run_dir / "run.json").read_text())["eval"]["trained"]["extra"]["n"] == 5
    out = subprocess.run([sys.executable, "-m", "leadsel", "eval", str(run_dir), "--extra", str(d / "alpha.jsonl")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2 and "must not overlap" in out.stderr and "Traceback" not in out.stderr


def test_eval_of_a_fully_fine_tuned_run(setup, tmp_path):
    from leadsel.eval.heldout import evaluate_run
    from leadsel.runner import run

    d, ckpt = setup
    run_dir = tmp_path / "run"
    run(config(d, ckpt, run_dir, method="random", model__finetuning="full"))
    first = json.loads((run_dir / "eval.json").read_text())
    again = evaluate_run(run_dir)
    for when in ("base", "trained"):
        assert again[when]["held"]["loss_per_sample"] == pytest.approx(first[when]["held"]["loss_per_sample"], abs=1e-6)
    assert again["trained"]["held"]["loss_per_sample"] != again["base"]["held"]["loss_per_sample"]
    assert again["trained_fingerprint"] == first["trained_fingerprint"] != again["model_fingerprint"]


def test_compare_runs_methods_by_seeds_and_tabulates_them(setup, tmp_path):
    import csv

    from leadsel.compare import run_comparison
    from leadsel.config import load_config

    d, ckpt = setup
    out = tmp_path / "cmp"
    args = overrides(d, ckpt, out) + ["compare.methods=[lead,random]", "compare.seeds=[3,4]", "budget=0.25"]
    res = run_comparison(load_config(None, args))
    runs = {(m, s): json.loads((out / f"{m}-seed{s}" / "run.json").read_text())
            for m in ("lead", "random") for s in (3, 4)}
    assert all(r["status"] == "complete" and r["method"] == m and r["seed"] == s for (m, s), r in runs.items())
    rows = {r["method"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    for m in ("lead", "random"):
        vals = [runs[(m, s)]["eval"]["trained"]["mean"]["loss_per_sample"] for s in (3, 4)]
        assert float(rows[m]["loss_mean"]) == pytest.approx(np.mean(vals), abs=1e-9)
        assert float(rows[m]["loss_mean_std"]) == pytest.approx(np.std(vals, ddof=1), abs=1e-9)
        assert float(rows[m]["distinct_trained"]) == 10
    # cost: LEAD needs the warm-up and three scoring passes; random needs none of them
    assert float(rows["lead"]["forward_passes"]) == 3 * 40 and float(rows["random"]["forward_passes"]) == 0
    def flops(run):  # 2 N per scoring token, 6 N per trained token, cached work included
        p, n = run["passes"], run["model"]["total_parameters"]

        def tok(key, stage):
            return p[key].get(stage, 0) + p["cached_" + key].get(stage, 0)

        fwd = sum(tok("forward_tokens", k) for k in ("loss", "warm-loss", "warm-loss-alone"))
        return 2 * n * fwd + 6 * n * (tok("backward_tokens", "warmup") + tok("backward_tokens", "train"))

    want = np.mean([flops(runs[("lead", 3)]), flops(runs[("lead", 4)])])
    assert float(rows["lead"]["flops"]) == pytest.approx(want, rel=1e-12) and want > 0
    md = (out / "comparison.md").read_text()
    assert "| lead | 2 |" in md and "| random | 2 |" in md and "| base |" in md
    # a second call runs nothing again: every run is complete
    stamp = {k: (out / f"{m}-seed{s}" / "run.json").stat().st_mtime_ns for k, (m, s) in enumerate(runs)}
    again = run_comparison(load_config(None, args))
    assert {k: (out / f"{m}-seed{s}" / "run.json").stat().st_mtime_ns for k, (m, s) in enumerate(runs)} == stamp
    assert again["table"] == res["table"]


def test_compare_variants_validation_and_the_share_of_full_datas_gain(setup, tmp_path):
    from helpers import val_paths

    from leadsel.compare import run_comparison
    from leadsel.config import load_config

    d, ckpt = setup
    out = tmp_path / "cmp"
    args = overrides(d, ckpt, out) + [
        "compare.methods=[random, random@50%, full]", "compare.seeds=[0]", "budget=0.25", "evaluate_val=true",
        f"data.val_paths={val_paths(d)}", "compare.variants={random@50%: [method=random, budget=0.5]}",
        "compare.reference=full", "compare.curve=random"]
    res = run_comparison(load_config(None, args))
    runs = {m: json.loads((out / f"{m}-seed0" / "run.json").read_text()) for m in ("random", "random@50%", "full")}
    assert [runs[m]["selection"]["budget"] for m in runs] == [10, 20, 40] and runs["random@50%"]["method"] == "random"
    for r in runs.values():   # the validation sets, base and trained, beside the eval set
        assert set(r["eval"]) == {"base", "trained", "val_base", "val_trained"}
        assert set(r["eval"]["val_trained"]) == {"val_a", "val_b", "mean"}
        assert "eval-val-val_a" in r["passes"]["forward"] or "eval-val-val_a" in r["passes"]["cached_forward"]
    table = {t["method"]: t for t in res["table"]}

    def share(m, kind=""):  # by hand from run.json: per set (base - m) / (base - full), averaged
        ev, full = runs[m]["eval"], runs["full"]["eval"]
        sets = [k for k in ev[kind + "trained"] if k != "mean"]
        gains = [(ev[kind + "base"][k]["loss_per_sample"] - ev[kind + "trained"][k]["loss_per_sample"])
                 / (ev[kind + "base"][k]["loss_per_sample"] - full[kind + "trained"][k]["loss_per_sample"]) for k in sets]
        return float(np.mean(gains))

    for m in runs:
        assert table[m]["gain_share"] == pytest.approx(share(m), abs=1e-12)
        assert table[m]["val_gain_share"] == pytest.approx(share(m, "val_"), abs=1e-12)
    assert table["full"]["gain_share"] == pytest.approx(1.0) and table["random@50%"]["budget_share"] == 0.5
    md = (out / "comparison.md").read_text()
    assert "| method | seeds | distinct trained | sample-passes | share of gain | vs random | worth random at | ratio |" in md
    assert f"| random@50% | 1 | 20 | 20 | {share('random@50%'):.1%} |" in md
    assert "Validation loss per sample" in md and "| val_a | val_b |" in md
    from leadsel.report import write_report

    page = write_report(out).read_text()   # a variant is its own row, not its method's
    assert "methods random, random@50%, full" in page and "<h2>comparison</h2>" in page


def test_the_adapter_starts_alike_whether_the_model_was_converted_or_cached(setup, tmp_path, monkeypatch):
    # converting the bundled model builds a model from its config, which draws from torch's
    # generator; the LoRA adapter created after it must not see those draws (a cold cache and a
    # warm one trained differently from round 1 on the demo before the seed was set at the load)
    import torch

    from leadsel import session
    from leadsel.session import Session

    d, ckpt = setup

    def adapter(run_dir):
        s = Session.open(config(d, ckpt, run_dir, method="lead"), method="lead")
        return {n: p.detach().clone() for n, p in s.model.named_parameters() if "lora_A" in n}

    cached = adapter(tmp_path / "cached")
    real = session.resolve_model

    def converting(*args, **kwargs):
        torch.rand(1000)  # what a conversion's random initialisation does to the generator
        return real(*args, **kwargs)

    monkeypatch.setattr(session, "resolve_model", converting)
    converted = adapter(tmp_path / "converted")
    assert cached.keys() == converted.keys() and len(cached) > 0
    for n in cached:
        assert torch.equal(cached[n], converted[n]), n
