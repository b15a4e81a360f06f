"""Per-record format adapters and format detection.

Every adapter is a pure function ``record dict -> messages`` that raises :class:`DataError`
naming the file, the 1-based line and the offending field. Supported formats:

* ``messages`` (open-instruct / TRL): ``{"messages": [{"role", "content"}], ...}``
* ``alpaca``: ``instruction``, optional ``input``, ``output``, optional ``system``
* ``sharegpt``: ``{"conversations": [{"from", "value"}], ...}``
* ``prompt_completion`` (TRL): ``prompt`` and ``completion``, each a string or a message list

A format is detected from a record's keys by its marker key (``messages``, ``instruction``,
``conversations``, ``completion``); a record matching none or several is an
``unknown_format`` error -- the format is never guessed.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from leadsel.data.records import ROLES, DataError

FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")

# The key whose presence marks a record as being in that format.
MARKERS = {
    "messages": "messages",
    "alpaca": "instruction",
    "sharegpt": "conversations",
    "prompt_completion": "completion",
}

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "model": "assistant",
    "system": "system",
}


class Turn(NamedTuple):
    """One normalised turn plus the input fields it came from (for error messages)."""
    role: str
    content: str
    role_field: str
    content_field: str


def detect_format(record: dict[str, Any], file: str, line: int) -> str:
    """The single format whose marker key is in ``record``; DataError(unknown_format) else."""
    keys = sorted(record)
    found = [fmt for fmt, key in MARKERS.items() if key in record]
    if len(found) == 1:
        return found[0]
    markers = ", ".join(f"{fmt} ({key!r})" for fmt, key in MARKERS.items())
    if not found:
        msg = f"cannot detect the format from keys {keys}: they match no format ({markers})"
    else:
        msg = (f"cannot detect the format from keys {keys}: they match several formats "
               f"({', '.join(found)}); pass fmt= to choose one")
    raise DataError(file, line, None, msg, "unknown_format")


def to_messages(record: dict[str, Any], fmt: str, file: str, line: int) -> list[dict[str, str]]:
    """Convert ``record`` (in format ``fmt``) to validated ``[{"role", "content"}]``."""
    try:
        adapter = _ADAPTERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}") from None
    err = _Err(file, line)
    turns = adapter(record, err)
    validate_turns(turns, err)
    return [{"role": t.role, "content": t.content} for t in turns]


def validate_turns(turns: list[Turn], err: "_Err") -> None:
    """Optional system first, then user/assistant alternating, ending on a non-empty assistant."""
    if not turns:
        raise err("wrong_role_order", None, "the conversation has no turns")
    expected = "user"
    for i, t in enumerate(turns):
        if t.role not in ROLES:
            raise err("wrong_role_order", t.role_field,
                      f"unknown role {t.role!r}; expected one of {ROLES}")
        if i == 0 and t.role == "system":
            continue
        if t.role != expected:
            raise err("wrong_role_order", t.role_field,
                      f"expected role {expected!r}, got {t.role!r} (turns must be: optional "
                      "system, then user/assistant alternating, starting with user)")
        expected = "assistant" if expected == "user" else "user"
    last = turns[-1]
    if last.role != "assistant":
        raise err("wrong_role_order", last.role_field,
                  f"the conversation must end with an assistant turn, got {last.role!r}")
    if not last.content.strip():
        raise err("empty_response", last.content_field, "the final assistant response is empty")


class _Err:
    """Builds DataErrors bound to one file and line."""

    def __init__(self, file: str, line: int):
        self.file, self.line = file, line

    def __call__(self, reason: str, field: str | None, message: str) -> DataError:
        return DataError(self.file, self.line, field, message, reason)


def _get(record: dict[str, Any], key: str, err: _Err, field: str, types: type | tuple,
         type_name: str) -> Any:
    """``record[key]`` checked for presence and type; ``field`` names it in errors."""
    if key not in record or record[key] is None:
        raise err("missing_field", field, f"required field {field!r} is missing (or null)")
    value = record[key]
    if not isinstance(value, types):
        raise err("bad_type", field, f"expected {type_name}, got {type(value).__name__}")
    return value


def _optional_str(record: dict[str, Any], key: str, err: _Err) -> str:
    """An optional string field: absent/None -> ''; other types are bad_type."""
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise err("bad_type", key, f"expected a string, got {type(value).__name__}")
    return value


def _turn_list(items: Any, err: _Err, prefix: str, role_key: str, content_key: str,
               map_role: Callable[[str, str], str]) -> list[Turn]:
    """Parse a list of turn dicts ``{role_key, content_key}`` found at field ``prefix``."""
    if not isinstance(items, list):
        raise err("bad_type", prefix, f"expected a list of turns, got {type(items).__name__}")
    turns = []
    for i, item in enumerate(items):
        here = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            raise err("bad_type", here, f"expected an object, got {type(item).__name__}")
        role = _get(item, role_key, err, f"{here}.{role_key}", str, "a string")
        content = _get(item, content_key, err, f"{here}.{content_key}", str, "a string")
        turns.append(Turn(map_role(role, f"{here}.{role_key}"), content,
                          f"{here}.{role_key}", f"{here}.{content_key}"))
    return turns


def _same_role(role: str, field: str) -> str:
    return role


def _messages(record: dict[str, Any], err: _Err) -> list[Turn]:
    items = _get(record, "messages", err, "messages", list, "a list of messages")
    return _turn_list(items, err, "messages", "role", "content", _same_role)


def _alpaca(record: dict[str, Any], err: _Err) -> list[Turn]:
    instruction = _get(record, "instruction", err, "instruction", str, "a string")
    output = _get(record, "output", err, "output", str, "a string")
    extra = _optional_str(record, "input", err)
    system = _optional_str(record, "system", err)
    prompt = instruction + ("\n\n" + extra if extra.strip() else "")
    turns = [Turn("system", system, "system", "system")] if system.strip() else []
    turns.append(Turn("user", prompt, "instruction", "instruction"))
    turns.append(Turn("assistant", output, "output", "output"))
    return turns


def _sharegpt(record: dict[str, Any], err: _Err) -> list[Turn]:
    def map_role(value: str, field: str) -> str:
        role = SHAREGPT_ROLES.get(value.strip().lower())
        if role is None:
            raise err("wrong_role_order", field,
                      f"unknown 'from' value {value!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        return role

    items = _get(record, "conversations", err, "conversations", list, "a list of turns")
    turns = _turn_list(items, err, "conversations", "from", "value", map_role)
    system = _optional_str(record, "system", err)
    if system.strip() and not (turns and turns[0].role == "system"):
        turns.insert(0, Turn("system", system, "system", "system"))
    return turns


def _prompt_completion(record: dict[str, Any], err: _Err) -> list[Turn]:
    turns = []
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = _get(record, key, err, key, (str, list), "a string or a list of messages")
        if isinstance(value, str):
            turns.append(Turn(role, value, key, key))
        else:
            turns.extend(_turn_list(value, err, key, "role", "content", _same_role))
    return turns


_ADAPTERS: dict[str, Callable[[dict[str, Any], _Err], list[Turn]]] = {
    "messages": _messages,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "prompt_completion": _prompt_completion,
}
