"""Tests for leadsel.data.bundled: the pool built from data shipped in installed packages."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from leadsel.data import bundled
from leadsel.data.bundled import BundledPoolConfig, build_bundled_pool, config_fingerprint, iter_json_array
from leadsel.data.load import write_records
from leadsel.data.overlap import check_disjoint, content_key


def words(s: str) -> int:
    return len(s.split())


SMALL = dict(size=40, eval_per_source=5, val_per_source=3, max_tokens=256)
EXPECTED_POOL = {"sharegpt": 24, "chatterbot": 6, "chitchat": 6, "champ": 4}  # 0.6/.15/.15/.1


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def all_files(res) -> list[Path]:
    return [res.pool, *res.evals.values(), *res.vals.values()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return build_bundled_pool(BundledPoolConfig(**SMALL), words, cache, "words", progress=False)


# --------------------------------------------------------------------------- iter_json_array

def test_iter_json_array_recovers_complete_records_of_truncated_array():
    text = ('[\n {"id": "a", "v": [1, 2]},\n {"id": "b", "s": "x, ]"} ,\n "str", 7,\n'
            ' {"id": "c", "t": "tru')
    assert list(iter_json_array(text)) == [{"id": "a", "v": [1, 2]}, {"id": "b", "s": "x, ]"},
                                           "str", 7]


@pytest.mark.parametrize("text,expected", [
    ("[1, 2, 3]", [1, 2, 3]),
    ("  [ ]  ", []),
    ("[", []),
    ('[{"a": 1},', [{"a": 1}]),
    ('[{"a": 1}', [{"a": 1}]),
    ("[1, 2, 12", [1, 2]),          # a number at the very end may be cut short: dropped
    ('[true, null, "x"', [True, None, "x"]),
    ('[1, 2]  trailing', [1, 2]),
])
def test_iter_json_array_edges(text, expected):
    assert list(iter_json_array(text)) == expected


@pytest.mark.parametrize("text", ['{"a": 1}', "", "[1 2]"])
def test_iter_json_array_rejects_non_arrays(text):
    with pytest.raises(ValueError):
        list(iter_json_array(text))


def test_content_key_normalises_case_and_whitespace():
    assert content_key("  Hello\n\tWorld ", "OK  then") == content_key("hello world", "ok then")
    assert content_key("a", "b c") != content_key("a b", "c")   # the separator keeps sides apart


# --------------------------------------------------------------------------- the build

def test_counts_per_source_and_total(small):
    pool = read(small.pool)
    assert len(pool) == 40
    by_src = {s: sum(r["source"] == s for r in pool) for s in EXPECTED_POOL}
    assert by_src == EXPECTED_POOL
    assert set(small.evals) == {"sharegpt", "chatterbot", "chitchat", "champ", "humaneval"}
    assert set(small.vals) == set(EXPECTED_POOL)
    for s, p in small.evals.items():
        recs = read(p)
        assert len(recs) == 5 and {r["source"] for r in recs} == {s}
        assert p.name == f"eval_{s}.jsonl"
    for s, p in small.vals.items():
        recs = read(p)
        assert len(recs) == 3 and {r["source"] for r in recs} == {s}
        assert p.name == f"val_{s}.jsonl"
    st = small.stats
    assert st["pool_total"] == 40
    for s, n in EXPECTED_POOL.items():
        assert st["sources"][s]["pool"] == n
        assert st["sources"][s]["eval"] == 5 and st["sources"][s]["val"] == 3
        assert st["sources"][s]["candidates"] >= 5 + 3 + n
    assert st["sources"]["humaneval"]["raw_pairs"] == 164
    assert json.loads((small.pool.parent / "stats.json").read_text()) == st


def test_record_format_and_length_limit(small):
    for p in all_files(small):
        for r in read(p):
            assert set(r) == {"id", "source", "messages"}
            assert r["id"].startswith(r["source"] + "-")
            (u, a) = r["messages"]
            assert u["role"] == "user" and a["role"] == "assistant"
            assert u["content"].strip() and a["content"].strip()
            assert words(u["content"]) + words(a["content"]) <= 256


def test_humaneval_only_in_evals(small):
    assert all(r["source"] != "humaneval" for r in read(small.pool))
    assert "humaneval" not in small.vals
    assert all(r["source"] != "humaneval" for p in small.vals.values() for r in read(p))
    gz = bundled._package_path(*bundled._HUMANEVAL_FILE)
    with gzip.open(gz, "rt", encoding="utf-8") as fh:
        probs = {json.loads(l)["task_id"]: json.loads(l) for l in fh if l.strip()}
    for r in read(small.evals["humaneval"]):
        tid = r["id"][len("humaneval-"):].replace("-", "/")
        u, a = r["messages"]
        assert u["content"] == bundled.HUMANEVAL_INSTRUCTION + probs[tid]["prompt"]
        assert a["content"] == probs[tid]["canonical_solution"]


def test_splits_disjoint_by_id_and_content(small):
    files = all_files(small)
    check_disjoint(small.pool, files[1:])
    seen_ids, seen_keys = set(), set()
    for p in files:
        for r in read(p):
            u, a = r["messages"]
            k = content_key(u["content"], a["content"])
            assert r["id"] not in seen_ids, r["id"]
            assert k not in seen_keys, r["id"]
            seen_ids.add(r["id"])
            seen_keys.add(k)
    assert len(seen_ids) == 40 + 5 * 5 + 3 * 4


def test_deterministic_and_seed_dependent(small, tmp_path):
    again = build_bundled_pool(BundledPoolConfig(**SMALL), words, tmp_path / "a", "words",
                               progress=False)
    assert again.pool != small.pool   # really rebuilt in another cache dir
    for p, q in zip(all_files(small), all_files(again)):
        assert p.name == q.name and p.read_bytes() == q.read_bytes()
    other = build_bundled_pool(BundledPoolConfig(**SMALL, seed=1), words, tmp_path / "a",
                               "words", progress=False)
    assert other.pool.parent != again.pool.parent
    assert other.pool.read_bytes() != again.pool.read_bytes()
    assert {r["id"] for r in read(other.pool)} != {r["id"] for r in read(again.pool)}
    assert sum(r["source"] == "sharegpt" for r in read(other.pool)) == 24


def test_cache_reused_without_rebuild(small, monkeypatch):
    cache = small.pool.parent.parent
    mtimes = {p: p.stat().st_mtime_ns for p in small.pool.parent.iterdir()}

    def boom(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(bundled, "_candidates", boom)
    res = build_bundled_pool(BundledPoolConfig(**SMALL), words, cache, "words", progress=False)
    assert res.pool == small.pool and res.evals == small.evals and res.vals == small.vals
    assert res.stats == small.stats
    assert {p: p.stat().st_mtime_ns for p in small.pool.parent.iterdir()} == mtimes
    # a different tokenizer name is a different cache entry -> would rebuild
    with pytest.raises(AssertionError, match="rebuilt"):
        build_bundled_pool(BundledPoolConfig(**SMALL), words, cache, "other", progress=False)
    fp = config_fingerprint(BundledPoolConfig(**SMALL), "words")
    assert small.pool.parent.name == f"bundled-{fp}"
    assert config_fingerprint(BundledPoolConfig(**SMALL), "a") != \
        config_fingerprint(BundledPoolConfig(**SMALL), "b")


def test_failed_build_leaves_no_directory(tmp_path, monkeypatch):
    real = bundled.write_records
    calls = []

    def flaky(path, recs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, recs)

    monkeypatch.setattr(bundled, "write_records", flaky)
    with pytest.raises(OSError, match="disk full"):
        build_bundled_pool(BundledPoolConfig(**SMALL), words, tmp_path, "words", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_mix_normalised_and_last_source_absorbs_rounding(tmp_path):
    cfg = BundledPoolConfig(size=10, mix={"champ": 2.0, "sharegpt": 1.0}, eval_per_source=2,
                            val_per_source=1)
    res = build_bundled_pool(cfg, words, tmp_path, "words", progress=False)
    pool = read(res.pool)
    assert len(pool) == 10
    # POOL_SOURCES order: sharegpt first (round(10/3) = 3), champ last absorbs -> 7
    assert sum(r["source"] == "sharegpt" for r in pool) == 3
    assert sum(r["source"] == "champ" for r in pool) == 7
    assert set(res.vals) == {"sharegpt", "champ"}
    assert set(res.evals) == {"sharegpt", "champ", "humaneval"}


# --------------------------------------------------------------------------- check_disjoint

def _write(path: Path, recs: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "source": "t", "messages": [
        {"role": "user", "content": u}, {"role": "assistant", "content": a}]}) + "\n"
        for i, u, a in recs), encoding="utf-8")
    return path


def test_check_disjoint_raises_on_overlap(tmp_path):
    pool = _write(tmp_path / "pool.jsonl", [("p1", "What is 2+2?", "4"), ("p2", "Hi", "Hello")])
    clean = _write(tmp_path / "clean.jsonl", [("e1", "What is 3+3?", "6")])
    same_content = _write(tmp_path / "c.jsonl", [("e2", "  what IS 2+2?\n", " 4 ")])
    same_id = _write(tmp_path / "i.jsonl", [("p2", "Different", "content")])
    check_disjoint(pool, [clean])
    check_disjoint(pool, [])
    with pytest.raises(ValueError, match="content"):
        check_disjoint(pool, [clean, same_content])
    with pytest.raises(ValueError, match="'p2'"):
        check_disjoint(pool, [same_id])
    with pytest.raises(ValueError):
        check_disjoint(str(pool), str(same_content))   # a single path is accepted too


def test_plant_noise_swaps_responses_along_the_drawn_cycle():
    pool = [bundled._record(f"p{i}", "s", f"user {i}", f"answer {i}") for i in range(5)]
    out = bundled.plant_noise(pool, 0.6, seed=0)   # round(0.6 x 5) = 3 samples
    import numpy as np
    drawn = np.random.default_rng([0, bundled.NOISE_STREAM]).choice(5, size=3, replace=False)
    for j, i in enumerate(drawn):   # sample drawn[j] keeps its prompt and takes drawn[j+1]'s answer
        nxt = drawn[(j + 1) % 3]
        assert out[i] == bundled._record(f"p{i}~swapped", "s", f"user {i}", f"answer {nxt}")
    for i in set(range(5)) - set(drawn.tolist()):
        assert out[i] == pool[i]
    assert bundled.plant_noise(pool, 0.0, seed=0) == pool


def test_noisy_pool_marks_its_noise_and_keeps_the_held_out_splits(small, tmp_path):
    noisy = build_bundled_pool(BundledPoolConfig(**SMALL, noise=0.25), words, tmp_path, "words", progress=False)
    clean, dirty = read(small.pool), read(noisy.pool)
    marked = [r for r in dirty if r["id"].endswith("~swapped")]
    assert len(marked) == 10 == noisy.stats["noise"]   # round(0.25 x 40)
    by_id = {r["id"]: r for r in clean}
    answers = {r["messages"][1]["content"] for r in clean}
    for r in marked:   # the prompt and source of the clean sample, an answer of another one
        orig = by_id[r["id"].removesuffix("~swapped")]
        assert r["source"] == orig["source"] and r["messages"][0] == orig["messages"][0]
        assert r["messages"][1]["content"] != orig["messages"][1]["content"]
        assert r["messages"][1]["content"] in answers
    assert [r for r in dirty if r not in marked] == [r for r in clean if r["id"] + "~swapped" not in {m["id"] for m in marked}]
    for s in small.evals:
        assert noisy.evals[s].read_bytes() == small.evals[s].read_bytes()
    # a pool without noise keeps its cache key from before the option existed (the code of commit c3def38 gave this)
    assert config_fingerprint(BundledPoolConfig(**SMALL), "words") == "5fa348cf3d45d931"
    assert config_fingerprint(BundledPoolConfig(**SMALL, noise=0.25), "words") != "5fa348cf3d45d931"


# --------------------------------------------------------------------------- bad configs

@pytest.mark.parametrize("kwargs,match", [
    (dict(mix={"alpaca": 1.0}), "known sources: sharegpt, chatterbot, chitchat, champ"),
    (dict(mix={"humaneval": 1.0}), "evaluation-only"),
    (dict(mix={"sharegpt": 0.0, "champ": 1.0}), "> 0"),
    (dict(mix={"sharegpt": -1.0}), "> 0"),
    (dict(mix={"sharegpt": float("nan")}), "> 0"),
    (dict(mix={}), "non-empty"),
    (dict(size=0), "size"),
    (dict(eval_per_source=-1), "eval_per_source"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(seed=-1), "seed"),
    (dict(noise=1.0), r"noise must be a number in \[0, 1\)"),
    (dict(noise=0.01), r"round\(0.01 x 40\) = 0 samples: swapping needs at least 2"),
    (dict(size=2, mix={"sharegpt": 1, "chatterbot": 1, "chitchat": 1, "champ": 0.001}),
     "too small"),
])
def test_bad_config(tmp_path, kwargs, match):
    cfg = BundledPoolConfig(**{**SMALL, **kwargs})
    with pytest.raises(ValueError, match=match):
        build_bundled_pool(cfg, words, tmp_path, "words", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_too_few_candidates_names_source_and_counts(tmp_path):
    cfg = BundledPoolConfig(size=40, eval_per_source=200, val_per_source=100)
    with pytest.raises(ValueError, match=r"'champ' has \d+ candidates .* needs 304"):
        build_bundled_pool(cfg, words, tmp_path, "words", progress=False)
    assert not any(p.name.startswith("bundled-") for p in tmp_path.iterdir())


def test_jsonl_lines_escape_unicode_line_breaks(tmp_path):
    rec = {"id": "x", "source": "t", "messages": [
        {"role": "user", "content": "a\u2028b\x85c"},
        {"role": "assistant", "content": "d\u2029é"}]}
    p = tmp_path / "f.jsonl"
    write_records(p, [rec, rec])
    text = p.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and "é" in text
    assert [json.loads(l) for l in text.splitlines()] == [rec, rec]
