"""The comparison table's arithmetic on hand-made rows (the end-to-end comparison is in test_runner)."""
import math

import pytest

from leadsel.report.tables import markdown, summarise, versus


ROWS = [  # two seeds of lead, three of random, one of full
    {"method": "lead", "seed": 0, "loss_mean": 2.0, "train_tokens": 100, "distinct_trained": 10, "base_loss_mean": 3.0},
    {"method": "lead", "seed": 1, "loss_mean": 2.2, "train_tokens": 120, "distinct_trained": 10, "base_loss_mean": 3.0},
    {"method": "random", "seed": 0, "loss_mean": 2.1, "train_tokens": 90, "distinct_trained": 10, "base_loss_mean": 3.0},
    {"method": "random", "seed": 1, "loss_mean": 2.3, "train_tokens": 90, "distinct_trained": 10, "base_loss_mean": 3.0},
    {"method": "random", "seed": 2, "loss_mean": 2.5, "train_tokens": 90, "distinct_trained": 10, "base_loss_mean": 3.0},
    {"method": "full", "seed": 0, "loss_mean": 1.9, "train_tokens": 900, "distinct_trained": 100, "base_loss_mean": 3.0},
]


def test_mean_std_and_difference_to_random_by_hand():
    table = summarise(ROWS, ["lead", "random", "full"])
    lead, rnd, full = table
    assert lead["loss_mean"] == pytest.approx(2.1) and lead["loss_mean_std"] == pytest.approx(math.sqrt(0.02))
    assert rnd["loss_mean"] == pytest.approx(2.3) and rnd["loss_mean_std"] == pytest.approx(0.2)  # ddof 1
    assert full["seeds"] == 1 and full["loss_mean_std"] == 0.0
    vs = versus(table)
    # lead − random = 2.1 − 2.3; se = sqrt(0.02/2 + 0.04/3) = sqrt(0.0233333)
    assert vs["lead"][0] == pytest.approx(-0.2) and vs["lead"][1] == pytest.approx(math.sqrt(0.01 + 0.04 / 3))
    # full has one seed: only random's spread counts: sqrt(0 + 0.04/3)
    assert vs["full"] == (pytest.approx(-0.4), pytest.approx(math.sqrt(0.04 / 3)))
    assert "random" not in vs
    md = markdown(table, ROWS)
    assert "| lead | 2 | 10 ± 0 | 110 ± 14 | 2.1000 ± 0.1414 | -0.2000 ± 0.1528 |" in md
    assert "| full | 1 | 100 | 900 | 1.9000 | -0.4000 ± 0.1155 |" in md
    assert "| random | 3 | 10 ± 0 | 90 ± 0 | 2.3000 ± 0.2000 | – |" in md


def test_no_random_no_difference_column_values():
    table = summarise(ROWS[:2], ["lead"])
    assert versus(table) == {}
    assert "| lead | 2 | 10 ± 0 | 110 ± 14 | 2.1000 ± 0.1414 | – |" in markdown(table, ROWS[:2])


def test_selection_profile_by_hand(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from leadsel.report.tables import pool_u0, selection_profile

    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "source": ["x", "x", "y", "y"], "times_used": [2, 0, 1, 0],
                             "length": [10, 20, 30, 40], "u0": [4.0, 1.0, 3.0, 2.0]}), run / "scores.parquet")
    u0 = pool_u0([run])
    assert u0 == {"a": 4.0, "b": 1.0, "c": 3.0, "d": 2.0}
    prof = selection_profile(run, u0)
    # trained: a and c. Shares 1/2 each; mean length (10 + 30) / 2 = 20; U0 ranks b<d<c<a, so the
    # percentiles (rank + 0.5)/4 x 100 are a 87.5, c 62.5: mean 75
    assert prof == {"share_x": 0.5, "share_y": 0.5, "mean_length": 20.0, "u0_percentile": 75.0}
    nan = tmp_path / "nan"
    nan.mkdir()
    pq.write_table(pa.table({"id": ["a"], "source": ["x"], "times_used": [1], "length": [5],
                             "u0": [float("nan")]}), nan / "scores.parquet")
    assert pool_u0([nan]) is None and "u0_percentile" not in selection_profile(nan, None)
