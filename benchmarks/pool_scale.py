"""Time and peak memory of loading a large pool: ``leadsel validate`` on generated pools of 100k,
300k and 600k samples, cold (building the token store) and warm (opening it), in one run.

    python benchmarks/pool_scale.py [--sizes 100000,300000,600000] [--work DIR] [--out FILE.json]

The pools are written by this script (``--work``, default a temporary folder; kept there between
runs, so a second run of the script reuses them): messages-format JSONL, 8 sources, ids ``s0...``,
about 150 tokens per sample under the bundled SmolLM2 tokenizer (a user turn of 35 words and an
assistant turn of 75, each word one of the tokenizer's own single-token words, drawn with Zipf
frequencies -- word r of the vocabulary, in merge order, with weight 1/(r + 3) -- as in natural
text, so the tokenizer's word cache behaves as it does on real data; uniform draws over ~20k words
defeat that cache and tokenized several times slower per token than real text in a trial here). Every measurement is a fresh ``leadsel
validate`` process; its peak resident set is the process's own high-water mark (``VmHWM`` in
``/proc/self/status``, read as it exits: the figure ``/usr/bin/time -v`` reports, without the
parent's memory that a forked child's ``ru_maxrss`` starts from). The token store goes to a cache
folder of its own, emptied before each cold run; the converted bundled model stays in the usual
cache.

Printed: per size, the samples, tokens, file size, cold and warm seconds and peak RSS; the
least-squares slope of peak RSS against samples (bytes per sample) beside the issue's budget
(8 bytes per token plus 200 per sample, at the pools' tokens per sample) and the targets for the
600k pool (cold <= 180 s, <= 1.5 GB; warm in seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOURCES = ["alpaca", "dolly", "flan", "oasst", "sharegpt", "cot", "code", "math"]
USER_WORDS, ASSISTANT_WORDS = 35, 75


def vocabulary() -> list[str]:
    """Single-token words of the bundled tokenizer (space-prefixed, letters only, 3-10 long)."""
    from leadsel.model.load import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("bundled:smollm2-135m", None))
    vocab = tok.get_vocab()
    words = [t for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and t[1:].isascii() and 3 <= len(t) - 1 <= 10]
    return [t[1:] for t in sorted(words, key=vocab.get)]   # merge order: the most frequent first


def write_pool(path: Path, n: int, words: list[str], seed: int = 0) -> None:
    """``n`` samples of generated text; written in blocks, atomically (temp file, rename)."""
    rng = np.random.default_rng(seed)
    vocab = np.asarray(words, dtype=object)
    weights = 1.0 / (np.arange(len(words)) + 3.0)
    cdf = np.cumsum(weights / weights.sum())
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            u = vocab[np.searchsorted(cdf, rng.random((m, USER_WORDS)))]
            a = vocab[np.searchsorted(cdf, rng.random((m, ASSISTANT_WORDS)))]
            src = rng.integers(0, len(SOURCES), size=m)
            lines = []
            for j in range(m):
                lines.append(json.dumps({"id": f"s{start + j}", "source": SOURCES[src[j]], "messages": [
                    {"role": "user", "content": " ".join(u[j]).capitalize() + "?"},
                    {"role": "assistant", "content": " ".join(a[j]).capitalize() + "."}]}))
            fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def validate(pool: Path, cache: Path) -> dict:
    """One ``leadsel validate`` process: its seconds, peak RSS (its VmHWM) and report."""
    from leadsel.utils import cache_root

    hwm = ("import atexit, sys\n"
           "def _hwm():\n"
           "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
           "    print('VMHWM_KB', kb, file=sys.stderr)\n"
           "atexit.register(_hwm)\n"
           "from leadsel.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", hwm, "validate", f"data.paths=[{pool}]", f"cache_dir={cache}",
           f"model.cache_dir={cache_root()}", "progress=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"leadsel validate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    kb = int(proc.stderr.split("VMHWM_KB")[-1].split()[0])
    text = proc.stdout
    return {"seconds": seconds, "peak_rss_bytes": kb * 1024, "report": json.loads(text[text.index("{"):])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,300000,600000")
    ap.add_argument("--work", default=None, help="folder for the generated pools (kept; default: a temporary one)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="leadsel-pool-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    words = vocabulary()
    rows = []
    for n in sizes:
        pool = work / f"pool-{n}.jsonl"
        if not pool.is_file():
            t0 = time.perf_counter()
            write_pool(pool, n, words)
            print(f"wrote {pool.name} ({pool.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        cache = work / f"cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        cold = validate(pool, cache)
        warm = validate(pool, cache)
        enc = cold["report"]["encoding"]
        row = {"samples": n, "tokens": enc["tokens_total"], "file_mb": pool.stat().st_size / 1e6,
               "cold_s": cold["seconds"], "cold_rss_gb": cold["peak_rss_bytes"] / 1e9,
               "warm_s": warm["seconds"], "warm_rss_gb": warm["peak_rss_bytes"] / 1e9,
               "store_mb": sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6}
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    print("\n| samples | tokens | file MB | cold s | cold peak RSS GB | warm s | warm peak RSS GB | store MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['samples']:,} | {r['tokens']:,} | {r['file_mb']:.0f} | {r['cold_s']:.1f} | {r['cold_rss_gb']:.2f} "
              f"| {r['warm_s']:.1f} | {r['warm_rss_gb']:.2f} | {r['store_mb']:.0f} |")
    fit = {}
    if len(rows) >= 2:
        x = np.asarray([r["samples"] for r in rows], dtype=float)
        y = np.asarray([r["cold_rss_gb"] * 1e9 for r in rows])
        slope, intercept = np.polyfit(x, y, 1)
        tps = float(np.mean([r["tokens"] / r["samples"] for r in rows]))
        budget = 8 * tps + 200
        fit = {"bytes_per_sample": slope, "intercept_gb": intercept / 1e9, "tokens_per_sample": tps,
               "budget_bytes_per_sample": budget}
        print(f"\npeak RSS slope: {slope:.0f} bytes per sample (intercept {intercept / 1e9:.2f} GB); budget at "
              f"{tps:.0f} tokens per sample: 8 x {tps:.0f} + 200 = {budget:.0f} bytes per sample")
    big = max(rows, key=lambda r: r["samples"])
    print(f"largest pool ({big['samples']:,}): cold {big['cold_s']:.0f} s (target <= 180), peak {big['cold_rss_gb']:.2f} GB "
          f"(target <= 1.5); warm {big['warm_s']:.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "fit": fit}, indent=2) + "\n")


if __name__ == "__main__":
    main()
