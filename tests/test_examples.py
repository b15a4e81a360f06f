"""The scripts in examples/ run as a user runs them, on the tiny model (no downloads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import overrides, rows_of

pytest.importorskip("trl")
ROOT = Path(__file__).resolve().parents[1]


def script(name: str, *argv, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, argv)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_trl_sft_lead_trains_a_lead_selection_and_leaves_a_leadsel_run_directory(setup, tmp_path):
    d, ckpt = setup
    out = tmp_path / "out"
    stdout = script("trl_sft_lead.py", d / "alpha.jsonl", ckpt, out, f"cache_dir={d / 'cache'}", "warmup.size=8",
                    "warmup.lora.r=4", "lead.clusters=3", "lead.rate=0.3", "budget=0.5", "progress=false",
                    cwd=tmp_path)
    run = out / "leadsel"
    assert f"selection: {run}" in stdout
    rows = rows_of(run)
    assert rows and rows[-1]["unique_used"] == 12          # budget 0.5 of the 24 samples
    man = json.loads((run / "run.json").read_text())
    assert man["status"] == "complete" and man["method"] == "lead"
    assert man["rounds"]["optimizer_steps"] == sum(r["n_steps"] for r in rows)
    assert len((run / "selected.jsonl").read_text().splitlines()) == 12
    assert sorted(p.name for p in out.glob("checkpoint-*"))     # one per round (save_strategy="epoch")
    assert (out / "model" / "adapter_model.safetensors").is_file()


def test_select_then_train_exports_the_selection_and_trains_plain_sft_on_it(setup, tmp_path):
    d, ckpt = setup
    cfg = tmp_path / "ifd.yaml"
    cfg.write_text(yaml.safe_dump({"method": "ifd"}))
    out = tmp_path / "out"
    stdout = script("select_then_train.py", cfg, out, *overrides(d, ckpt, out / "selection", evaluate="false"),
                    cwd=tmp_path)
    assert "trained on 20 selected samples" in stdout      # budget 0.5 of the 40
    from datasets import load_from_disk

    subset = load_from_disk(str(out / "subset"))
    selected = [json.loads(x)["id"] for x in (out / "selection" / "selected.jsonl").read_text().splitlines()]
    assert subset["id"] == selected
    assert subset[0]["messages"][-1]["role"] == "assistant"
