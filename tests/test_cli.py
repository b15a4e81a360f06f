"""The CLI end to end on a tiny local checkpoint: a run's artifacts, clean errors, the skip policy."""
import json
import os
import subprocess
import sys

import pytest

from helpers import save_tiny_checkpoint, write_pool

def leadsel(*args, cwd=None, env_cache=None):
    import os

    env = dict(os.environ, LEADSEL_CACHE=str(env_cache) if env_cache else os.environ.get("LEADSEL_CACHE", ""))
    return subprocess.run([sys.executable, "-m", "leadsel", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


def test_help_lists_commands():
    out = leadsel("--help")
    assert out.returncode == 0
    for cmd in ("demo", "run", "compare", "eval", "score", "export", "validate", "build-pool", "config"):
        assert cmd in out.stdout


def test_cli_caps_onednn_kernel_cache_unless_set(monkeypatch):
    # docs/performance.md: capping oneDNN's kernel cache (1,024 by default) lowered the demo's peak memory
    from leadsel.cli import ONEDNN_CACHE, main

    name = ONEDNN_CACHE[0]
    monkeypatch.delenv(name, raising=False)
    assert main([]) == 2  # no command: the help, and the environment already set
    assert os.environ[name] == "64"
    monkeypatch.setenv(name, "512")
    main([])
    assert os.environ[name] == "512"


def test_run_writes_the_artifacts(tmp_path, ckpt):
    pool = write_pool(tmp_path / "pool.jsonl", 30, 0)
    held = write_pool(tmp_path / "held.jsonl", 8, 1)
    run = tmp_path / "run"
    args = [f"data.paths=[{pool}]", f"data.eval_paths=[{held}]", f"model.name={ckpt}", f"output_dir={run}",
            "encoding.template=chatml", "model.lora.r=4", "train.per_device_batch_size=2",
            "train.gradient_accumulation_steps=2", "budget=0.3", "progress=false"]
    out = leadsel("demo", *args, env_cache=tmp_path / "cache")  # the demo's LEAD settings, on this pool
    assert out.returncode == 0, out.stderr
    assert "arms pulled" in out.stdout and "held-out set" in out.stdout
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["method"] == "lead"
    assert set(manifest["stages"]) == {"model", "data", "offline", "eval_before", "train", "eval_after", "save"}
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert manifest["data"]["load"]["formats"] == {str(pool): "alpaca"}
    rows = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    trained = sum(r["n_selected"] for r in rows)
    assert manifest["passes"]["forward"]["loss"] == 30 and manifest["passes"]["backward"]["train"] == trained
    assert manifest["passes"]["backward"]["warmup"] == 3  # warmup.size 0.1 of 30
    assert manifest["config"]["model"]["lora"]["r"] == 4 and "torch" in manifest["versions"]
    assert manifest["model"]["precision"] in ("bf16", "fp32")
    selected = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 9 and set(selected[0]) == {"instruction", "input", "output", "id"}
    ev = json.loads((run / "eval.json").read_text())
    assert set(ev["base"]) == {"held", "mean"} and ev["trained"]["held"]["n"] == 8
    import pyarrow.parquet as pq

    scores = pq.read_table(run / "scores.parquet").to_pydict()
    assert len(scores["id"]) == 30 and sum(scores["times_used"]) == trained
    from peft import AutoPeftModelForCausalLM

    assert AutoPeftModelForCausalLM.from_pretrained(run / "model") is not None
    # a second run reuses the cached offline scores: no forward pass over the pool
    out = leadsel("demo", *args[:-1], f"output_dir={tmp_path / 'run2'}", "progress=false", env_cache=tmp_path / "cache")
    assert out.returncode == 0, out.stderr
    again = json.loads((tmp_path / "run2" / "run.json").read_text())
    assert not set(again["passes"]["forward"]) & {"loss", "warm-loss", "warm-loss-alone"}
    assert "warmup" not in again["passes"]["backward"]


def test_bad_line_is_a_clear_error_or_a_counted_skip(tmp_path, ckpt):
    pool = write_pool(tmp_path / "pool.jsonl", 6, 0, bad_line='{"instruction": "hi", "input": ""}')
    base = [f"data.paths=[{pool}]", f"model.name={ckpt}", "encoding.template=chatml"]
    out = leadsel("validate", *base)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "pool.jsonl:3" in out.stderr and "output" in out.stderr
    out = leadsel("validate", *base, "data.on_error=skip")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["load"]["skipped"] == {"missing_field": 1} and report["load"]["n_loaded"] == 6


def test_config_errors_exit_cleanly(tmp_path):
    out = leadsel("run", tmp_path / "nope.yaml")
    assert out.returncode == 2 and "config file not found" in out.stderr and "Traceback" not in out.stderr
    out = leadsel("demo", "train.lr=1")
    assert out.returncode == 2 and "unknown config key 'train.lr'" in out.stderr
