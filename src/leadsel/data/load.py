"""Load a pool (JSONL / JSONL.gz files or a ``datasets`` directory) into :class:`Sample` s.

Each file's format is detected from its first good record (see :mod:`leadsel.data.formats`),
every record is normalised and validated, ids are checked for uniqueness across the whole
pool, and bad records either raise (``on_error="raise"``) or are skipped and counted by
reason (``on_error="skip"``). :func:`write_jsonl` writes samples back in their input schema.

Error reasons: ``non_utf8``, ``invalid_json``, ``missing_field``, ``bad_type``,
``wrong_role_order``, ``empty_response``, ``duplicate_id``, ``unknown_format`` (file-level),
and for whole inputs ``empty_file``, ``not_a_dataset``, ``missing_split``, ``empty_pool``.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

from ..utils import atomic_open
from .formats import FORMATS, detect_format, to_messages
from .records import DataError, Sample, content_hash

ON_ERROR = ("raise", "skip")
MAX_EXAMPLES = 20
_EXTENSIONS = (".gz", ".jsonl", ".ndjson", ".json")
_GZIP_MAGIC = b"\x1f\x8b"

PathLike = Union[str, Path]
Entry = tuple[int, Union[dict, DataError]]  # (1-based line, parsed record or its parse error)


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


def load_pool(paths: PathLike | Sequence[PathLike], *, fmt: str = "auto",
              on_error: str = "raise", split: str = "train") -> tuple[list[Sample], LoadReport]:
    """Load every record of ``paths`` as a :class:`Sample`; see the module docstring."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    path_list = _as_paths(paths)
    for p in path_list:
        if not Path(p).exists():
            raise FileNotFoundError(f"pool path not found: {p}")
    report = LoadReport()
    samples: list[Sample] = []
    seen: dict[str, tuple[str, int]] = {}   # id -> (file, line) of its first occurrence
    for p in path_list:
        entries = _iter_entries(Path(p), str(p), split)
        loader = _load_strict if on_error == "raise" else _load_lenient
        loader(entries, str(p), _source_label(Path(p)), fmt, report, samples, seen)
    if not samples:
        names = ", ".join(str(p) for p in path_list)
        detail = f"; skipped {report.skipped}" if report.skipped else ""
        raise DataError(names, 0, None, f"the pool is empty: no samples loaded{detail}",
                        "empty_pool")
    report.n_loaded = len(samples)
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

def _load_strict(entries: Iterator[Entry], file: str, label: str, fmt: str,
                 report: LoadReport, samples: list[Sample], seen: dict) -> None:
    """on_error="raise": stream the file; the first bad record raises its DataError."""
    file_fmt, n_entries = (None if fmt == "auto" else fmt), 0
    for line, rec in entries:
        n_entries += 1
        if isinstance(rec, DataError):
            raise rec
        if file_fmt is None:
            file_fmt = detect_format(rec, file, line)
        samples.append(_register(_make_sample(rec, file_fmt, file, line, label), seen))
    _finish_file(file, file_fmt, n_entries, report)


def _load_lenient(entries: Iterator[Entry], file: str, label: str, fmt: str,
                  report: LoadReport, samples: list[Sample], seen: dict) -> None:
    """on_error="skip": bad records are counted and skipped; the format must be detectable."""
    entry_list = list(entries)
    file_fmt = fmt if fmt != "auto" else _detect_lenient(entry_list, file)
    _finish_file(file, file_fmt, len(entry_list), report)
    for line, rec in entry_list:
        try:
            if isinstance(rec, DataError):
                raise rec
            samples.append(_register(_make_sample(rec, file_fmt, file, line, label), seen))
        except DataError as err:
            report._skip(err)


def _detect_lenient(entries: list[Entry], file: str) -> str | None:
    """Format of the first record that is detected and converts cleanly.

    Falls back to the first detectable record's format when every record is bad; raises
    the first ``unknown_format`` error when no record's format can be detected at all.
    """
    first_detected, first_error = None, None
    for line, rec in entries:
        if isinstance(rec, DataError):
            continue
        try:
            found = detect_format(rec, file, line)
        except DataError as err:
            first_error = first_error or err
            continue
        first_detected = first_detected or found
        try:
            to_messages(rec, found, file, line)
        except DataError:
            continue
        return found
    if first_detected is None and first_error is not None:
        raise first_error
    return first_detected


def _finish_file(file: str, file_fmt: str | None, n_entries: int, report: LoadReport) -> None:
    """Record the file's format; a file without records or format is never dropped silently."""
    if n_entries == 0:
        raise DataError(file, 0, None, "the file has no records", "empty_file")
    if file_fmt is None:
        raise DataError(file, 0, None, "no parseable record in the file, so its format cannot "
                        "be detected", "unknown_format")
    report.formats[file] = file_fmt


def _make_sample(rec: dict, fmt: str, file: str, line: int, label: str) -> Sample:
    messages = to_messages(rec, fmt, file, line)
    return Sample(id=_sample_id(rec, messages, file, line), source=_source(rec, label),
                  messages=messages, file=file, line=line, raw=rec)


def _register(sample: Sample, seen: dict[str, tuple[str, int]]) -> Sample:
    first = seen.get(sample.id)
    if first is not None:
        hint = "" if sample.raw.get("id") not in (None, "") else \
            " (identical content without an id; on_error='skip' drops such duplicates)"
        raise DataError(sample.file, sample.line, "id", f"duplicate id {sample.id!r}, first "
                        f"seen at line {first[1]} of {first[0]}{hint}", "duplicate_id")
    seen[sample.id] = (sample.file, sample.line)
    return sample


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


def _source_label(path: Path) -> str:
    """The file's name without its extensions: ``alpaca_gpt4.jsonl.gz`` -> ``alpaca_gpt4``."""
    name = path.name
    while ext := next((e for e in _EXTENSIONS
                       if name.lower().endswith(e) and len(name) > len(e)), None):
        name = name[: -len(ext)]
    return name


# --- reading ------------------------------------------------------------------------------

def _as_paths(paths: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(paths, (str, Path)):
        return [paths]
    path_list = list(paths)
    if not path_list:
        raise ValueError("no pool paths given")
    return path_list


def _iter_entries(path: Path, file: str, split: str) -> Iterator[Entry]:
    if path.is_dir():
        return _iter_dataset(path, file, split)
    return _iter_jsonl(path, file)


def _iter_jsonl(path: Path, file: str) -> Iterator[Entry]:
    """Yield (line, record) per non-blank line; a bad line yields its DataError instead."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == _GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            yield line_no, _parse_line(raw, file, line_no)


def _parse_line(raw: bytes, file: str, line: int) -> dict | DataError:
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
        return DataError(file, line, None, f"invalid JSON: {e.msg} at column {e.colno}",
                         "invalid_json")
    if not isinstance(rec, dict):
        return DataError(file, line, None, f"expected a JSON object, got "
                         f"{type(rec).__name__}", "invalid_json")
    return rec


def _iter_dataset(path: Path, file: str, split: str) -> Iterator[Entry]:
    """Rows of a ``save_to_disk`` directory; ``line`` is the 1-based row number."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(file, 0, None, f"not a JSONL file or a datasets directory saved with "
                        f"save_to_disk ({e})", "not_a_dataset") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(file, 0, "split", f"no split {split!r}; available: "
                            f"{sorted(ds)}", "missing_split")
        ds = ds[split]
    for row_no, row in enumerate(ds, start=1):
        # Columnar storage fills absent keys with None: treat those as absent.
        yield row_no, {k: v for k, v in row.items() if v is not None}
