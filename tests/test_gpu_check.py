"""benchmarks/gpu_check.py's code path, on CPU with tiny shapes (--smoke): the GPU figures need a GPU,
but every step the check takes -- building the models and tokenizer, generating the pool, a LEAD
run through the CLI, the kill and resume, the throughput and per-stage memory readings -- runs here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_step_and_the_resume_matches(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["smoke"] is True and report["environment"]["device"] == "cpu"
    assert report["environment"]["missing"] == []
    assert report["bf16_matmul_tflops"] > 0
    e2e = report["lead_end_to_end"]
    assert e2e["ok"] and e2e["rounds"] >= 2 and e2e["device"] == "cpu"
    assert e2e["killed_returncode"] != 0 and 1 <= e2e["rounds_before_kill"] < e2e["rounds"]
    assert e2e["resume_same_selections"] and e2e["resume_max_mean_loss_diff"] < 1e-5
    assert not e2e["checkpoint_left"]
    for name in ("bundled", "llama-8b"):
        t = report["throughput"][name]
        assert t["scoring_tokens_per_s"] > 0 and t["training_tokens_per_s"] > 0
        assert 0 < t["scoring_mfu"] and 0 < t["training_mfu"]
    mem = report["memory_8b"]
    assert set(mem) == {"scoring", "training", "training_gc", "features", "features_gc", "checkpoint"}
    # in one CPU process the readings are peaks of the resident set: positive, and training holds
    # more than scoring (its activations and AdamW state)
    assert mem["training"]["measured_gb"] > mem["scoring"]["measured_gb"] >= 0
