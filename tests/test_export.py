"""`leadsel export`: a finished run's selection as jsonl (input schema), parquet and a datasets
directory (id, source, messages, times_used, first_round)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from leadsel.cli import main
from leadsel.export import export_run
from helpers import run_method, tiny_run_inputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d, ckpt = tiny_run_inputs(tmp_path_factory.mktemp("export"))
    run_method(d, ckpt, d / "run", "lead", rounds=3)
    return d / "run"


def test_jsonl_is_the_selection_in_its_input_schema(run, tmp_path):
    info = export_run(run, "jsonl", tmp_path / "sel.jsonl")
    assert (tmp_path / "sel.jsonl").read_bytes() == (run / "selected.jsonl").read_bytes()
    rows = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    assert info["samples"] == rows[-1]["unique_used"] and info["samples_trained"] == sum(r["n_selected"] for r in rows)


@pytest.mark.parametrize("to", ["parquet", "hf"])
def test_conversational_rows(run, tmp_path, to):
    out = tmp_path / ("sel.parquet" if to == "parquet" else "sel_ds")
    export_run(run, to, out)
    if to == "parquet":
        got = pq.read_table(out).to_pylist()
    else:
        import datasets

        got = datasets.load_from_disk(str(out)).to_list()
    scores = pq.read_table(run / "scores.parquet").to_pydict()
    used = [i for i, t in enumerate(scores["times_used"]) if t > 0]
    assert [r["id"] for r in got] == [scores["id"][i] for i in used]
    assert [r["times_used"] for r in got] == [scores["times_used"][i] for i in used]
    records = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    for row, rec in zip(got, records):   # the tiny pool is alpaca with an empty input
        assert row["id"] == rec["id"] and row["messages"] == [{"role": "user", "content": rec["instruction"]},
                                                              {"role": "assistant", "content": rec["output"]}]
        assert row["source"] in ("alpha", "beta") and row["first_round"] >= 1


def test_refusals_say_what_to_do(run, tmp_path, capsys):
    (tmp_path / "taken.jsonl").write_text("x\n")
    assert main(["export", str(run), "--to", "jsonl", str(tmp_path / "taken.jsonl")]) == 2
    assert "exists: choose another path or pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "jsonl", str(tmp_path / "taken.jsonl"), "--overwrite"]) == 0
    half = tmp_path / "half"
    half.mkdir()
    man = json.loads((run / "run.json").read_text())
    (half / "run.json").write_text(json.dumps({**man, "status": "incomplete"}))
    assert main(["export", str(half), "--to", "parquet", str(tmp_path / "x.parquet")]) == 2
    assert "is not a finished run (status 'incomplete'): finish or resume it first" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()
