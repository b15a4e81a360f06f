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


def test_share_of_the_references_gain_per_set_then_averaged():
    from leadsel.report.tables import gain_shares

    rows = [  # base: set a 4.0, set b 2.0; full (two seeds) a 2.0 / 3.0 -> mean 2.5, b 1.0 / 1.0
        {"method": "full", "loss_a": 2.0, "loss_b": 1.0, "loss_mean": 1.5, "base_loss_a": 4.0, "base_loss_b": 2.0},
        {"method": "full", "loss_a": 3.0, "loss_b": 1.0, "loss_mean": 2.0, "base_loss_a": 4.0, "base_loss_b": 2.0},
        {"method": "x", "loss_a": 3.25, "loss_b": 1.0, "loss_mean": 2.125, "base_loss_a": 4.0, "base_loss_b": 2.0,
         "val_loss_a": 1.5, "val_base_loss_a": 2.0},
    ]
    gain_shares(rows, "full")
    # x: a (4 - 3.25) / (4 - 2.5) = 0.5, b (2 - 1) / (2 - 1) = 1 -> 0.75 (the plain means would say
    # (3 - 2.125) / (3 - 1.75) = 0.7); full's seeds: a 2/1.5, b 1 -> (4/3 + 1)/2 and a 1/1.5, b 1 -> (2/3 + 1)/2
    assert rows[2]["gain_share"] == pytest.approx(0.75)
    assert rows[0]["gain_share"] == pytest.approx((4 / 3 + 1) / 2) and rows[1]["gain_share"] == pytest.approx(5 / 6)
    # no reference row on the validation sets: no val share
    assert "val_gain_share" not in rows[2]
    # a set where the reference did not beat the base is left out
    rows = [{"method": "full", "loss_a": 2.0, "loss_b": 2.5, "base_loss_a": 4.0, "base_loss_b": 2.0},
            {"method": "x", "loss_a": 3.0, "loss_b": 1.0, "base_loss_a": 4.0, "base_loss_b": 2.0}]
    gain_shares(rows, "full")
    assert rows[1]["gain_share"] == pytest.approx(0.5)


def test_where_a_share_sits_on_the_curve():
    from leadsel.report.tables import on_curve

    curve = [(0.2, 0.5), (0.05, 0.2), (0.1, 0.3)]   # sorted by budget: (0.05, 0.2) (0.1, 0.3) (0.2, 0.5)
    assert on_curve(curve, 0.4) == ("=", pytest.approx(0.15))    # halfway from 0.3 to 0.5
    assert on_curve(curve, 0.25) == ("=", pytest.approx(0.075))
    assert on_curve(curve, 0.2) == ("=", 0.05)
    assert on_curve(curve, 0.1) == ("<", 0.05)
    assert on_curve(curve, 0.6) == (">", 0.2)
    # not monotone: the first segment that rises to it, 0.3 -> 0.6 from budget 0.2: 0.2 + 0.1 * 0.2 / 0.3
    assert on_curve([(0.1, 0.4), (0.2, 0.3), (0.3, 0.6)], 0.5) == ("=", pytest.approx(0.2 + 0.1 * 0.2 / 0.3))


def test_the_headline_table_by_hand():
    rows = []
    for m, seed, share, distinct, noise in (("lead", 0, 0.45, 10, 0.1), ("lead", 1, 0.35, 10, 0.2),
                                             ("random", 0, 0.3, 10, 0.15), ("random", 1, 0.2, 10, 0.15),
                                             ("random@20%", 0, 0.5, 20, 0.15), ("full", 0, 1.0, 100, 0.15)):
        rows.append({"method": m, "seed": seed, "gain_share": share, "distinct_trained": distinct,
                     "samples_trained": 2 * distinct, "budget_share": distinct / 100,
                     "passes_share": 2 * distinct / 100, "noise_distinct": noise,
                     "noise_pool": 0.15, "loss_mean": 1.0})
    table = summarise(rows, ["lead", "random", "random@20%", "full"])
    md = markdown(table, rows, curve_prefix="random")
    # lead: share 0.40 ± 0.0707; vs random (0.25 ± 0.0707): +0.15 ± sqrt(0.005/2 + 0.005/2) = 0.0707;
    # random's curve: (0.1, 0.25) (0.2, 0.5) (1.0, 1.0, full is not on it): 0.4 at 0.1 + 0.1 * 0.15/0.25 = 0.16,
    # 1.6 x lead's 10%; lead's 20 sample-passes are 20% of the pool, where random's curve is at 50%
    assert ("| lead | 2 | 10 ± 0 | 20 ± 0 | 40.0% ± 7.1% | +15.0% ± 7.1% | 16.0% | 1.60 | 50.0% | – | 15.0% ± 7.1% |"
            in md)
    assert "| random | 2 | 10 ± 0 | 20 ± 0 | 25.0% ± 7.1% | – | 10.0% | 1.00 | 50.0% | – | 15.0% ± 0.0% |" in md
    # full is above the curve's last point, and its passes (200% of the pool) beyond its budgets
    assert "| full | 1 | 100 | 200 | 100.0% | +75.0% ± 5.0% | > 20.0% | > 0.20 | – | – | 15.0% |" in md
    # random@20%'s 40 passes are past the curve's last budget too
    assert "| random@20% | 1 | 20 | 40 | 50.0% | +25.0% ± 5.0% | 20.0% | 1.00 | – | – | 15.0% |" in md
    assert "the pool's share: 15%" in md


def test_a_variant_runs_its_method_with_its_settings(tmp_path):
    from leadsel.compare import row_config
    from leadsel.config import load_config

    cfg = load_config(None, [f"output_dir={tmp_path}", "budget=0.1", "lead.rate=0.2",
                             "compare.variants={random@30%: [method=random, budget=0.3], "
                             "lead-x: [method=lead, lead.reward=detrended]}",
                             "compare.methods=[lead, random@30%, lead-x]"])
    r = row_config(cfg, "random@30%", 2)
    assert (r.method, r.budget, r.seed, r.output_dir, r.lead.rate) == ("random", 0.3, 2, f"{tmp_path}/random@30%-seed2", 0.2)
    x = row_config(cfg, "lead-x", 0)
    assert (x.method, x.lead.reward, x.budget, x.lead.rate) == ("lead", "detrended", 0.1, 0.2)
    plain = row_config(cfg, "lead", 1)
    assert (plain.method, plain.seed, plain.lead.reward) == ("lead", 1, "consumed")


def test_a_bandit_runs_regime_from_its_round_log():
    from leadsel.report.tables import regime

    rounds = [{"arm": a, "arm_probs": [0.25] * 4, "n_steps": n} for a, n in ((0, 2), (1, 3), (0, 2), (3, 1), (1, 2))]
    # 5 rounds / 4 arms = 1.25; arms 0 and 1 pulled twice; steps (2 + 3 + 2 + 1 + 2) / 5 = 2
    assert regime(rounds) == {"rounds": 5, "pulls_per_arm": 1.25, "arms_twice": 2, "n_arms": 4, "steps_per_round": 2.0}
    assert regime([{"n_steps": 3}]) == {}   # a static run
    table = summarise([{"method": "lead", "seed": s, "samples_trained": 30, "distinct_trained": 20, **regime(rounds)}
                       for s in (0, 1)], ["lead"])
    assert "| lead | 5.0 ± 0.0 | 1.25 ± 0.00 | 2.0 ± 0.0 of 4 | 1.50 | 2.0 ± 0.0 |" in markdown(table, [])
