"""Compact string columns for pools of millions: ids as one UTF-8 blob plus offsets, labels as codes.

A list of 10M Python strings costs ~600 MB; :class:`Strings` holds the same ids in their UTF-8
bytes plus 8 bytes each, and :class:`Labels` holds a source per sample in 4 bytes. Both read like
the lists they replace (``len``, indexing, iteration, ``==`` with a list), so code written for
lists of ids keeps working, and both hand pyarrow its columns without building Python strings.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from ..utils import fingerprint


def _positions(indices) -> np.ndarray:
    """Integer positions; a boolean mask becomes the positions where it is True."""
    idx = np.asarray(indices)
    return np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64, copy=False)


class Strings(Sequence):
    """Strings stored as ``blob`` (uint8, UTF-8 bytes back to back) and ``ends`` (int64, where each ends)."""

    def __init__(self, blob: np.ndarray, ends: np.ndarray):
        self.blob, self.ends = np.asarray(blob, dtype=np.uint8), np.asarray(ends, dtype=np.int64)
        self._digest: str | None = None

    @classmethod
    def of(cls, items: Iterable[str]) -> "Strings":
        if isinstance(items, Strings):
            return items
        encoded = [str(x).encode("utf-8") for x in items]
        ends = np.cumsum([len(b) for b in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), ends)

    def __len__(self) -> int:
        return len(self.ends)

    def _one(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i > 0 else 0
        return self.blob[start:int(self.ends[i])].tobytes().decode("utf-8")

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            i = int(i)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} strings")
            return self._one(i % len(self))
        return self.take(np.arange(len(self))[i] if isinstance(i, slice) else i)

    def __iter__(self) -> Iterator[str]:
        data, start = self.blob.tobytes(), 0
        for end in self.ends.tolist():
            yield data[start:end].decode("utf-8")
            start = end

    def __eq__(self, other) -> bool:
        if isinstance(other, Strings):
            return np.array_equal(self.ends, other.ends) and np.array_equal(self.blob, other.blob)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(repr(self._one(i)) for i in range(min(3, len(self))))
        return f"Strings([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    def __array__(self, dtype=None, copy=None):
        return np.array(list(self), dtype=dtype or str)

    def tolist(self) -> list[str]:
        return list(self)

    def take(self, indices) -> "Strings":
        idx = _positions(indices)
        starts = np.concatenate([[0], self.ends[:-1]])[idx] if len(self) else np.zeros(0, np.int64)
        lengths = self.ends[idx] - starts
        ends = np.cumsum(lengths, dtype=np.int64)
        pos = np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)
        return Strings(self.blob[pos], ends)

    def digest(self) -> str:
        """A fingerprint of the strings, in order (cached)."""
        if self._digest is None:
            self._digest = fingerprint(self.blob, self.ends)
        return self._digest

    def to_arrow(self):
        import pyarrow as pa

        offsets = np.concatenate([[0], self.ends]).astype(np.int64)
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(offsets), pa.py_buffer(self.blob))


class Labels(Sequence):
    """One label per sample as ``codes`` (int32) into ``names``."""

    def __init__(self, codes: np.ndarray, names: Sequence[str]):
        self.codes, self.names = np.asarray(codes, dtype=np.int32), list(names)

    @classmethod
    def of(cls, items: Iterable[str]) -> "Labels":
        if isinstance(items, Labels):
            return items
        values = list(items)
        names = sorted(set(values))
        where = {n: k for k, n in enumerate(names)}
        return cls(np.asarray([where[v] for v in values], dtype=np.int32), names)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return self.names[int(self.codes[i])]
        return self.take(np.arange(len(self))[i] if isinstance(i, slice) else i)

    def __iter__(self) -> Iterator[str]:
        names = self.names
        return (names[c] for c in self.codes.tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, (Labels, list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"Labels(n={len(self)}, names={self.names})"

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.names, dtype=dtype or str)[self.codes] if self.names else np.zeros(0, dtype or str)

    def tolist(self) -> list[str]:
        return list(self)

    def take(self, indices) -> "Labels":
        return Labels(self.codes[_positions(indices)], self.names)

    def to_arrow(self):
        import pyarrow as pa

        return pa.DictionaryArray.from_arrays(pa.array(self.codes), pa.array(self.names, type=pa.string()))
