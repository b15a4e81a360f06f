"""Scores stored apart from the data, keyed by a fingerprint of what produced them.

A cache entry is ``<root>/scores/<kind>-<fingerprint>.npz`` holding the sample ids and the arrays;
a pass in progress keeps shard files in ``<kind>-<fingerprint>.partial/`` so that a killed pass
resumes where it stopped. Every file is written atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..utils import atomic_save_npz


class ScoreCache:
    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root) / "scores"
        self.enabled = enabled

    def path(self, kind: str, fp: str) -> Path:
        return self.root / f"{kind}-{fp}.npz"

    def load(self, kind: str, fp: str, ids: list[str]) -> dict[str, np.ndarray] | None:
        p = self.path(kind, fp)
        if not (self.enabled and p.is_file()):
            return None
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        if data.pop("ids").tolist() != list(ids):
            return None  # same fingerprint, other ids: never trust it
        return data

    def save(self, kind: str, fp: str, ids: list[str], **arrays: np.ndarray) -> None:
        atomic_save_npz(self.path(kind, fp), ids=np.asarray(ids, dtype=str), **arrays)
        shutil.rmtree(self.partial_dir(kind, fp), ignore_errors=True)

    def partial_dir(self, kind: str, fp: str) -> Path:
        return self.root / f"{kind}-{fp}.partial"
