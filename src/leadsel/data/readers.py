"""Reading pool files entry by entry, whatever shape they come in, without holding a file in memory.

A pool path is expanded into :class:`Source` files (:func:`expand`):

* JSONL -- one JSON object per line; plain, gzip (``.gz``) or zstandard (``.zst``, needs the
  ``zstandard`` package), recognised by their magic bytes rather than their names;
* a JSON array of objects (``.json``, the shape of Stanford Alpaca's ``alpaca_data.json``),
  parsed element by element (a few MB of text held at a time, however long the file);
* Parquet files, and directories of Parquet shards (``data/train-00000-of-00004.parquet``, as
  datasets are published on the Hub): the shards of ``split`` when their names say which split
  they are, all of them otherwise; every shard is a file of its own for format detection;
* ``datasets`` directories saved with ``save_to_disk`` (a ``DatasetDict``'s ``split``).

:func:`read_entries` yields ``(pos, loc, record)`` per entry: ``pos`` finds the entry again
(:func:`read_at`; the line's byte offset in plain JSONL, else the entry's ordinal), ``loc`` is its
1-based line, or a :class:`~.records.Loc` element / row, and ``record`` is the parsed dict or the
:class:`~.records.DataError` that says why it is not one. A JSON array whose syntax breaks raises:
the elements after the break cannot be found, so skipping would lose them silently.
"""
from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

from .records import DataError, Loc

GZIP_MAGIC, ZSTD_MAGIC, PARQUET_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PAR1"
_DATASET_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
_CHUNK = 1 << 20
_TAIL = 64    # characters from a window's end within which a parse may have been cut by the window
_WS = re.compile(r"[ \t\n\r]*")

Entry = tuple[int, Union[int, Loc], Union[dict, DataError]]
UNITS = {"jsonl": "line", "json_array": "element", "parquet": "row", "dataset": "row"}


@dataclass(frozen=True)
class Source:
    """One file (or ``datasets`` directory) to read; ``label`` is the source name of its records
    when they carry none (the file's stem; for a directory of shards, the directory's name)."""
    path: Path
    kind: str          # jsonl | json_array | parquet | dataset
    label: str
    split: str = "train"

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def seekable(self) -> bool:
        """Entries found again by byte offset (plain JSONL), not by reading up to them."""
        magic = _magic(self.path)
        return self.kind == "jsonl" and magic[:2] != GZIP_MAGIC and magic != ZSTD_MAGIC

    def size(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


def label_of(path: Path) -> str:
    """A file's name without its data extensions: ``alpaca_gpt4.jsonl.gz`` -> ``alpaca_gpt4``."""
    name = path.name
    exts = (".gz", ".zst", ".jsonl", ".ndjson", ".json", ".parquet")
    while ext := next((e for e in exts if name.lower().endswith(e) and len(name) > len(e)), None):
        name = name[: -len(ext)]
    return name


def expand(path: str | Path, split: str = "train") -> list[Source]:
    """The files a pool path stands for (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pool path not found: {path}")
    if path.is_dir():
        if any((path / m).is_file() for m in _DATASET_MARKERS):
            return [Source(path, "dataset", path.name, split)]
        shards = _split_shards(sorted(p for p in path.rglob("*.parquet") if p.is_file()), split)
        if not shards:
            raise DataError(str(path), 0, None, "not a datasets directory (saved with save_to_disk) and holds no "
                            ".parquet files", "not_a_dataset")
        return [Source(p, "parquet", path.name) for p in shards]
    magic = _magic(path)
    if magic == PARQUET_MAGIC or path.suffix.lower() == ".parquet":
        return [Source(path, "parquet", label_of(path))]
    return [Source(path, _text_kind(path), label_of(path))]


_SPLITS = ("train", "test", "validation", "valid", "dev", "eval")


def _split_shards(shards: list[Path], split: str) -> list[Path]:
    """The shards named for ``split`` (``train-00000-of-00004.parquet``, ``train/0.parquet``);
    every shard when none is named for any split."""
    def split_of(p: Path) -> str | None:
        head = re.split(r"[-_.]", p.name, maxsplit=1)[0].lower()
        return head if head in _SPLITS else p.parent.name.lower() if p.parent.name.lower() in _SPLITS else None
    named = {p: split_of(p) for p in shards}
    if not any(named.values()):
        return shards
    mine = [p for p in shards if named[p] == split.lower()]
    if not mine:
        found = sorted({x for x in named.values() if x})
        raise DataError(str(shards[0].parent), 0, "split", f"no Parquet shards for split {split!r}; the shards "
                        f"name the splits {found}", "missing_split")
    return mine


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def _zstandard(path: Path):
    try:
        import zstandard
    except ImportError:
        raise DataError(str(path), 0, None, "the file is zstandard-compressed; reading it needs the zstandard "
                        "package (pip install zstandard)", "unknown_format") from None
    return zstandard


def _decompressed(raw_fh, path: Path):
    """``raw_fh``'s bytes, decompressed when its magic says gzip or zstandard."""
    magic = raw_fh.read(4)
    raw_fh.seek(0)
    if magic[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw_fh, mode="rb")
    if magic == ZSTD_MAGIC:
        return io.BufferedReader(_zstandard(path).ZstdDecompressor().stream_reader(raw_fh), _CHUNK)
    return raw_fh


def _text_kind(path: Path) -> str:
    """``json_array`` when the first character (after a BOM and whitespace) is ``[``, else ``jsonl``;
    a ``.json`` file that starts like neither is refused with what was expected."""
    with open(path, "rb") as raw_fh:
        head = _decompressed(raw_fh, path).read(4096).decode("utf-8", errors="replace")
    head = head.lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        return "json_array"
    name = path.name.lower()
    if ".json" in name and ".jsonl" not in name and head and not head.startswith("{"):
        raise DataError(str(path), 1, None, "expected a JSON array of records ([{...}, ...]) or one JSON object per "
                        f"line (JSONL); the file starts with {head[:20]!r}", "invalid_json")
    return "jsonl"


# --- entries --------------------------------------------------------------------------------

def read_entries(src: Source, meter: Callable[[int], None] | None = None) -> Iterator[Entry]:
    """Every entry of ``src`` in file order; ``meter(bytes)`` is told how far into the file
    (compressed bytes; for Parquet, the share of rows) reading has come."""
    readers = {"jsonl": _jsonl, "json_array": _json_array, "parquet": _parquet, "dataset": _dataset}
    return readers[src.kind](src, meter or (lambda n: None))


def _jsonl(src: Source, meter) -> Iterator[Entry]:
    with open(src.path, "rb") as raw_fh:
        fh = _decompressed(raw_fh, src.path)
        offset = 0
        for line_no, raw in enumerate(fh, start=1):
            pos, offset = offset, offset + len(raw)
            if line_no % 256 == 0:
                meter(raw_fh.tell())
            if raw.strip():
                yield pos, line_no, parse_line(raw, src.name, line_no)
        meter(raw_fh.tell())


def parse_line(raw: bytes, file: str, line: int) -> dict | DataError:
    """One JSONL line as a dict, or the DataError that names what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(file, line, None, f"the line is not valid UTF-8 (byte offset "
                         f"{e.start}: {raw[e.start:e.start + 4]!r})", "non_utf8")
    if line == 1:
        text = text.lstrip("\ufeff")
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        return DataError(file, line, None, f"invalid JSON: {e.msg} at column {e.colno}", "invalid_json")
    if not isinstance(rec, dict):
        return DataError(file, line, None, f"expected a JSON object, got {type(rec).__name__}", "invalid_json")
    return rec


class _Text:
    """A window on a decoded text stream, for the array parser: ``buf`` and the number of the line
    at buffer index ``mark`` (advanced as the parser moves on, so counting lines stays linear)."""

    def __init__(self, fh):
        self.reader = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict")
        self.buf, self.eof, self.mark, self.mark_line = "", False, 0, 1

    def drop(self, keep_from: int) -> None:
        """Forget the text before buffer index ``keep_from`` (parsed already)."""
        self.line_at(keep_from)
        self.buf, self.mark = self.buf[keep_from:], 0

    def more(self, keep_from: int) -> None:
        """Drop the text before ``keep_from`` and read on: at least a chunk, and as much again as is
        left unparsed (so an element longer than a chunk is read in doubling steps); none at the end."""
        self.drop(keep_from)
        chunk = "" if self.eof else self.reader.read(max(_CHUNK, len(self.buf)))
        self.buf += chunk
        self.eof = self.eof or not chunk

    def line_at(self, i: int) -> int:
        """The line of buffer index ``i`` (never before the last index asked for)."""
        self.mark_line += self.buf.count("\n", self.mark, i)
        self.mark = i
        return self.mark_line


def _json_array(src: Source, meter) -> Iterator[Entry]:
    decoder = json.JSONDecoder()
    with open(src.path, "rb") as raw_fh:
        try:
            yield from _array_elements(_Text(_decompressed(raw_fh, src.path)), decoder, src.name, meter, raw_fh)
        except UnicodeDecodeError as e:
            raise DataError(src.name, 0, None, f"the file is not valid UTF-8 ({e.reason} at byte {e.start} of a "
                            "chunk); the rest of the array cannot be read", "non_utf8") from None


def _array_elements(t: _Text, decoder, file: str, meter, raw_fh) -> Iterator[Entry]:
    def skip_ws(i: int) -> int:
        while True:
            i = _WS.match(t.buf, i).end()
            if i < len(t.buf) or t.eof:
                return i
            t.more(i)
            i = 0

    def broken(i: int, what: str) -> DataError:
        return DataError(file, t.line_at(i), None, f"invalid JSON array after element {k}: {what}; the rest "
                         "of the array cannot be read", "invalid_json")

    t.more(0)
    k = 0
    i = skip_ws(0)
    if t.buf[i:i + 1] != "[":
        raise broken(i, "expected '['")
    i += 1
    while True:
        i = skip_ws(i)
        if t.buf[i:i + 1] == "]":
            j = skip_ws(i + 1)
            if j < len(t.buf):
                raise broken(j, "text after the closing ']'")
            return
        if k:
            if t.buf[i:i + 1] != ",":
                raise broken(i, "expected ',' or ']'")
            i = skip_ws(i + 1)
        while True:
            try:
                value, end = decoder.raw_decode(t.buf, i)
                # a number (or the text after it) near the window's end may go on in the next chunk
                if t.eof or (end < len(t.buf) - _TAIL if isinstance(value, (int, float)) else end < len(t.buf)):
                    break
            except json.JSONDecodeError as e:
                # only an error at the window's end (or a string it cut) can be the window's fault
                if t.eof or not (e.pos >= len(t.buf) - _TAIL or e.msg.startswith("Unterminated string")):
                    raise broken(e.pos, f"{e.msg} (element {k + 1})") from None
            t.more(i)
            i = 0
        k += 1
        loc = Loc(k, "element", t.line_at(i))
        yield k - 1, loc, value if isinstance(value, dict) else DataError(
            file, loc, None, f"expected a JSON object, got {type(value).__name__}", "invalid_json")
        i = end
        if k % 256 == 0:
            meter(raw_fh.tell())
        if i > _CHUNK:
            t.drop(i)   # keep the window small: forget what is parsed
            i = 0


def _parquet(src: Source, meter) -> Iterator[Entry]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:  # pyarrow raises ArrowInvalid for a file that is not Parquet
        raise DataError(src.name, 0, None, f"not a readable Parquet file ({e})", "not_a_dataset") from None
    total, size, k = max(pf.metadata.num_rows, 1), src.size(), 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            k += 1
            yield k - 1, Loc(k, "row"), _present(row)
        meter(size * k // total)


def _dataset(src: Source, meter) -> Iterator[Entry]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(src.path))
    except FileNotFoundError as e:
        raise DataError(src.name, 0, None, f"not a JSONL file or a datasets directory saved with "
                        f"save_to_disk ({e})", "not_a_dataset") from e
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise DataError(src.name, 0, "split", f"no split {src.split!r}; available: {sorted(ds)}",
                            "missing_split")
        ds = ds[src.split]
    total, size = max(len(ds), 1), src.size()
    for k, row in enumerate(ds, start=1):
        yield k - 1, Loc(k, "row"), _present(row)
        if k % 1024 == 0:
            meter(size * k // total)
    meter(size)


def _present(row: dict) -> dict:
    """Columnar storage fills absent keys with None: treat those as absent."""
    return {key: v for key, v in row.items() if v is not None}


# --- finding entries again ----------------------------------------------------------------

def read_at(src: Source, positions: Iterable[int]) -> dict[int, dict]:
    """The records at ``positions`` (as :func:`read_entries` gave them): by seeking in plain
    JSONL, by one pass over the file otherwise."""
    wanted = sorted(set(int(p) for p in positions))
    if not wanted:
        return {}
    if src.seekable:
        out = {}
        with open(src.path, "rb") as fh:
            for pos in wanted:
                fh.seek(pos)
                out[pos] = parse_line(fh.readline(), src.name, 1 if pos == 0 else 0)  # line 1: its BOM
        return out
    want = set(wanted)
    out = {pos: rec for pos, _, rec in read_entries(src) if pos in want}
    return out
