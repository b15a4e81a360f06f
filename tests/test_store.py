"""The token store: a pool streamed once onto disk, opened by fingerprint, records read back from
their files; the compact id and source columns it holds."""
from __future__ import annotations

import json

import numpy as np
import pytest

import leadsel.data.store as store_mod
from leadsel.data.columns import Labels, Strings
from leadsel.data.encode import encode
from leadsel.data.load import load_pool
from leadsel.data.overlap import check_heldout
from leadsel.data.records import DataError
from leadsel.data.store import Encoding, open_store

ENC = Encoding(max_length=24)


def pool_records(n=40):
    words = ["hi", "hello", "there", "how", "are", "you", "fine", "thanks", "one", "two", "three"]
    return [{"instruction": " ".join(words[(k + j) % len(words)] for j in range(1 + k % 6)),
             "output": " ".join(words[(2 * k + j) % len(words)] for j in range(1 + k % 4)),
             "id": f"r{k}", "source": ["alpha", "beta", "gamma"][k % 3]} for k in range(n)]


def write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_store_equals_the_in_memory_encoding(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(store_mod, "BATCH", 7)   # several batches, a last one part-full
    recs = pool_records(40)
    recs[5]["output"] = "hi " * 30 + "there"        # over max_length: truncated from the left
    p = write(tmp_path / "pool.jsonl", recs)
    st = open_store([p], tok, ENC, tmp_path / "cache")
    mem = encode(load_pool(p)[0], tok, 24)
    pool = st.pool
    assert isinstance(pool.tokens, np.memmap) and pool.tokens.dtype == np.int32
    assert np.array_equal(pool.tokens, mem.tokens) and np.array_equal(pool.supervised, mem.supervised)
    assert np.array_equal(pool.offsets, mem.offsets) and pool.ids == mem.ids and pool.sources == mem.sources
    assert st.encoding_report == mem.report() and st.encoding_report["truncated"] == 1
    assert st.load_report.n_loaded == 40 and st.load_report.formats == {str(p): "alpaca"}


def test_second_open_reads_the_store_and_a_changed_file_builds_anew(tmp_path, tok, monkeypatch):
    p = write(tmp_path / "pool.jsonl", pool_records(10))
    first = open_store([p], tok, ENC, tmp_path / "cache")
    monkeypatch.setattr(store_mod, "_build", lambda *a, **k: pytest.fail("rebuilt an existing store"))
    again = open_store([p], tok, ENC, tmp_path / "cache")
    assert again.root == first.root and again.pool.fingerprint() == first.pool.fingerprint()
    monkeypatch.undo()
    write(p, pool_records(11))
    changed = open_store([p], tok, ENC, tmp_path / "cache")
    assert changed.root != first.root and len(changed.pool) == 11
    other = open_store([p], tok, Encoding(max_length=8), tmp_path / "cache")
    assert other.root != changed.root


def test_records_are_read_back_in_their_input_schema_and_order(tmp_path, tok):
    recs = pool_records(30)
    p = write(tmp_path / "a.jsonl", recs[:20])
    q = tmp_path / "b.json"
    q.write_text(json.dumps(recs[20:], indent=2))
    st = open_store([p, q], tok, ENC, tmp_path / "cache")
    pick = [25, 3, 19, 20, 0]
    assert st.records(pick) == [recs[k] for k in pick]
    assert [s.id for s in st.samples(pick)] == [f"r{k}" for k in pick]
    streamed = [s.id for batch in st.iter_samples(batch=4) for s in batch]
    assert streamed == [f"r{k}" for k in range(30)]


def test_rejected_samples_are_left_out_of_the_columns(tmp_path, tok):
    recs = pool_records(12)
    recs[4]["output"] = "hi " * 40           # too long under truncation=drop
    p = write(tmp_path / "pool.jsonl", recs)
    st = open_store([p], tok, Encoding(max_length=24, truncation="drop"), tmp_path / "cache")
    assert len(st.pool) == 11 and "r4" not in list(st.pool.ids)
    assert st.encoding_report["rejected"] == {"too_long": 1} and st.encoding_report["rejected_ids_first"] == ["r4"]
    assert st.records([4])[0]["id"] == "r5" and st.pool.index.tolist()[4] == 5


def test_a_file_changed_after_loading_is_named(tmp_path, tok):
    p = write(tmp_path / "pool.jsonl", pool_records(6))
    st = open_store([p], tok, ENC, tmp_path / "cache")
    write(p, [dict(r, id=f"other{k}") for k, r in enumerate(pool_records(6))])   # same lengths' line starts differ
    with pytest.raises(DataError) as info:
        st.samples([2])
    assert info.value.reason == "changed_file"


def test_response_alone_encoding(tmp_path, tok):
    p = write(tmp_path / "pool.jsonl", pool_records(9))
    st = open_store([p], tok, ENC, tmp_path / "cache")
    alone = st.alone(tok, ENC)
    mem = encode(load_pool(p)[0], tok, 24, alone=True)
    assert np.array_equal(alone.tokens, mem.tokens) and np.array_equal(alone.offsets, mem.offsets)
    assert alone.ids == st.pool.ids
    assert st.alone(tok, ENC).fingerprint() == alone.fingerprint()   # the second call opens it


def test_failed_build_leaves_nothing(tmp_path, tok):
    recs = pool_records(5) + [{"instruction": "x"}]
    p = write(tmp_path / "pool.jsonl", recs)
    with pytest.raises(DataError):
        open_store([p], tok, ENC, tmp_path / "cache")
    assert list((tmp_path / "cache" / "pools").iterdir()) == []


def test_heldout_overlap_is_found_by_hash_and_confirmed(tmp_path, tok):
    p = write(tmp_path / "pool.jsonl", pool_records(10))
    st = open_store([p], tok, ENC, tmp_path / "cache")
    same_id = write(tmp_path / "e1.jsonl", [{"instruction": "new words", "output": "hi", "id": "r3"}])
    with pytest.raises(ValueError, match="shares 1 ids"):
        check_heldout(same_id, load_pool(same_id)[0], st)
    same_text = write(tmp_path / "e2.jsonl", [dict(pool_records(10)[7], id="fresh")])
    with pytest.raises(ValueError, match="1 samples whose content"):
        check_heldout(same_text, load_pool(same_text)[0], st)
    clean = write(tmp_path / "e3.jsonl", [{"instruction": "seven", "output": "six", "id": "e"}])
    check_heldout(clean, load_pool(clean)[0], st)


# --- columns ---------------------------------------------------------------------------

def test_strings_column_reads_like_a_list():
    xs = ["a", "", "héllo", "s10", "z"]
    col = Strings.of(xs)
    assert col.blob.nbytes == 1 + 0 + 6 + 3 + 1 and col.ends.tolist() == [1, 1, 7, 10, 11]
    assert len(col) == 5 and col[2] == "héllo" and col[-1] == "z" and list(col) == xs and col == xs
    assert col.take([3, 1, 2]).tolist() == ["s10", "", "héllo"] and col[1:3] == ["", "héllo"]
    assert Strings.of(list(col)) == col and col.digest() == Strings.of(xs).digest() != Strings.of(xs[::-1]).digest()
    assert col.to_arrow().to_pylist() == xs
    with pytest.raises(IndexError):
        col[5]


def test_labels_column():
    lab = Labels.of(["b", "a", "b", "c"])
    assert lab.names == ["a", "b", "c"] and lab.codes.tolist() == [1, 0, 1, 2]
    assert list(lab) == ["b", "a", "b", "c"] and lab[3] == "c" and lab.take([2, 1]).tolist() == ["b", "a"]
    assert lab.to_arrow().to_pylist() == ["b", "a", "b", "c"]
    assert np.asarray(lab).tolist() == ["b", "a", "b", "c"]


def test_records_check_the_record_found_is_the_sample(tmp_path, tok):
    recs = pool_records(6)
    p = write(tmp_path / "pool.jsonl", recs)
    st = open_store([p], tok, ENC, tmp_path / "cache")
    swapped = recs[:2] + [recs[3], recs[2]] + recs[4:]
    write(p, swapped)   # lines 2 and 3 swapped: sample 2's offset is now line 3's start, r3's record
    assert st.records([0, 1])[1] == recs[1]
    with pytest.raises(DataError) as info:
        st.records([2])
    assert info.value.reason == "changed_file" and "'r2'" in str(info.value)


def test_heldout_check_covers_samples_the_encoding_rejected(tmp_path, tok):
    recs = pool_records(8)
    recs[2]["output"] = "hi " * 40
    p = write(tmp_path / "pool.jsonl", recs)
    st = open_store([p], tok, Encoding(max_length=24, truncation="drop"), tmp_path / "cache")
    assert "r2" not in list(st.pool.ids)
    e = write(tmp_path / "e.jsonl", [dict(recs[2], id="other")])
    with pytest.raises(ValueError, match="content is also in the pool"):
        check_heldout(e, load_pool(e)[0], st)


def test_tokenize_leaves_a_truncating_backend_to_the_tokenizer(tok):
    from leadsel.data.encode import tokenize

    text = ["hi there how are you fine thanks"]
    plain = tokenize(tok, text)
    tok.backend_tokenizer.enable_truncation(3)
    assert tokenize(tok, text) == plain == tok(text, add_special_tokens=False)["input_ids"]
    assert len(plain[0]) == 7


def test_columns_take_a_boolean_mask():
    mask = np.array([True, False, True])
    assert Strings.of(["a", "b", "c"]).take(mask).tolist() == ["a", "c"]
    assert Labels.of(["a", "b", "c"]).take(mask).tolist() == ["a", "c"]
