"""The one record type every pool format is converted into, and the data error.

A :class:`Sample` is a conversation (``messages``: ``[{"role", "content"}]``, roles
``system`` / ``user`` / ``assistant``) with a stable ``id``, a ``source`` label, where it came
from (``file``, ``line``: 1-based, a :class:`Loc` where the unit is a JSON array's element or a
table's row; ``pos``: where the reader finds it again) and the original record (``raw``) so that a
selection can be written back in the input schema.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass
class Sample:
    id: str
    source: str
    messages: list[dict[str, str]]
    file: str = ""
    line: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    pos: int = -1          # byte offset of the line in a plain JSONL file, else the entry's ordinal

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Every turn before the last assistant turn."""
        return self.messages[:-1]

    @property
    def response(self) -> str:
        """The content of the last assistant turn."""
        return self.messages[-1]["content"]


def content_hash(messages: list[dict[str, str]]) -> str:
    """Stable id for a sample that has none: a hash of its roles and contents."""
    canon = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False,
                       separators=(",", ":"))
    return hashlib.sha1(canon.encode("utf-8")).hexdigest()[:16]


def id_hash(text: str) -> int:
    """A stable 64-bit hash of a string (ids, content keys): equal strings, equal hashes, in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class Loc(int):
    """A record's 1-based place counted in ``unit`` s other than lines: ``element`` of a JSON array
    (with the ``line`` it starts on) or ``row`` of a table. An int, so it sorts and compares as its
    number; :class:`DataError` prints it as ``file: element 3 (line 12)`` / ``file: row 3``."""
    unit: str
    line: int | None

    def __new__(cls, number: int, unit: str, line: int | None = None) -> "Loc":
        loc = super().__new__(cls, number)
        loc.unit, loc.line = unit, line
        return loc

    def __reduce__(self):
        return Loc, (int(self), self.unit, self.line)

    def where(self, file: str) -> str:
        return f"{file}: {self.unit} {int(self)}" + (f" (line {self.line})" if self.line else "")


class DataError(ValueError):
    """Bad input: names the file, the 1-based line (or element, or row) and the field."""

    def __init__(self, file: str, line: int, field: str | None, message: str, reason: str):
        self.file, self.line, self.field, self.reason = file, line, field, reason
        where = (line.where(file) if isinstance(line, Loc) else f"{file}:{line}") + \
            (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")
