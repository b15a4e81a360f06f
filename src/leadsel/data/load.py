"""Load a pool -- files of any shape :mod:`.readers` reads -- as a stream of :class:`Sample` s.

Each file's format is detected from its first good record (see :mod:`leadsel.data.formats`),
every record is normalised and validated, ids are checked for uniqueness across the whole pool
(:class:`Seen`: a few bytes per sample plus the id, never the records), and bad records either
raise (``on_error="raise"``) or are skipped and counted by reason (``on_error="skip"``).
:func:`iter_samples` streams; :func:`load_pool` lists (for the small held-out sets). :func:`write_jsonl`
writes samples back in their input schema.

Error reasons: ``non_utf8``, ``invalid_json``, ``missing_field``, ``bad_type``,
``wrong_role_order``, ``empty_response``, ``duplicate_id``, ``unknown_format`` (file-level),
and for whole inputs ``empty_file``, ``not_a_dataset``, ``missing_split``, ``empty_pool``.
"""
from __future__ import annotations

import gzip
import json
from array import array
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from ..utils import atomic_open
from .formats import FORMATS, detect_format, to_messages
from .readers import UNITS, Entry, Source, expand, read_entries
from .records import DataError, Sample, content_hash, id_hash

ON_ERROR = ("raise", "skip")
MAX_EXAMPLES = 20

PathLike = Union[str, Path]


@dataclass
class LoadReport:
    formats: dict[str, str] = field(default_factory=dict)   # file -> detected format
    n_loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count (on_error="skip")
    examples: list[str] = field(default_factory=list)       # first skipped-line messages

    def to_dict(self) -> dict:
        return asdict(self)

    def _skip(self, err: DataError) -> None:
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err))


class Seen:
    """Every loaded sample's id and where it is, as compact columns (the id's UTF-8 bytes plus 36
    bytes a sample) and a dict from each id's 64-bit hash to its first sample (about 100 bytes a
    sample): what refuses a duplicate id in constant time and what finds a record again."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}   # id hash -> ordinal of the first sample with that hash
        self.id_hash, self.id_end, self.id_blob = array("Q"), array("q"), bytearray()
        self.file_no, self.pos, self.line = array("i"), array("q"), array("q")
        self.files: list[str] = []
        self.units: list[str] = []   # per file: what its records' places count (line, element, row)

    def __len__(self) -> int:
        return len(self.id_hash)

    def id_at(self, k: int) -> str:
        start = self.id_end[k - 1] if k else 0
        return self.id_blob[start:self.id_end[k]].decode("utf-8")

    def first(self, sample_id: str, h: int) -> int | None:
        """The ordinal of the earlier sample with this id, if any (a hash match is confirmed by the
        id; on the rare hash collision between different ids every sample with that hash is checked)."""
        k = self._first.get(h)
        if k is None:
            return None
        if self.id_at(k) == sample_id:
            return k
        for j in np.flatnonzero(np.frombuffer(self.id_hash, dtype=np.uint64) == np.uint64(h)):
            if self.id_at(int(j)) == sample_id:
                return int(j)
        return None

    def add(self, sample: Sample, file_no: int) -> None:
        """Record ``sample``, or raise ``duplicate_id`` naming where its id was first seen."""
        h = id_hash(sample.id)
        k = self.first(sample.id, h)
        if k is not None:
            hint = "" if sample.raw.get("id") not in (None, "") else \
                " (identical content without an id; on_error='skip' drops such duplicates)"
            raise DataError(sample.file, sample.line, "id", f"duplicate id {sample.id!r}, first seen at "
                            f"{self.units[self.file_no[k]]} {self.line[k]} of {self.files[self.file_no[k]]}{hint}",
                            "duplicate_id")
        self._first.setdefault(h, len(self.id_hash))
        self.id_hash.append(h)
        self.id_blob += sample.id.encode("utf-8")
        self.id_end.append(len(self.id_blob))
        self.file_no.append(file_no)
        self.pos.append(sample.pos)
        self.line.append(int(sample.line))


def sources_of(paths: PathLike | Sequence[PathLike], split: str = "train") -> list[Source]:
    """Every file the pool paths stand for, in order (a directory of shards gives several)."""
    return [src for p in _as_paths(paths) for src in expand(p, split)]


def iter_samples(paths: PathLike | Sequence[PathLike], *, fmt: str = "auto", on_error: str = "raise",
                 split: str = "train", report: LoadReport | None = None, seen: Seen | None = None,
                 meter: Callable[[int], None] | None = None) -> Iterator[Sample]:
    """Every good record of ``paths`` as a :class:`Sample`, streamed, file by file; see the module
    docstring. ``report`` and ``seen`` are filled as it goes; ``meter(bytes)`` hears progress (bytes
    of all the files read so far)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    report = report if report is not None else LoadReport()
    seen = seen if seen is not None else Seen()
    paths = _as_paths(paths)   # once: a generator of paths is read here
    sources = sources_of(paths, split)
    done = 0
    for file_no, src in enumerate(sources):
        seen.files.append(src.name)
        seen.units.append(UNITS[src.kind])
        file_meter = (lambda n, base=done: meter(base + n)) if meter else None
        entries = read_entries(src, file_meter)
        loader = _load_strict if on_error == "raise" else _load_lenient
        yield from loader(entries, src, file_no, fmt, report, seen)
        done += src.size()
    if not len(seen):
        names = ", ".join(str(p) for p in paths)
        detail = f"; skipped {report.skipped}" if report.skipped else ""
        raise DataError(names, 0, None, f"the pool is empty: no samples loaded{detail}", "empty_pool")
    report.n_loaded = len(seen)


def load_pool(paths: PathLike | Sequence[PathLike], *, fmt: str = "auto",
              on_error: str = "raise", split: str = "train") -> tuple[list[Sample], LoadReport]:
    """Every record of ``paths`` as a list of :class:`Sample` (held in memory: for held-out sets
    and tests; a pool is streamed into a token store by :mod:`.store`)."""
    report = LoadReport()
    samples = list(iter_samples(paths, fmt=fmt, on_error=on_error, split=split, report=report))
    return samples, report


# Characters that str.splitlines() breaks on but json.dumps(ensure_ascii=False) leaves raw.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _dumps_line(rec: dict, escape_line_breaks: bool = True) -> str:
    """One JSONL line of UTF-8 text. ``escape_line_breaks``: every line-break character escaped
    too, so that any line splitter (also ``str.splitlines``) sees exactly one record per line."""
    s = json.dumps(rec, ensure_ascii=False, default=str)
    if escape_line_breaks:
        for ch, esc in _LINE_BREAKS.items():
            if ch in s:
                s = s.replace(ch, esc)
    return s


def write_records(path: PathLike, records: Iterable[dict], escape_line_breaks: bool = True) -> None:
    """Write each record as one JSON line (:func:`_dumps_line`), atomically (gzip if ``.gz``)."""
    with atomic_open(path) as raw_out:
        out = gzip.GzipFile(fileobj=raw_out, mode="wb") if str(path).endswith(".gz") else raw_out
        for rec in records:
            out.write((_dumps_line(rec, escape_line_breaks) + "\n").encode("utf-8"))
        if out is not raw_out:
            out.close()


def write_jsonl(samples: Iterable[Sample], path: PathLike) -> None:
    """Write each sample's ``raw`` record (its input schema) as one JSON line, atomically
    (``selected.jsonl``: line breaks inside texts kept as they are, as leadsel has always written it)."""
    write_records(path, (s.raw or {"id": s.id, "source": s.source, "messages": s.messages} for s in samples),
                  escape_line_breaks=False)


# --- per-file loading ---------------------------------------------------------------------

def _load_strict(entries: Iterator[Entry], src: Source, file_no: int, fmt: str,
                 report: LoadReport, seen: Seen) -> Iterator[Sample]:
    """on_error="raise": stream the file; the first bad record raises its DataError."""
    file_fmt, n_entries = (None if fmt == "auto" else fmt), 0
    for pos, line, rec in entries:
        n_entries += 1
        if isinstance(rec, DataError):
            raise rec
        if file_fmt is None:
            file_fmt = detect_format(rec, src.name, line)
        sample = _make_sample(rec, file_fmt, src, pos, line)
        seen.add(sample, file_no)
        yield sample
    _finish_file(src.name, file_fmt, n_entries, report)


def _load_lenient(entries: Iterator[Entry], src: Source, file_no: int, fmt: str,
                  report: LoadReport, seen: Seen) -> Iterator[Sample]:
    """on_error="skip": bad records are counted and skipped; the format must be detectable. The
    entries before the first that detects cleanly are held until it is found (all of them only
    when none is)."""
    head: list[Entry] = []
    file_fmt = fmt if fmt != "auto" else None
    if file_fmt is None:
        for entry in entries:
            head.append(entry)
            if _detects_cleanly(entry, src.name):
                file_fmt = detect_format(entry[2], src.name, entry[1])
                break
        else:
            file_fmt = _fallback_format(head, src.name)
    n_entries = 0
    for pos, line, rec in chain(head, entries):
        n_entries += 1
        try:
            if isinstance(rec, DataError):
                raise rec
            sample = _make_sample(rec, file_fmt, src, pos, line)
            seen.add(sample, file_no)
        except DataError as err:
            report._skip(err)
            continue
        yield sample
    _finish_file(src.name, file_fmt, n_entries, report)


def _detects_cleanly(entry: Entry, file: str) -> bool:
    _, line, rec = entry
    if isinstance(rec, DataError):
        return False
    try:
        to_messages(rec, detect_format(rec, file, line), file, line)
    except DataError:
        return False
    return True


def _fallback_format(entries: list[Entry], file: str) -> str | None:
    """When no record converts cleanly: the first detectable record's format; the first
    ``unknown_format`` error when no record's format can be detected at all."""
    first_error = None
    for _, line, rec in entries:
        if isinstance(rec, DataError):
            continue
        try:
            return detect_format(rec, file, line)
        except DataError as err:
            first_error = first_error or err
    if first_error is not None:
        raise first_error
    return None


def _finish_file(file: str, file_fmt: str | None, n_entries: int, report: LoadReport) -> None:
    """Record the file's format; a file without records or format is never dropped silently."""
    if n_entries == 0:
        raise DataError(file, 0, None, "the file has no records", "empty_file")
    if file_fmt is None:
        raise DataError(file, 0, None, "no parseable record in the file, so its format cannot "
                        "be detected", "unknown_format")
    report.formats[file] = file_fmt


def _make_sample(rec: dict, fmt: str, src: Source, pos: int, line) -> Sample:
    messages = to_messages(rec, fmt, src.name, line)
    return Sample(id=_sample_id(rec, messages, src.name, line), source=_source(rec, src.label),
                  messages=messages, file=src.name, line=line, raw=rec, pos=pos)


def _sample_id(rec: dict, messages: list[dict[str, str]], file: str, line: int) -> str:
    value = rec.get("id")
    if value is None or value == "":
        return content_hash(messages)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(file, line, "id", f"expected a string or a number, got "
                        f"{type(value).__name__}", "bad_type")
    return str(value)


def _source(rec: dict, label: str) -> str:
    for key in ("dataset", "source"):
        value = rec.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return label


def _as_paths(paths: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(paths, (str, Path)):
        return [paths]
    path_list = list(paths)
    if not path_list:
        raise ValueError("no pool paths given")
    return path_list
