"""report_to: tensorboard logs each step's loss and each round's numbers through accelerate's
trackers; nothing is logged by default."""
import json

import pytest

from helpers import config, rows_of


def scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


def test_tensorboard_gets_steps_rounds_and_eval(setup, tmp_path):
    pytest.importorskip("tensorboard")
    from leadsel.runner import run

    d, ckpt = setup
    run(config(d, ckpt, tmp_path / "tb", report_to="tensorboard"))
    rows = rows_of(tmp_path / "tb")
    got = scalars(tmp_path / "tb" / "logs")
    losses = [x for r in rows for x in r["step_losses"]]
    assert [s for s, _ in got["train/loss"]] == list(range(1, len(losses) + 1))
    assert [v for _, v in got["train/loss"]] == pytest.approx(losses, abs=1e-5)
    ends = [sum(r["n_steps"] for r in rows[:i + 1]) for i in range(len(rows))]
    assert got["round/mean_loss"] == [(e, pytest.approx(r["mean_loss"], rel=1e-6)) for e, r in zip(ends, rows)]
    assert [v for _, v in got["round/arm"]] == [r["arm"] for r in rows]
    ev = json.loads((tmp_path / "tb" / "run.json").read_text())["eval"]
    assert got["eval/held"] == [(ends[-1], pytest.approx(ev["trained"]["held"]["loss_per_sample"], rel=1e-6))]
    assert got["eval_base/held"] == [(0, pytest.approx(ev["base"]["held"]["loss_per_sample"], rel=1e-6))]


def test_nothing_is_logged_by_default(setup, tmp_path):
    from leadsel.runner import run

    d, ckpt = setup
    run(config(d, ckpt, tmp_path / "plain", budget=0.2))
    assert not (tmp_path / "plain" / "logs").exists()
