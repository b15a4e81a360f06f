"""The one record type every pool format is converted into, and the data error.

A :class:`Sample` is a conversation (``messages``: ``[{"role", "content"}]``, roles
``system`` / ``user`` / ``assistant``) with a stable ``id``, a ``source`` label, where it came
from (``file``, ``line``, 1-based) and the original record (``raw``) so that a selection can be
written back in the input schema.
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


class DataError(ValueError):
    """Bad input: names the file, the 1-based line (or row) and the field."""

    def __init__(self, file: str, line: int, field: str | None, message: str, reason: str):
        self.file, self.line, self.field, self.reason = file, line, field, reason
        where = f"{file}:{line}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")
