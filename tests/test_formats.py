"""Pool loading: format adapters, detection, ids, sources, validation errors, skip policy."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from leadsel.data.formats import detect_format, to_messages
from leadsel.data.load import LoadReport, load_pool, write_jsonl
from leadsel.data.records import DataError, content_hash


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


def write_lines(path: Path, records) -> Path:
    """Write records (dicts are JSON-encoded, str/bytes written verbatim) one per line."""
    chunks = []
    for r in records:
        if isinstance(r, dict):
            r = json.dumps(r)
        chunks.append(r if isinstance(r, bytes) else r.encode("utf-8"))
    data = b"\n".join(chunks) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def good_msg(i):
    return {"messages": [U(f"q{i}"), A(f"a{i}")], "id": f"m{i}"}


def load_error(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_pool(path, **kw)
    return info.value


# --- each format to exact messages --------------------------------------------------------

def test_messages_format(tmp_path):
    p = write_lines(tmp_path / "chat.jsonl", [
        {"messages": [S("be nice"), U("hi"), A("hello"), U("bye"), A("ciao")], "id": 7,
         "dataset": "tulu"},
    ])
    samples, report = load_pool(p)
    (s,) = samples
    assert s.messages == [S("be nice"), U("hi"), A("hello"), U("bye"), A("ciao")]
    assert s.id == "7" and s.source == "tulu"
    assert s.file == str(p) and s.line == 1
    assert s.raw["dataset"] == "tulu"
    assert report.formats == {str(p): "messages"} and report.n_loaded == 1


def test_messages_extra_keys_dropped():
    rec = {"messages": [{"role": "user", "content": "x", "name": "bob"}, A("y")]}
    assert to_messages(rec, "messages", "f", 1) == [U("x"), A("y")]


def test_alpaca_format(tmp_path):
    p = write_lines(tmp_path / "alp.jsonl", [
        {"instruction": "Add.", "input": "2+2", "output": "4"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        {"instruction": "Say hi.", "output": "hey"},
        {"instruction": "Q", "input": "ctx", "output": "R", "system": "sys"},
    ])
    samples, report = load_pool(p)
    assert [s.messages for s in samples] == [
        [U("Add.\n\n2+2"), A("4")],
        [U("Say hi."), A("hi")],
        [U("Say hi."), A("hey")],
        [S("sys"), U("Q\n\nctx"), A("R")],
    ]
    assert report.formats[str(p)] == "alpaca"


def test_sharegpt_format(tmp_path):
    p = write_lines(tmp_path / "sg.jsonl", [
        {"id": "c1", "source": "sharegpt90k", "conversations": [
            {"from": "system", "value": "S"}, {"from": "human", "value": "h1"},
            {"from": "gpt", "value": "g1"}, {"from": "user", "value": "h2"},
            {"from": "chatgpt", "value": "g2"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "bard", "value": "y"}]},
        {"conversations": [{"from": "user", "value": "x"}, {"from": "model", "value": "z"}]},
        {"conversations": [{"from": "human", "value": "x"},
                           {"from": "assistant", "value": "w"}]},
    ])
    samples, report = load_pool(p)
    assert samples[0].messages == [S("S"), U("h1"), A("g1"), U("h2"), A("g2")]
    assert samples[0].id == "c1" and samples[0].source == "sharegpt90k"
    assert [s.messages for s in samples[1:]] == [[U("x"), A("y")], [U("x"), A("z")],
                                                 [U("x"), A("w")]]
    assert report.formats[str(p)] == "sharegpt"


def test_sharegpt_unknown_from(tmp_path):
    p = write_lines(tmp_path / "sg.jsonl", [
        {"conversations": [{"from": "human", "value": "x"}, {"from": "robot", "value": "y"}]}])
    err = load_error(p)
    assert err.reason == "wrong_role_order" and err.field == "conversations[1].from"
    assert "sg.jsonl:1" in str(err) and "conversations[1].from" in str(err)
    assert "robot" in str(err)


def test_prompt_completion_format(tmp_path):
    p = write_lines(tmp_path / "pc.jsonl", [
        {"prompt": "What is 2+2?", "completion": "4"},
        {"prompt": [S("sys"), U("hi")], "completion": [A("hello")]},
        {"prompt": [U("a"), A("b"), U("c")], "completion": "d"},
    ])
    samples, report = load_pool(p)
    assert [s.messages for s in samples] == [
        [U("What is 2+2?"), A("4")],
        [S("sys"), U("hi"), A("hello")],
        [U("a"), A("b"), U("c"), A("d")],
    ]
    assert report.formats[str(p)] == "prompt_completion"


# --- ids and sources ----------------------------------------------------------------------

def test_ids_given_vs_hash(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [
        {"messages": [U("q"), A("r")], "id": "given"},
        {"messages": [U("q"), A("r")]},
    ])
    b = write_lines(tmp_path / "b.jsonl", [{"instruction": "q2", "output": "r2"}])
    c = write_lines(tmp_path / "c.jsonl", [{"prompt": "q2", "completion": "r2", "id": ""}])
    sa, _ = load_pool(a)
    assert sa[0].id == "given"
    assert sa[1].id == content_hash([U("q"), A("r")])
    sb, _ = load_pool(b)
    sc, _ = load_pool(c)
    # Same content in different formats -> same hash.
    assert sb[0].id == sc[0].id == content_hash([U("q2"), A("r2")])
    assert sb[0].id != sa[1].id and len(sb[0].id) == 16


def test_source_labels(tmp_path):
    p = write_lines(tmp_path / "alpaca_gpt4.jsonl.gz", [
        {"instruction": "i", "output": "o"},
        {"instruction": "i2", "output": "o2", "source": "given_src"},
        {"instruction": "i3", "output": "o3", "dataset": "given_ds", "source": "other"},
        {"instruction": "i4", "output": "o4", "source": "  "},
    ])
    samples, _ = load_pool(p)
    assert [s.source for s in samples] == ["alpaca_gpt4", "given_src", "given_ds",
                                           "alpaca_gpt4"]


# --- detection ----------------------------------------------------------------------------

def test_per_file_detection_two_formats(tmp_path):
    a = write_lines(tmp_path / "one.jsonl", [good_msg(1), good_msg(2)])
    b = write_lines(tmp_path / "two.jsonl", [{"instruction": "i", "output": "o"}])
    samples, report = load_pool([a, str(b)])
    assert report.formats == {str(a): "messages", str(b): "alpaca"}
    assert [s.source for s in samples] == ["one", "one", "two"]
    assert [(s.file, s.line) for s in samples] == [(str(a), 1), (str(a), 2), (str(b), 1)]
    assert report.n_loaded == 3


def test_forced_fmt(tmp_path):
    # Both markers present: ambiguous under auto, fine when forced.
    rec = {"messages": [U("m"), A("n")], "instruction": "i", "output": "o"}
    p = write_lines(tmp_path / "both.jsonl", [rec])
    assert load_error(p).reason == "unknown_format"
    s_msg, r_msg = load_pool(p, fmt="messages")
    assert s_msg[0].messages == [U("m"), A("n")] and r_msg.formats[str(p)] == "messages"
    s_alp, r_alp = load_pool(p, fmt="alpaca")
    assert s_alp[0].messages == [U("i"), A("o")] and r_alp.formats[str(p)] == "alpaca"
    # Forcing the wrong format gives a missing-field error, not a silent guess.
    err = load_error(p, fmt="sharegpt")
    assert err.reason == "missing_field" and err.field == "conversations"
    with pytest.raises(ValueError, match="fmt must be"):
        load_pool(p, fmt="csv")


def test_ambiguous_format(tmp_path):
    p = write_lines(tmp_path / "amb.jsonl", [
        {"messages": [U("m"), A("n")], "instruction": "i", "output": "o"}])
    err = load_error(p)
    assert err.reason == "unknown_format"
    assert "amb.jsonl:1" in str(err) and "'instruction'" in str(err)
    assert "'messages'" in str(err) and "several" in str(err)


def test_unknown_format(tmp_path):
    p = write_lines(tmp_path / "unk.jsonl", [{"question": "q", "answer": "a"}])
    err = load_error(p)
    assert err.reason == "unknown_format" and "unk.jsonl:1" in str(err)
    assert "'answer'" in str(err) and "'question'" in str(err)
    # Undetectable even under skip: a whole file is never silently dropped.
    assert load_error(p, on_error="skip").reason == "unknown_format"


def test_detect_format_direct():
    assert detect_format({"messages": []}, "f", 1) == "messages"
    assert detect_format({"instruction": "", "output": ""}, "f", 1) == "alpaca"
    assert detect_format({"conversations": []}, "f", 1) == "sharegpt"
    assert detect_format({"prompt": "", "completion": ""}, "f", 1) == "prompt_completion"
    # A messages record with a prompt column (e.g. ultrachat) is still messages.
    assert detect_format({"prompt": "", "prompt_id": "", "messages": []}, "f", 1) == "messages"


def test_gz_file(tmp_path):
    p = write_lines(tmp_path / "pool.jsonl.gz", [good_msg(1), "", good_msg(2)])
    samples, report = load_pool(p)
    assert [s.id for s in samples] == ["m1", "m2"]
    assert [s.line for s in samples] == [1, 3]      # blank line 2 skipped, lines still counted
    assert samples[0].source == "pool" and report.formats[str(p)] == "messages"


def test_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"messages": [U("a"), A("b")], "id": "d1"},
            {"messages": [U("c"), A("d")], "id": None}]
    d = tmp_path / "my_ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(d))
    samples, report = load_pool(d)
    assert [s.messages for s in samples] == [[U("a"), A("b")], [U("c"), A("d")]]
    assert samples[0].id == "d1" and samples[1].id == content_hash([U("c"), A("d")])
    assert [s.line for s in samples] == [1, 2] and samples[0].source == "my_ds"
    assert report.formats == {str(d): "messages"}


def test_datasets_dict_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"instruction": "i", "output": "o"}]),
        "test": datasets.Dataset.from_list([{"instruction": "t1", "output": "t2"},
                                            {"instruction": "t3", "output": "t4"}]),
    })
    d = tmp_path / "dd"
    dd.save_to_disk(str(d))
    assert [s.messages for s in load_pool(d)[0]] == [[U("i"), A("o")]]
    assert len(load_pool(d, split="test")[0]) == 2
    err = load_error(d, split="validation")
    assert err.reason == "missing_split" and "validation" in str(err)


def test_plain_directory_is_clear_error(tmp_path):
    (tmp_path / "notds").mkdir()
    assert load_error(tmp_path / "notds").reason == "not_a_dataset"


# --- bad inputs (raise) -------------------------------------------------------------------

BAD_CASES = [
    # (record line, reason, field)
    ('{"messages": [', "invalid_json", None),
    ('[1, 2]', "invalid_json", None),
    (b'{"messages": "caf\xe9"}', "non_utf8", None),
    ({"instruction": "i"}, "missing_field", "output"),
    ({"messages": [U("q"), {"role": "assistant"}]}, "missing_field", "messages[1].content"),
    ({"messages": "not a list"}, "bad_type", "messages"),
    ({"messages": [U("q"), {"role": "assistant", "content": 3}]}, "bad_type",
     "messages[1].content"),
    ({"instruction": "i", "output": ["o"]}, "bad_type", "output"),
    ({"messages": [U("q"), A("r")], "id": {"a": 1}}, "bad_type", "id"),
    ({"messages": [A("r"), U("q")]}, "wrong_role_order", "messages[0].role"),
    ({"messages": [S("s"), U("q"), U("q2"), A("r")]}, "wrong_role_order", "messages[2].role"),
    ({"messages": [U("q"), A("r"), U("q2")]}, "wrong_role_order", "messages[2].role"),
    ({"messages": [U("q"), A("r"), S("late")]}, "wrong_role_order", "messages[2].role"),
    ({"messages": [U("q"), {"role": "tool", "content": "t"}]}, "wrong_role_order",
     "messages[1].role"),
    ({"messages": [U("q"), A("  \n")]}, "empty_response", "messages[1].content"),
    ({"instruction": "i", "output": ""}, "empty_response", "output"),
    ({"prompt": "p", "completion": [A(" ")]}, "empty_response", "completion[0].content"),
]


@pytest.mark.parametrize("bad,reason,field", BAD_CASES)
def test_bad_record_raises_with_location(tmp_path, bad, reason, field):
    # The bad record is line 3, after a good record of the same format and a blank line.
    first = {"instruction": "ok", "output": "ok"} if isinstance(bad, dict) and \
        ("instruction" in bad) else good_msg(1)
    if isinstance(bad, dict) and "prompt" in bad:
        first = {"prompt": "ok", "completion": "ok"}
    p = write_lines(tmp_path / "badfile.jsonl", [first, "", bad, good_msg(9)])
    err = load_error(p)
    assert err.reason == reason
    assert err.file == str(p) and err.line == 3 and err.field == field
    msg = str(err)
    assert "badfile.jsonl" in msg and ":3" in msg
    if field:
        assert f"'{field}'" in msg


def test_duplicate_id_across_files(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [good_msg(1), good_msg(2)])
    b = write_lines(tmp_path / "b.jsonl", [good_msg(3), good_msg(2)])
    err = load_error([a, b])
    assert err.reason == "duplicate_id" and err.field == "id"
    assert err.file == str(b) and err.line == 2
    msg = str(err)
    assert "b.jsonl:2" in msg and "'id'" in msg and "'m2'" in msg
    assert "line 2 of" in msg and "a.jsonl" in msg     # names the first occurrence


def test_duplicate_content_without_id(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [{"instruction": "i", "output": "o"}] * 2)
    err = load_error(p)
    assert err.reason == "duplicate_id" and err.line == 2 and "line 1" in str(err)
    samples, report = load_pool(p, on_error="skip")
    assert len(samples) == 1 and report.skipped == {"duplicate_id": 1}


# --- skip policy --------------------------------------------------------------------------

def test_skip_counts_and_keeps_good_lines(tmp_path):
    p = write_lines(tmp_path / "mixed.jsonl", [
        '{"broken json',                                   # 1 invalid_json (first line bad)
        good_msg(1),                                       # 2
        {"messages": [U("q"), A("")]},                     # 3 empty_response
        good_msg(2),                                       # 4
        b'{"id": "\xff"}',                                 # 5 non_utf8
        {"messages": [A("r"), U("q")]},                    # 6 wrong_role_order
        "",                                                # 7 blank: not counted
        {"messages": "x"},                                 # 8 bad_type
        {"instruction": "i", "output": "o"},               # 9 missing_field (messages)
        good_msg(1),                                       # 10 duplicate_id
        good_msg(3),                                       # 11
    ])
    samples, report = load_pool(p, on_error="skip")
    assert [(s.id, s.line) for s in samples] == [("m1", 2), ("m2", 4), ("m3", 11)]
    assert report.skipped == {"invalid_json": 1, "empty_response": 1, "non_utf8": 1,
                              "wrong_role_order": 1, "bad_type": 1, "missing_field": 1,
                              "duplicate_id": 1}
    assert report.formats == {str(p): "messages"} and report.n_loaded == 3
    assert len(report.examples) == 7 and report.examples[0].startswith(f"{p}:1")
    d = report.to_dict()
    assert d["n_loaded"] == 3 and d["skipped"]["non_utf8"] == 1
    json.dumps(d)


def test_skip_detects_from_first_good_record(tmp_path):
    # First record is detectable but bad; the next one is undetectable; then a good alpaca.
    p = write_lines(tmp_path / "late.jsonl", [
        {"instruction": "i"},
        {"foo": 1},
        {"instruction": "i2", "output": "o2"},
    ])
    samples, report = load_pool(p, on_error="skip")
    assert report.formats[str(p)] == "alpaca"
    assert [s.line for s in samples] == [3]
    assert report.skipped == {"missing_field": 2}
    # Under raise, the first record fails.
    assert load_error(p).reason == "missing_field"


def test_skip_examples_capped(tmp_path):
    p = write_lines(tmp_path / "many.jsonl", [good_msg(0)] + ["not json"] * 30)
    samples, report = load_pool(p, on_error="skip")
    assert len(samples) == 1 and report.skipped == {"invalid_json": 30}
    assert len(report.examples) == 20


def test_skip_file_with_no_parseable_record_raises(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [good_msg(1)])
    junk = write_lines(tmp_path / "junk.jsonl", ["nope", "[1]"])
    err = load_error([good, junk], on_error="skip")
    assert err.reason == "unknown_format" and "junk.jsonl" in str(err)


# --- arguments and whole-pool errors ------------------------------------------------------

def test_bad_on_error(tmp_path):
    p = write_lines(tmp_path / "x.jsonl", [good_msg(1)])
    with pytest.raises(ValueError, match="'raise'.*'skip'"):
        load_pool(p, on_error="ignore")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_pool(missing)


def test_empty_pool_and_empty_file(tmp_path):
    bad_only = write_lines(tmp_path / "bad.jsonl", [{"messages": [U("q"), A("")]}])
    err = load_error(bad_only, on_error="skip")
    assert err.reason == "empty_pool" and "empty" in str(err)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    assert load_error(blank).reason == "empty_file"
    with pytest.raises(ValueError):
        load_pool([])


# --- write back ---------------------------------------------------------------------------

def test_write_jsonl_roundtrip(tmp_path):
    recs = [{"instruction": "é", "input": "", "output": "o", "extra": [1]},
            {"instruction": "i2", "output": "o2"}]
    src = write_lines(tmp_path / "in.jsonl", recs)
    samples, _ = load_pool(src)
    out = tmp_path / "sub" / "out.jsonl"
    write_jsonl(samples, out)
    assert [json.loads(l) for l in out.read_text("utf-8").splitlines()] == recs
    assert "é" in out.read_text("utf-8")
    assert sorted(x.name for x in out.parent.iterdir()) == ["out.jsonl"]   # no temp left
    gz = tmp_path / "out.jsonl.gz"
    write_jsonl(samples[:1], gz)
    again, _ = load_pool(gz)
    assert again[0].raw == recs[0] and again[0].messages == samples[0].messages


def test_report_type():
    r = LoadReport()
    assert r.to_dict() == {"formats": {}, "n_loaded": 0, "skipped": {}, "examples": []}
