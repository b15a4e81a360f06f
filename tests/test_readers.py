"""The file shapes pools come in: JSON arrays, Parquet files and shard directories, compressed
JSONL, each with its bad-input errors naming file and element / row / line."""
from __future__ import annotations

import gzip
import json
import sys

import pytest

from leadsel.data.load import load_pool
from leadsel.data.readers import expand, read_at, read_entries
from leadsel.data.records import DataError, Loc


def U(t):
    return {"role": "user", "content": t}


def A(t):
    return {"role": "assistant", "content": t}


ALPACA = [{"instruction": "Give three tips.", "input": "", "output": "Eat, sleep, move."},
          {"instruction": "Translate", "input": "hola", "output": "hello"},
          {"instruction": "Add", "input": "2 and 2", "output": "4"}]


def load_error(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_pool(path, **kw)
    return info.value


# --- JSON arrays ------------------------------------------------------------------------

def test_alpaca_json_array_is_read_in_its_own_shape(tmp_path):
    p = tmp_path / "alpaca_data.json"
    p.write_text(json.dumps(ALPACA, indent=4))   # the shape of Stanford Alpaca's file
    samples, report = load_pool(p)
    assert report.formats == {str(p): "alpaca"}
    assert [s.messages for s in samples] == [[U("Give three tips."), A("Eat, sleep, move.")],
                                             [U("Translate\n\nhola"), A("hello")], [U("Add\n\n2 and 2"), A("4")]]
    assert [int(s.line) for s in samples] == [1, 2, 3]                  # element numbers
    assert [s.line.line for s in samples] == [2, 7, 12]                 # the lines they start on (indent=4)
    assert samples[0].source == "alpaca_data" and samples[1].raw == ALPACA[1]


@pytest.mark.parametrize("fmt_records", [
    [{"messages": [U("q"), A("a")]}],
    [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}],
    [{"prompt": "q", "completion": "a"}],
])
def test_json_array_in_every_format(tmp_path, fmt_records):
    p = tmp_path / "pool.json"
    p.write_text(json.dumps(fmt_records))
    (s,), _ = load_pool(p)
    assert s.messages == [U("q"), A("a")]


def test_json_array_longer_than_the_read_window(tmp_path, monkeypatch):
    """Elements cross chunk boundaries (a tiny window): all found, lines counted across them."""
    import leadsel.data.readers as readers

    monkeypatch.setattr(readers, "_CHUNK", 64)
    recs = [{"instruction": f"question {i} " + "x" * (i * 7), "output": str(i), "id": i} for i in range(300)]
    p = tmp_path / "big.json"
    p.write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    samples, _ = load_pool(p)
    assert [s.id for s in samples] == [str(i) for i in range(300)]
    assert [s.line.line for s in samples] == list(range(2, 302))


def test_bad_element_is_named_by_index_and_line(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n {"instruction": "i", "output": "o"},\n {"instruction": "j"}\n]')
    err = load_error(p)
    assert err.reason == "missing_field" and str(err).startswith(f"{p}: element 2 (line 3): field 'output'")


def test_non_object_element_is_skipped_and_counted(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[{"instruction": "i", "output": "o"}, 5, {"instruction": "k", "output": "l"}]')
    assert "element 2 (line 1): expected a JSON object, got int" in str(load_error(p))
    samples, report = load_pool(p, on_error="skip")
    assert len(samples) == 2 and report.skipped == {"invalid_json": 1}


def test_broken_array_syntax_raises_even_when_skipping(tmp_path):
    """After a syntax error the later elements cannot be found: never skipped silently."""
    p = tmp_path / "a.json"
    p.write_text('[{"instruction": "i", "output": "o"},\n {"instruction": "j", "output": }]')
    for policy in ("raise", "skip"):
        err = load_error(p, on_error=policy)
        assert err.reason == "invalid_json" and f"{p}:2:" in str(err)
        assert "after element 1" in str(err) and "the rest of the array cannot be read" in str(err)


def test_json_that_is_neither_array_nor_jsonl_says_what_was_expected(tmp_path):
    p = tmp_path / "wrapped.json"
    p.write_text('"just a string"')
    err = load_error(p)
    assert "expected a JSON array of records" in str(err) and "or one JSON object per line (JSONL)" in str(err)
    q = tmp_path / "dict.json"   # one object over several lines: line 1 is not a whole object
    q.write_text('{"data": [\n{"instruction": "i", "output": "o"}]}')
    assert load_error(q).reason == "invalid_json" and f"{q}:1:" in str(load_error(q))


def test_json_lines_in_a_json_file_are_read_as_jsonl(tmp_path):
    p = tmp_path / "pool.json"
    p.write_text("\n".join(json.dumps(r) for r in ALPACA))
    assert len(load_pool(p)[0]) == 3 and expand(p)[0].kind == "jsonl"


# --- Parquet ----------------------------------------------------------------------------

def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_file(tmp_path):
    p = _parquet(tmp_path / "train.parquet", [{"messages": [U("q1"), A("a1")], "id": "p1"},
                                             {"messages": [U("q2"), A("a2")], "id": None}])
    samples, report = load_pool(p)
    assert report.formats == {str(p): "messages"} and samples[0].id == "p1"
    assert [str(s.line) for s in samples] == ["1", "2"] and samples[0].line.unit == "row"


def test_parquet_shard_directory_takes_the_split(tmp_path):
    d = tmp_path / "my-dataset"
    for k in range(2):
        _parquet(d / "data" / f"train-0000{k}-of-00002.parquet",
                 [{"instruction": f"i{k}{j}", "output": "o", "id": f"t{k}{j}"} for j in range(3)])
    _parquet(d / "data" / "test-00000-of-00001.parquet", [{"instruction": "x", "output": "y", "id": "x"}])
    samples, report = load_pool(d)
    assert [s.id for s in samples] == ["t00", "t01", "t02", "t10", "t11", "t12"]
    assert len(report.formats) == 2 and {s.source for s in samples} == {"my-dataset"}
    assert [s.id for s in load_pool(d, split="test")[0]] == ["x"]
    err = load_error(d, split="validation")
    assert err.reason == "missing_split" and "['test', 'train']" in str(err)


def test_parquet_bad_row_is_named_by_file_and_row(tmp_path):
    p = _parquet(tmp_path / "s.parquet", [{"instruction": "i", "output": "o"}, {"instruction": "j", "output": ""}])
    err = load_error(p)
    assert err.reason == "empty_response" and str(err).startswith(f"{p}: row 2: field 'output'")
    samples, report = load_pool(p, on_error="skip")
    assert len(samples) == 1 and report.skipped == {"empty_response": 1}


def test_a_directory_without_data_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert load_error(tmp_path / "empty").reason == "not_a_dataset"


def test_a_file_that_is_not_parquet_is_refused(tmp_path):
    p = tmp_path / "fake.parquet"
    p.write_text("not parquet")
    err = load_error(p)
    assert err.reason == "not_a_dataset" and "not a readable Parquet file" in str(err)


# --- compressed JSONL -------------------------------------------------------------------

def _lines(recs) -> bytes:
    return ("\n".join(json.dumps(r) for r in recs) + "\n").encode()


def test_gzip_jsonl_with_a_bad_line(tmp_path):
    p = tmp_path / "pool.jsonl.gz"
    p.write_bytes(gzip.compress(_lines(ALPACA[:2]) + b"{broken\n"))
    err = load_error(p)
    assert err.reason == "invalid_json" and str(err).startswith(f"{p}:3:")
    samples, _ = load_pool(p, on_error="skip")
    assert samples[0].source == "pool" and len(samples) == 2


def test_zstd_jsonl(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    p = tmp_path / "pool.jsonl.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(_lines(ALPACA) + b'{"instruction": 3, "output": "o"}\n'))
    err = load_error(p)
    assert err.reason == "bad_type" and str(err).startswith(f"{p}:4: field 'instruction'")
    samples, report = load_pool(p, on_error="skip")
    assert len(samples) == 3 and samples[0].source == "pool" and report.skipped == {"bad_type": 1}


def test_zstd_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    p = tmp_path / "pool.jsonl.zst"
    p.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "zstandard", None)   # import fails
    err = load_error(p)
    assert "pip install zstandard" in str(err)


# --- finding entries again --------------------------------------------------------------

@pytest.mark.parametrize("shape", ["jsonl", "gz", "array", "parquet"])
def test_read_at_returns_the_records_read_entries_gave(tmp_path, shape):
    recs = [{"instruction": f"i{k}", "output": f"o{k}", "id": k} for k in range(50)]
    if shape == "parquet":
        p = _parquet(tmp_path / "p.parquet", recs)
    else:
        p = tmp_path / {"jsonl": "p.jsonl", "gz": "p.jsonl.gz", "array": "p.json"}[shape]
        data = json.dumps(recs).encode() if shape == "array" else _lines(recs)
        p.write_bytes(gzip.compress(data) if shape == "gz" else data)
    (src,) = expand(p)
    assert src.seekable == (shape == "jsonl")
    entries = list(read_entries(src))
    want = [entries[k][0] for k in (40, 3, 17)]
    got = read_at(src, want)
    assert [got[w]["id"] for w in want] == [40, 3, 17]


def test_loc_prints_its_unit():
    assert str(DataError("f.json", Loc(3, "element", 12), "output", "m", "r")) == "f.json: element 3 (line 12): field 'output': m"
    assert str(DataError("f.parquet", Loc(5, "row"), None, "m", "r")) == "f.parquet: row 5: m"
    assert Loc(5, "row") == 5 and str(DataError("f.jsonl", 5, None, "m", "r")) == "f.jsonl:5: m"


# --- the array parser's window ------------------------------------------------------------

def _spy_window(monkeypatch, chunk):
    """Shrink the read window to ``chunk`` characters; record the buffer's length after each read."""
    import leadsel.data.readers as readers

    monkeypatch.setattr(readers, "_CHUNK", chunk)
    sizes = []
    more = readers._Text.more

    def spying(self, keep_from):
        more(self, keep_from)
        sizes.append(len(self.buf))
    monkeypatch.setattr(readers._Text, "more", spying)
    return sizes


def test_one_long_element_does_not_grow_the_window_for_the_rest(tmp_path, monkeypatch):
    sizes = _spy_window(monkeypatch, 64)
    recs = [{"instruction": "x" * 2000, "output": "o", "id": "long"}] + \
        [{"instruction": "i", "output": "o", "id": k} for k in range(400)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(recs))
    assert len(load_pool(p)[0]) == 401
    assert max(sizes) < 4 * 2100 and max(sizes[len(sizes) // 2:]) < 4 * 64 + 200


def test_a_syntax_error_is_raised_without_reading_the_rest(tmp_path, monkeypatch):
    sizes = _spy_window(monkeypatch, 64)
    p = tmp_path / "a.json"
    p.write_text('[{"instruction": "i", "output": "o"}, {"instruction": "i" "output": "o"}, '
                 + ", ".join(['{"instruction": "i", "output": "o"}'] * 5000) + "]")
    err = load_error(p)
    assert err.reason == "invalid_json" and "after element 1: Expecting ',' delimiter (element 2)" in str(err)
    assert len(sizes) < 10      # a few windows, not the 180 KB behind the error


@pytest.mark.parametrize("chunk", range(8, 72, 3))
def test_a_number_cut_by_the_window_is_read_whole(tmp_path, monkeypatch, chunk):
    _spy_window(monkeypatch, chunk)
    p = tmp_path / "a.json"
    p.write_text('[{"instruction": "i", "output": "o"}, 12.5e3, {"instruction": "j", "output": "p"}]')
    samples, report = load_pool(p, on_error="skip")
    assert [s.messages[0]["content"] for s in samples] == ["i", "j"]
    assert report.skipped == {"invalid_json": 1} and "got float" in report.examples[0]


def test_read_at_the_first_line_of_a_file_with_a_bom(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes("\ufeff".encode() + _lines(ALPACA))
    (src,) = expand(p)
    assert read_at(src, [0])[0] == ALPACA[0]


def test_loc_survives_pickling():
    import pickle

    loc = pickle.loads(pickle.dumps(Loc(4, "element", 9)))
    assert (int(loc), loc.unit, loc.line) == (4, "element", 9)
