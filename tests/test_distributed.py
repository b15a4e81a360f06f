"""Two processes compute what one computes: runs launched with ``torchrun`` (gloo on CPU, the tiny
random model, OMP_NUM_THREADS=1, a subprocess timeout) against one process with the same global
batch (1 process x accumulation 2 against 2 processes x 1).

The inputs are uneven on purpose: a pool of 39 samples, loss passes of 13 batches
(``scoring.max_batch_size=3``) and gradient passes of 5 shards (``scoring.checkpoint_every=8``),
so some process gets one batch, shard or sample fewer than the other, and LEAD's rounds have
odd sizes, so some optimizer step has one sample on one process and none on the other.

The adapters are compared bitwise: with two processes DDP sums the two gradients and halves the
sum, which is exact in floating point (a power of two), and each sample's gradient comes from the
same batch-of-one forward as in one process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import rows_of, save_tiny_checkpoint, write_pool

pytestmark = pytest.mark.distributed

TIMINGS = {"seconds", "select_seconds", "checkpoint_seconds"}
TIMEOUT = 420
ENTRY = Path(__file__).with_name("rank_cache_entry.py")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    ckpt = save_tiny_checkpoint(d / "model")
    write_pool(d / "alpha.jsonl", 23, 0)
    write_pool(d / "beta.jsonl", 16, 1)
    write_pool(d / "held.jsonl", 6, 2)
    vals = [write_pool(d / "val_a.jsonl", 3, 11), write_pool(d / "val_b.jsonl", 2, 12)]
    (d / "empty.yaml").write_text("{}\n")
    return d, ckpt, vals


def settings(d, ckpt, vals, run: Path, cache: Path | None, processes: int, **extra) -> list[str]:
    """The run's overrides; the global batch is 2 samples per optimizer step whatever ``processes``."""
    ga = 2 // processes
    base = {"data.paths": f"[{d / 'alpha.jsonl'},{d / 'beta.jsonl'}]", "data.eval_paths": f"[{d / 'held.jsonl'}]",
            "data.val_paths": f"[{vals[0]},{vals[1]}]", "model.name": ckpt, "output_dir": run,
            "encoding.template": "chatml", "model.lora.r": 4, "warmup.lora.r": 4, "warmup.size": 8,
            "train.per_device_batch_size": 1, "train.gradient_accumulation_steps": ga,
            "warmup.train.per_device_batch_size": 1, "warmup.train.gradient_accumulation_steps": ga,
            "progress": "false", "budget": 0.5, "lead.clusters": 3, "lead.rate": 0.3, "model.precision": "fp32",
            "scoring.max_batch_size": 3, "scoring.checkpoint_every": 8, "grads.dim": 64, "ddp_timeout": 120}
    if cache is not None:
        base["cache_dir"] = cache
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LEADSEL_KILL_AT_STEP")}
    e.update({"OMP_NUM_THREADS": "1", "LEADSEL_DEBUG": "1", **extra})
    return e


def leadsel(args: list[str], processes: int, entry: list[str] | None = None, check: bool = True, **extra_env):
    """``leadsel ARGS`` in 1 process, or under ``torchrun --nproc_per_node 2``."""
    prog = entry or ["-m", "leadsel"]
    if processes == 1:
        cmd = [sys.executable, *prog, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               *prog, *args]
    p = subprocess.run(cmd, env=env(**extra_env), capture_output=True, text=True, timeout=TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:8])} ... exited {p.returncode}:\n{p.stderr[-4000:]}")
    return p


def run(inputs, run_dir: Path, processes: int, cache: Path | None = None, **extra) -> Path:
    d, ckpt, vals = inputs
    leadsel(["run", str(d / "empty.yaml"), *settings(d, ckpt, vals, run_dir, cache, processes, **extra)], processes)
    return run_dir


def assert_same_run(a: Path, b: Path, passes: bool = True) -> None:
    """Every artifact of two runs equal, apart from timings."""
    ra, rb = rows_of(a), rows_of(b)
    assert len(ra) == len(rb) and len(ra) > 0
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in TIMINGS} == {k: v for k, v in y.items() if k not in TIMINGS}
    assert pq.read_table(a / "scores.parquet").to_pandas().equals(pq.read_table(b / "scores.parquet").to_pandas())
    assert (a / "selected.jsonl").read_bytes() == (b / "selected.jsonl").read_bytes()
    if (a / "eval.json").is_file():
        assert json.loads((a / "eval.json").read_text()) == json.loads((b / "eval.json").read_text())
    from safetensors.numpy import load_file

    wa, wb = load_file(a / "model" / "adapter_model.safetensors"), load_file(b / "model" / "adapter_model.safetensors")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ma, mb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
    assert ma["status"] == mb["status"] == "complete"
    if passes:
        assert ma["passes"] == mb["passes"]
    assert_nothing_left(b)


def assert_nothing_left(run_dir: Path) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == sorted({"eval.json", "model", "rounds.jsonl", "run.json", "scores.parquet", "selected.jsonl"}
                           & set(names) | {"model", "rounds.jsonl", "run.json", "scores.parquet", "selected.jsonl"})
    assert not list(run_dir.rglob(".*tmp*")) and not list(run_dir.rglob("*.partial"))


def assert_cache_settled(cache: Path) -> None:
    """No pass in progress left in a cache: no partial directory, no temporary file."""
    assert not list(cache.rglob("*.partial")) and not list(cache.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def lead_pair(inputs, tmp_path_factory):
    """LEAD (IDU on, embedding clusters off) in 1 and in 2 processes, each with its own cache."""
    root = tmp_path_factory.mktemp("lead")
    one = run(inputs, root / "one", 1, root / "cache1")
    two = run(inputs, root / "two", 2, root / "cache2")
    return root, one, two


def test_the_inputs_are_uneven(inputs):
    from leadsel.scoring.passes import length_batches

    d, _, _ = inputs
    n = sum(1 for p in ("alpha", "beta") for _ in (d / f"{p}.jsonl").open())
    assert n == 39 and -(-n // 8) == 5  # 39 samples, 5 gradient shards
    assert len(length_batches(np.ones(n, dtype=np.int64), 10 ** 6, 3)) == 13  # 13 loss-pass batches


def test_lead_two_processes_equal_one(lead_pair):
    root, one, two = lead_pair
    assert_same_run(one, two)
    man = json.loads((two / "run.json").read_text())
    assert man["model"]["num_processes"] == 2 and json.loads((one / "run.json").read_text())["model"]["num_processes"] == 1
    # the per-step losses are global: a step of two samples averages both processes' samples
    rows = rows_of(two)
    assert any(r["n_selected"] % 2 for r in rows)  # some step has one sample: one process trains nothing
    assert_cache_settled(root / "cache2")


def test_the_hf_plugin_in_two_processes_trains_what_leadsels_two_process_loop_trains(inputs, lead_pair, tmp_path):
    """LeadTrainer under torchrun (gloo): both ranks plan the same rounds (the plug-in checks it
    each round) and select, round by round, what `leadsel run` selects in two processes, with
    the same steps (some of one sample: one rank trains a filler of weight 0) and allclose losses,
    delta and final weights (the plug-in's loss builds the full logits)."""
    from safetensors.numpy import load_file

    d, ckpt, vals = inputs
    _, _, two = lead_pair
    out = tmp_path / "hf"
    leadsel([ckpt, str(out), *settings(d, ckpt, vals, tmp_path / "unused", tmp_path / "cache", 2)], 2,
            entry=[str(Path(__file__).with_name("hf_entry.py"))])
    ref, got = rows_of(two), rows_of(out / "leadsel")
    assert len(ref) == len(got) > 0
    for key in ("arm", "selected_ids", "n_selected", "n_steps", "unique_used", "lr"):
        assert [r[key] for r in got] == [r[key] for r in ref], key
    np.testing.assert_allclose([r["mean_loss"] for r in got], [r["mean_loss"] for r in ref], rtol=1e-5)
    np.testing.assert_allclose([r["delta"] for r in got], [r["delta"] for r in ref], rtol=1e-4)
    man = json.loads((out / "leadsel" / "run.json").read_text())
    assert man["model"]["num_processes"] == 2 and man["status"] == "complete"
    wa, wb = load_file(two / "model" / "adapter_model.safetensors"), load_file(out / "model" / "adapter_model.safetensors")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("method,extra", [
    ("random", {}),
    ("less", {"budget": 0.25}),
    ("dynamic", {"budget": 0.25, "train__epochs": 2, "targeted__warmup_steps": 2}),
    ("iterit", {"budget": 0.25, "train__epochs": 2}),
])
def test_method_two_processes_equal_one(inputs, tmp_path, method, extra):
    one = run(inputs, tmp_path / "one", 1, tmp_path / "cache1", method=method, **extra)
    two = run(inputs, tmp_path / "two", 2, tmp_path / "cache2", method=method, **extra)
    assert_same_run(one, two)
    assert_cache_settled(tmp_path / "cache2")
    if method == "dynamic":  # the warm-up is counted in global samples: 2 steps x 2 samples
        assert rows_of(two)[0]["phase"] == "warmup" and rows_of(two)[0]["n_selected"] == 4


def test_a_cache_written_by_two_processes_serves_one_and_the_reverse(inputs, lead_pair, tmp_path):
    root, one, two = lead_pair
    from_two = run(inputs, tmp_path / "from_two", 1, root / "cache2")
    from_one = run(inputs, tmp_path / "from_one", 2, root / "cache1")
    for r in (from_two, from_one):
        assert_same_run(one, r, passes=False)
        p = json.loads((r / "run.json").read_text())["passes"]
        assert p["forward"].get("loss", 0) == 0 and p["cached_forward"]["loss"] == 39  # U0 from the cache
        assert p["backward"].get("warmup", 0) == 0 and p["cached_backward"]["warmup"] == 8  # so is the warm-up


def test_a_killed_rank_resumes_to_the_uninterrupted_run(inputs, lead_pair, tmp_path):
    _, one, two = lead_pair
    d, ckpt, vals = inputs
    args = ["run", str(d / "empty.yaml"), *settings(d, ckpt, vals, tmp_path / "run", tmp_path / "cache", 2)]
    killed = leadsel(args, 2, check=False, LEADSEL_KILL_AT_STEP="5", LEADSEL_KILL_RANK="1")
    assert killed.returncode != 0
    man = json.loads((tmp_path / "run" / "run.json").read_text())
    assert man["status"] == "incomplete" and (tmp_path / "run" / "checkpoint" / "latest.json").is_file()
    cut = json.loads((tmp_path / "run" / "checkpoint" / "latest.json").read_text())["round"]
    assert 1 <= cut < len(rows_of(two))  # killed after some round, before the end
    leadsel(args, 2)
    assert_same_run(two, tmp_path / "run", passes=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["rounds"]["resumed_from_round"] == cut


def test_ranks_with_different_caches_do_not_hang(inputs, lead_pair, tmp_path):
    """Node-local caches: rank 0 finds every score in its cache, rank 1 has an empty one. The main
    process decides and tells the other, so both take the cached scores."""
    root, one, _ = lead_pair
    d, ckpt, vals = inputs
    shutil.copytree(root / "cache1", tmp_path / "rank0")
    (tmp_path / "rank1").mkdir()
    args = ["run", str(d / "empty.yaml"), *settings(d, ckpt, vals, tmp_path / "run", None, 2)]
    leadsel(args, 2, entry=[str(ENTRY)], RANK_CACHE_ROOT=str(tmp_path))
    assert_same_run(one, tmp_path / "run", passes=False)
    assert not any((tmp_path / "rank1" / "scores").rglob("*.npz"))  # rank 1 neither read nor wrote a score cache
    assert list((tmp_path / "rank1" / "pools").glob("*/meta.json"))  # but built the token store it trains from


def test_score_and_eval_under_two_processes(inputs, lead_pair, tmp_path):
    _, one, two = lead_pair
    d, ckpt, vals = inputs
    for n in (1, 2):
        args = settings(d, ckpt, vals, tmp_path / f"score{n}", tmp_path / f"cache{n}", n, method="ifd")
        leadsel(["score", str(d / "empty.yaml"), *args], n)
    a, b = (pq.read_table(tmp_path / f"score{n}" / "scores.parquet").to_pandas() for n in (1, 2))
    assert a.equals(b) and a["ifd"].notna().all()
    before = json.loads((two / "eval.json").read_text())
    leadsel(["eval", str(two)], 2)
    assert json.loads((two / "eval.json").read_text()) == before
    p = leadsel(["eval", str(two), "--harness", "arc_easy"], 2, check=False, LEADSEL_DEBUG="")
    assert p.returncode != 0 and "leadsel eval: error: --harness evaluates in one process" in p.stderr


def test_compare_under_two_processes_equals_one(inputs, tmp_path):
    # the methods not covered above (ClusterUCB; an ablation of LEAD), through `leadsel compare`
    import csv

    d, ckpt, vals = inputs
    tables = []
    for n in (1, 2):
        args = settings(d, ckpt, vals, tmp_path / f"cmp{n}", tmp_path / f"cache{n}", n, budget=0.25,
                        train__epochs=2, targeted__warmup_steps=2, targeted__k=3, targeted__draws=0.5,
                        **{"compare.methods": "[clusterucb,lead-no-bandit]",
                                                                       "compare.seeds": "[0]"})
        out = leadsel(["compare", str(d / "empty.yaml"), *args], n)
        assert "comparison.md" in out.stdout
        with open(tmp_path / f"cmp{n}" / "comparison.csv", newline="") as f:
            tables.append([{k: v for k, v in row.items() if "second" not in k} for row in csv.DictReader(f)])
    assert tables[0] == tables[1] and [r["method"] for r in tables[0]] == ["clusterucb", "lead-no-bandit"]
    for one in sorted((tmp_path / "cmp1").iterdir()):
        if one.is_dir():
            assert_same_run(one, tmp_path / "cmp2" / one.name)


def test_sharded_training_is_refused(inputs, tmp_path):
    d, ckpt, vals = inputs
    args = ["run", str(d / "empty.yaml"), *settings(d, ckpt, vals, tmp_path / "run", tmp_path / "cache", 2)]
    p = leadsel(args, 2, check=False, ACCELERATE_USE_FSDP="true", LEADSEL_DEBUG="")
    assert p.returncode != 0 and "FSDP is not supported" in p.stderr and "DDP" in p.stderr


def _helpers_worker(rank: int, port: int, box):
    import torch.distributed as td

    from leadsel import dist

    class State:  # what the helpers read of accelerate's state
        num_processes, process_index, is_main_process = 2, rank, rank == 0

        def wait_for_everyone(self):
            td.barrier()

    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    s, got = State(), {}
    got["on_main"] = dist.on_main(s, lambda: f"decided by {rank}")
    try:
        dist.on_main(s, lambda: (_ for _ in ()).throw(ValueError("bad config on the main process")))
    except ValueError as e:
        got["error"] = str(e)
    got["gather"] = dist.gather(s, rank * 10)
    dist.check_same(s, "same", "round 2")
    try:
        dist.check_same(s, f"plan of rank {rank}", "round 3: the selected samples")
    except RuntimeError as e:
        got["differ"] = str(e)
    td.destroy_process_group()
    box[rank] = got


def test_the_helpers_agree_or_fail_on_every_rank():
    """on_main: the main process's result, and its error, on every rank; check_same: the same error
    on every rank, naming the round, when the values differ."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = mp.Manager().dict()
    mp.spawn(_helpers_worker, args=(port, box), nprocs=2, join=True)
    for rank in (0, 1):
        got = box[rank]
        assert got["on_main"] == "decided by 0" and got["error"] == "bad config on the main process"
        assert got["gather"] == [0, 10]
        assert got["differ"].startswith("round 3: the selected samples: the processes disagree")
        assert "rank 0: plan of rank 0, rank 1: plan of rank 1" in got["differ"]
