"""The token store: a pool loaded, validated and encoded once, on disk, memory-mapped.

:func:`open_store` streams the pool's files through the loader (:func:`.load.iter_samples`) and the
encoder (:func:`.encode.encode_batch`) in batches and writes

    <cache>/pools/<fingerprint>/tokens.i32   token ids of every kept sample, back to back (4 B/token)
                                mask.u8      1 where the token is a label (1 B/token)
                                columns.npz  offsets, ids (UTF-8 blob + ends), their hashes, the
                                             content-key hashes, source codes, where each record is
                                meta.json    the files, formats, load and encoding reports

so that no process holds every record's text: what stays in memory is a few bytes per sample
(``columns.npz``) while the tokens are read from the page cache when a batch needs them. The
fingerprint covers the files' bytes, the tokenizer and chat template, the encoding settings and the
load policy, so a second run with the same inputs opens the store in seconds. The directory
appears whole or not at all (built under a temporary name, renamed at the end).

A record is found again by where the reader met it (:meth:`TokenStore.records`): ``selected.jsonl``
is written from the input files in their own schema, and the texts a method needs (IterIT's
responses, embeddings, the response-alone encoding for IFD) are read back from the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..utils import atomic_save_npz, atomic_write_json, fingerprint
from .columns import Labels, Strings
from .encode import EncodedPool, PoolBuilder, check_truncation, finish_batch, prepare_batch, tokenize
from .load import LoadReport, Seen, _as_paths, _make_sample, iter_samples, sources_of
from .overlap import sample_key
from .readers import Source, read_at, read_entries
from .records import DataError, Sample, id_hash

STORE_VERSION = 2
BATCH = 512            # samples per tokenizer call


@dataclass(frozen=True)
class Encoding:
    """How samples are encoded (``cfg.encoding``'s fields the tokens depend on)."""
    max_length: int
    supervise: str = "last"
    truncation: str = "left_prompt"
    alone: bool = False

    @classmethod
    def of(cls, encoding) -> "Encoding":
        """From a config's ``encoding`` section."""
        return cls(encoding.max_length, encoding.supervise, encoding.truncation)

    def stream(self, batches: Iterable[list[Sample]], tok, builder: PoolBuilder,
               kept: Callable[[list[Sample], list[int]], None] = lambda batch, js: None) -> None:
        """Encode ``batches`` into ``builder`` in order, tokenizing each batch in a second thread
        while the next is read and rendered (the tokenizer runs outside the GIL); ``kept(batch,
        positions)`` hears which samples of each batch were kept."""
        from concurrent.futures import ThreadPoolExecutor

        check_truncation(self.truncation)
        done = len(builder.lengths) + sum(builder.rejected.values())

        def finish(batch, prepared, tokens) -> None:
            nonlocal done
            results = finish_batch(prepared, tokens.result(), self.max_length, self.truncation)
            kept(batch, builder.add(batch, results, done))
            done += len(batch)

        with ThreadPoolExecutor(1) as worker:
            pending = None
            for batch in batches:
                prepared = prepare_batch(batch, tok, self.supervise, self.alone)
                tokens = worker.submit(tokenize, tok, prepared.texts)
                if pending is not None:
                    finish(*pending)
                pending = (batch, prepared, tokens)
            if pending is not None:
                finish(*pending)


def batched(items: Iterable, size: int = None) -> Iterator[list]:
    """``items`` in lists of ``size`` (default :data:`BATCH`)."""
    size = size or BATCH
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class TokenStore:
    """An opened store: the :class:`EncodedPool` (memory-mapped tokens) and where each sample came from."""

    def __init__(self, root: Path):
        self.root = root
        self.meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        self.sources = [Source(Path(s["path"]), s["kind"], s["label"], s["split"]) for s in self.meta["sources"]]
        with np.load(root / "columns.npz", allow_pickle=False) as z:
            c = {k: z[k] for k in z.files}
        self.file_no, self.pos, self.line = c["file_no"], c["pos"], c["line"]
        self.id_hash = c["id_hash"]            # the kept samples' ids'
        self.key_hash = c["loaded_key_hash"]   # every loaded sample's content key (rejected ones too)
        n_tokens = int(c["offsets"][-1])
        self.pool = EncodedPool(_mapped(root / "tokens.i32", np.int32, n_tokens),
                                _mapped(root / "mask.u8", np.bool_, n_tokens), c["offsets"], c["index"],
                                Strings(c["id_blob"], c["id_ends"]), Labels(c["source_codes"], self.meta["source_names"]),
                                dict(self.meta["encoding"]["rejected"]), list(self.meta["encoding"]["rejected_ids_first"]),
                                int(self.meta["encoding"]["truncated"]), stored_fingerprint=self.meta["pool_fingerprint"])

    @property
    def load_report(self) -> LoadReport:
        return LoadReport(**self.meta["load"])

    @property
    def encoding_report(self) -> dict:
        return dict(self.meta["encoding"])

    def records(self, indices) -> list[dict]:
        """The input records (their own schema) of pool positions ``indices``, in that order."""
        return [rec for rec, _ in self._read(indices)]

    def samples(self, indices) -> list[Sample]:
        """The samples at pool positions ``indices``, in that order, read back from their files."""
        return [s for _, s in self._read(indices)]

    def _read(self, indices) -> list[tuple[dict, Sample]]:
        """(record, sample) of each pool position, read back from the files and checked to still be
        that sample (its id)."""
        indices = np.asarray(indices, dtype=np.int64)
        by_file: dict[int, list[int]] = defaultdict(list)
        for i in indices.tolist():
            by_file[int(self.file_no[i])].append(i)
        found: dict[int, tuple[dict, Sample]] = {}
        for f, members in by_file.items():
            recs = read_at(self.sources[f], (self.pos[i] for i in members))
            for i in members:
                rec = recs.get(int(self.pos[i]))
                if rec is None:
                    raise DataError(self.sources[f].name, 0, None, f"sample {self.pool.ids[i]!r} is no longer in the "
                                    "file: it changed after it was loaded", "changed_file")
                found[i] = (rec, self._sample(i, rec))
        return [found[i] for i in indices.tolist()]

    def iter_samples(self, batch: int = BATCH) -> Iterator[list[Sample]]:
        """Every pool sample in pool order, read back from the files in one pass, ``batch`` at a time."""
        out: list[Sample] = []
        i, n = 0, len(self.pool)
        for f, src in enumerate(self.sources):
            if i >= n or int(self.file_no[i]) != f:
                continue
            for pos, _, rec in read_entries(src):
                if i < n and int(self.file_no[i]) == f and pos == int(self.pos[i]):
                    out.append(self._sample(i, rec))
                    i += 1
                    if len(out) == batch:
                        yield out
                        out = []
        if i != n:
            raise DataError(self.sources[int(self.file_no[i])].name, 0, None, f"only {i} of the pool's {n} samples were found again: "
                            "the pool's files changed while the run read them", "changed_file")
        if out:
            yield out

    def alone(self, tok, enc: Encoding, progress: bool = False) -> EncodedPool:
        """The pool's responses encoded without their prompts (for IFD), in pool order: streamed from
        the files into ``alone-<fingerprint>/`` inside the store once, memory-mapped after."""
        enc = replace(enc, alone=True)
        out = self.root / f"alone-{fingerprint(enc.__dict__, tokenizer_fingerprint(tok))}"
        if not (out / "offsets.npy").is_file():
            _publish(out, lambda tmp: self._build_alone(tmp, tok, enc, progress))
        offsets = np.load(out / "offsets.npy")
        n = int(offsets[-1])
        p = self.pool
        return EncodedPool(_mapped(out / "tokens.i32", np.int32, n), _mapped(out / "mask.u8", np.bool_, n), offsets,
                           p.index, p.ids, p.sources, stored_fingerprint=fingerprint(p.fingerprint(), out.name))

    def _build_alone(self, out: Path, tok, enc: Encoding, progress: bool) -> None:
        from tqdm.auto import tqdm

        with open(out / "tokens.i32", "wb") as tok_fh, open(out / "mask.u8", "wb") as mask_fh, \
                tqdm(total=len(self.pool), desc="encoding responses alone", unit="sample", dynamic_ncols=True,
                     disable=not progress) as bar:
            builder = PoolBuilder(_writer(tok_fh, mask_fh))

            def kept(batch: list[Sample], js: list[int]) -> None:
                if len(js) != len(batch):
                    raise RuntimeError("the response-alone encoding rejected samples the full encoding kept")
                bar.update(len(batch))
            enc.stream(self.iter_samples(), tok, builder, kept)
        np.save(out / "offsets.npy", builder.offsets())

    def _sample(self, i: int, rec) -> Sample:
        src = self.sources[int(self.file_no[i])]
        s = _make_sample(self._checked(i, rec), self.meta["load"]["formats"][src.name], src, int(self.pos[i]),
                         int(self.line[i]))
        if s.id != self.pool.ids[i]:
            raise DataError(src.name, 0, None, f"the record at position {int(self.pos[i])} now has id {s.id!r}, "
                            f"not {self.pool.ids[i]!r}: the file changed after it was loaded", "changed_file")
        return s

    def _checked(self, i: int, rec) -> dict:
        if isinstance(rec, DataError):
            raise DataError(rec.file, rec.line, None, f"reading sample {self.pool.ids[i]!r} back: {rec}; the file "
                            "changed after it was loaded", "changed_file")
        return rec


def _writer(tok_fh, mask_fh) -> Callable[[np.ndarray, np.ndarray], None]:
    """A PoolBuilder sink appending a batch's tokens (int32) and mask (uint8) to their files."""
    def sink(tokens: np.ndarray, mask: np.ndarray) -> None:
        tok_fh.write(tokens.tobytes())
        mask_fh.write(mask.astype(np.uint8).tobytes())
    return sink


def _mapped(path: Path, dtype, n: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)


def tokenizer_fingerprint(tok) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return fingerprint(type(tok).__name__, tok.chat_template, hashlib.sha256(vocab.encode()).hexdigest(),
                       tok.eos_token, tok.bos_token)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


def store_fingerprint(sources: list[Source], tok, enc: Encoding, fmt: str, on_error: str) -> str:
    files = [(s.name, s.kind, s.label, s.split, file_digest(s.path)) for s in sources]
    return fingerprint("token-store", STORE_VERSION, files, tokenizer_fingerprint(tok), enc.__dict__, fmt, on_error)


def open_store(paths, tok, enc: Encoding, cache: Path, *, fmt: str = "auto", on_error: str = "raise",
               split: str = "train", progress: bool = False) -> TokenStore:
    """The pool of ``paths`` as a :class:`TokenStore`: opened when one with the same fingerprint
    exists under ``cache/pools``, else built (streamed; progress bar in bytes with rate and ETA)."""
    paths = _as_paths(paths)
    sources = sources_of(paths, split)
    fp = store_fingerprint(sources, tok, enc, fmt, on_error)
    root = Path(cache) / "pools" / fp
    if not (root / "meta.json").is_file():
        _publish(root, lambda tmp: _build(tmp, paths, sources, tok, enc, fmt, on_error, split, progress, fp))
    return TokenStore(root)


def _publish(root: Path, build: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name beside ``root`` and rename it into place (another
    process that built the same one first wins: its copy is kept); nothing is left on failure."""
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(root.parent, root.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)   # mkdtemp's 0700 would hide a shared cache's store from other users
        build(tmp)
        try:
            os.replace(tmp, root)
        except OSError:
            if not root.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)   # built concurrently: keep that one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale(parent: Path, name: str, idle_s: float = 3600.0) -> None:
    """Remove what killed builds of ``name`` left: temporary directories unchanged for an hour (a
    live build appends to its files as it goes)."""
    import time

    for tmp in parent.glob(f".{name}.tmp-*"):
        try:
            newest = max([f.stat().st_mtime for f in tmp.iterdir()] + [tmp.stat().st_mtime])
        except OSError:   # removed meanwhile by another process
            continue
        if time.time() - newest > idle_s:
            shutil.rmtree(tmp, ignore_errors=True)


def _build(out: Path, paths, sources: list[Source], tok, enc: Encoding, fmt: str, on_error: str, split: str,
           progress: bool, fp: str) -> None:
    from tqdm.auto import tqdm

    report, seen = LoadReport(), Seen()
    total = sum(s.size() for s in sources)
    bar = tqdm(total=total, desc="loading and encoding the pool", unit="B", unit_scale=True, dynamic_ncols=True,
               disable=not progress)
    meter = (lambda n: bar.update(n - bar.n))
    names: dict[str, int] = {}
    codes, keys = array("i"), array("Q")   # per kept sample its source's code; per loaded one its content key's hash
    with open(out / "tokens.i32", "wb") as tok_fh, open(out / "mask.u8", "wb") as mask_fh:
        builder = PoolBuilder(_writer(tok_fh, mask_fh))

        def kept(batch: list[Sample], js: list[int]) -> None:
            keys.extend(id_hash(sample_key(s)) for s in batch)   # held-out sets must not share a rejected one either
            for j in js:
                codes.append(names.setdefault(batch[j].source, len(names)))
            bar.set_postfix(samples=len(seen), refresh=False)

        samples = iter_samples(paths, fmt=fmt, on_error=on_error, split=split, report=report, seen=seen, meter=meter)
        enc.stream(batched(samples), tok, builder, kept)
        bar.update(total - bar.n)
        bar.close()
    index = np.asarray(builder.index, dtype=np.int64)
    all_ids = Strings(np.frombuffer(bytes(seen.id_blob), dtype=np.uint8), np.frombuffer(seen.id_end, dtype=np.int64))
    ids = all_ids.take(index)
    # codes in the order the names were met -> codes into the sorted names (as Labels.of makes them)
    rank = {name: k for k, name in enumerate(sorted(names))}
    remap = np.asarray([rank[name] for name in sorted(names, key=names.get)], dtype=np.int32)
    source_codes = remap[np.frombuffer(codes, dtype=np.int32)] if len(codes) else np.zeros(0, np.int32)
    offsets = builder.offsets()
    atomic_save_npz(out / "columns.npz", offsets=offsets, index=index, id_blob=ids.blob, id_ends=ids.ends,
                    id_hash=np.frombuffer(seen.id_hash, dtype=np.uint64)[index],
                    loaded_key_hash=np.frombuffer(keys, dtype=np.uint64),
                    file_no=np.frombuffer(seen.file_no, dtype=np.int32)[index],
                    pos=np.frombuffer(seen.pos, dtype=np.int64)[index],
                    line=np.frombuffer(seen.line, dtype=np.int64)[index], source_codes=source_codes)
    encoding = builder.report()
    pool_fp = fingerprint("pool", fp, ids.digest())
    atomic_write_json(out / "meta.json", {
        "version": STORE_VERSION, "fingerprint": fp, "pool_fingerprint": pool_fp,
        "sources": [{"path": str(s.path), "kind": s.kind, "label": s.label, "split": s.split} for s in sources],
        "source_names": sorted(names), "load": report.to_dict(), "encoding": encoding,
        "encoding_settings": enc.__dict__})
