"""Scores stored apart from the data, keyed by a fingerprint of what produced them.

A cache entry is ``<root>/scores/<kind>-<fingerprint>.npz`` holding a digest of the sample ids
(in order: the entry is used only for the same samples) and the arrays;
a pass in progress keeps shard files in ``<kind>-<fingerprint>.partial/`` so that a killed pass
resumes where it stopped. Every file is written atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.columns import Strings
from ..utils import atomic_save_npz


class ScoreCache:
    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root) / "scores"
        self.enabled = enabled

    def path(self, kind: str, fp: str) -> Path:
        return self.root / f"{kind}-{fp}.npz"

    def load(self, kind: str, fp: str, ids: Sequence[str]) -> dict[str, np.ndarray] | None:
        p = self.path(kind, fp)
        if not (self.enabled and p.is_file()):
            return None
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        if str(data.pop("ids_digest", "")) != Strings.of(ids).digest():
            return None  # same fingerprint, other ids: never trust it
        return data

    def save(self, kind: str, fp: str, ids: Sequence[str], **arrays: np.ndarray) -> None:
        atomic_save_npz(self.path(kind, fp), ids_digest=np.asarray(Strings.of(ids).digest()), **arrays)
        shutil.rmtree(self.partial_dir(kind, fp), ignore_errors=True)

    def partial_dir(self, kind: str, fp: str) -> Path:
        return self.root / f"{kind}-{fp}.partial"
