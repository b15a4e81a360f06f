"""The selection-work formulas (leadsel.cost, docs/performance.md) against the pass counts that
runs of every method record, on the tiny model; and the formulas' arithmetic by hand."""
from __future__ import annotations

import pytest

from leadsel.cost import (Sizes, TokenCosts, clusterucb_draws, iterit_windows, recorded, recorded_by_run, seconds,
                          sizes_of_run, work)
from helpers import run_method, tiny_run_inputs

METHODS = ["lead", "lead-no-idu", "lead-no-task", "lead-no-bandit", "iterit", "less", "dynamic", "clusterucb",
           "ifd", "loss", "random", "full"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("cost"))


@pytest.mark.parametrize("method", METHODS)
def test_formula_equals_the_passes_a_run_records(inputs, tmp_path, method):
    d, ckpt = inputs
    extra = {"targeted__k": 3, "targeted__draws": 0.5} if method == "clusterucb" else {}
    run_method(d, ckpt, tmp_path / method, method, rounds=4, **extra)
    sizes = sizes_of_run(tmp_path / method)
    assert recorded(work(method, sizes)) == recorded_by_run(tmp_path / method)
    if method == "iterit":
        assert sizes.windows and sizes.windows[0] > 0
    if method == "clusterucb":
        assert sizes.draws and sizes.draws[0] >= 0.5 * sizes.n - 1


def test_the_formulas_by_hand():
    s = Sizes(n=1000, budget=25, epochs=3, warmup=10, warmup_epochs=2, val=40, windows=(75, 75), draws=(200, 200, 200))
    assert recorded(work("lead", s)) == {"forward": {"loss": 1000, "warm-loss": 1000, "warm-loss-alone": 1000},
                                         "backward": {"warmup": 20}}
    # IterIT: 2N + 2 x (75 + 75)
    assert sum(recorded(work("iterit", s))["forward"].values()) == 2000 + 300
    # LESS: E (N + V) gradients, each a forward and a backward, and the warm-up's W x E training passes
    assert recorded(work("less", s)) == {"forward": {"less-grad": 2000, "less-grad-val": 80},
                                         "backward": {"warmup": 20, "less-grad": 2000, "less-grad-val": 80}}
    assert recorded(work("dynamic", s))["backward"] == {"select-grad": 3000, "select-grad-val": 120}
    assert recorded(work("clusterucb", s))["forward"] == {"select-grad": 1000 + 600, "select-grad-val": 120}
    assert work("random", s) == [] and recorded(work("loss", s)) == {"forward": {"loss": 1000}, "backward": {}}
    # windows: min(candidates, ceil(3 x 25)) for each epoch after the first
    assert iterit_windows(60, 25, 3, 3.0) == (60, 60) and iterit_windows(900, 25, 3, 3.0) == (75, 75)
    # ClusterUCB: cold max(floor(0.05 x |c|), 1) = 1 + 2 + 5 for clusters of 10, 40, 100; + floor(150 x 0.15) = 22
    assert clusterucb_draws([10, 40, 100], 150, 0.2, 0.05, 2) == (30, 30)
    # seconds: LEAD's 3N forwards of 100 tokens (alone: 40) at 1 us, W.E training passes at 3 us
    c = TokenCosts(forward_s=1e-6, forward_backward_s=3e-6, tokens=100, alone_tokens=40)
    assert seconds(work("lead", s), c) == pytest.approx((2000 * 100 + 1000 * 40) * 1e-6 + 20 * 100 * 3e-6)
