"""Reading a run configuration: YAML files and ``key=value`` overrides into the typed dataclasses
of :mod:`leadsel.schema`, and the commented YAML listing of every field.

Loading is strict: an unknown key, a value of the wrong type, outside its choices or its range is
a :class:`ConfigError` that names the dotted key (``warmup.train.per_device_batch_size: 0 must be
>= 1``). The schema's classes are importable from here too (``from leadsel.config import
RunConfig, load_config``).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from .schema import *  # noqa: F403  (the schema is part of this module's public API)
from .schema import ConfigError, RunConfig, check_choice, choices_of


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if choices_of(tp):  # the type first (a number where a name belongs), then the choice
        kinds = tuple({type(c) for c in choices_of(tp)})
        if not isinstance(value, kinds):
            raise ConfigError(f"{key}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
        check_choice(key, value, choices_of(tp))
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_tname(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        # a list of choices names the list (compare.methods: 'x' is not one of ...), others the item
        return [_coerce(v, item, key if choices_of(item) else f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp in (int, float, str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # pragma: no cover


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            near = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # the class's own check names the field; the key adds where it is
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{key}': cannot parse value {raw!r}: {e}") from None
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig,
                values: dict | None = None):
    """Build ``cls`` from an optional YAML file (or a dict of ``values``, e.g. a run.json's
    config), then apply ``key=value`` overrides."""
    values = copy.deepcopy(values) if values is not None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    for ov in overrides:
        keys, value = parse_override(ov)
        node = values
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise ConfigError(f"override '{'.'.join(keys)}': '{k}' is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return _build(cls, values)


def field_docs(cls: type = RunConfig) -> dict[str, str]:
    """Dotted key -> the docstring written under the field (used for the commented config)."""
    docs: dict[str, str] = {}

    def walk(c: type, prefix: str) -> None:
        tree = ast.parse(inspect.getsource(c))
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                    docs[prefix + node.target.id] = " ".join(str(nxt.value.value).split())
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")

    walk(cls, "")
    return docs


def commented_yaml(cfg: Any = None) -> str:
    """The config as YAML with each field's documentation as a comment above it."""
    cfg = cfg if cfg is not None else RunConfig()
    docs = field_docs(type(cfg))
    lines: list[str] = []

    def emit(obj: Any, prefix: str, indent: int) -> None:
        pad = "  " * indent
        for f in dataclasses.fields(obj):
            key = prefix + f.name
            value = getattr(obj, f.name)
            doc = docs.get(key)
            if doc:
                lines.extend(f"{pad}# {line}" for line in _wrap(doc, 96 - len(pad)))
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{f.name}:")
                emit(value, key + ".", indent + 1)
                lines.append("")
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False).strip()
                lines.append(pad + (dumped[1:-1] if dumped.startswith("{") else dumped))

    emit(cfg, "", 0)
    return "\n".join(lines).rstrip() + "\n"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=max(40, width)) or [""]
