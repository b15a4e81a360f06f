"""A golden trajectory: what ``lead`` and ``random`` do, round by round, on a fixed tiny pool.

The tiny random Llama of ``helpers.save_tiny_checkpoint`` (seed 0), fp32, run seed 0, the
``setup`` fixture's 40-sample pool (alpha 24 + beta 16). Per round the ``selected_ids`` and
``mean_loss`` (and for LEAD the ``arm``, ``reward`` and ``D``) must equal the committed values in
``golden/trajectory.json``. They pin behaviour across refactors: a move that changes which samples
are chosen, in which order, or what the training forwards compute, fails here.

The values were produced by this file run as a script (``python tests/test_golden.py``), which
rewrites the JSON; do that only for a change meant to alter the trajectory, and say so in the
commit.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import config, rows_of

GOLDEN = Path(__file__).parent / "golden" / "trajectory.json"
METHODS = ("lead", "random")
FIELDS = {"lead": ("round", "selected_ids", "mean_loss", "arm", "reward", "D"),
          "random": ("round", "selected_ids", "mean_loss")}
FLOATS = ("mean_loss", "reward", "D")
# rel 1e-5, and abs 1e-6: a reward is a difference of fp32 losses near 3.5, whose spacing there is
# 2.4e-7 -- a machine with other matmul kernels (AVX-512) moves it by one such step
ABS = 1e-6


def trajectory(d, ckpt, run_dir, method: str) -> list[dict]:
    from leadsel.runner import run

    run(config(d, ckpt, run_dir, method=method, seed=0, evaluate="false", train__epochs=2))
    return [{k: r[k] for k in FIELDS[method]} for r in rows_of(run_dir)]


@pytest.mark.parametrize("method", METHODS)
def test_trajectory_matches_the_committed_one(setup, tmp_path, method):
    d, ckpt = setup
    want = json.loads(GOLDEN.read_text())[method]
    got = trajectory(d, ckpt, tmp_path / method, method)
    assert len(got) == len(want), f"{method}: {len(got)} rounds, the golden run had {len(want)}"
    for g, w in zip(got, want):
        for key in FIELDS[method]:
            if key in FLOATS and w[key] is not None:
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=ABS), (method, g["round"], key)
            else:
                assert g[key] == w[key], (method, g["round"], key)


if __name__ == "__main__":  # regenerate golden/trajectory.json (see the module docstring)
    import tempfile

    from helpers import tiny_run_inputs

    with tempfile.TemporaryDirectory() as tmp:
        d, ckpt = tiny_run_inputs(Path(tmp))
        out = {m: trajectory(d, ckpt, d / m, m) for m in METHODS}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{m} {len(v)} rounds" for m, v in out.items()))
