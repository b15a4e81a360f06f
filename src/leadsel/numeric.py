"""Small numpy checks and transforms shared by the selection and scoring code (no torch)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(x: Any) -> bool:
    """A Python or numpy integer, and not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def as_real(x: Any) -> float:
    """``x`` as a float when it is a Python or numpy number (not a bool), else nan."""
    ok = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    return float(x) if ok else math.nan


def l2_normalise(X: np.ndarray, eps: float = 1e-12, norm_dtype=None) -> np.ndarray:
    """``X / max(||X||, eps)`` along the last axis (zero rows stay zero). Float inputs keep their
    dtype; others become float64. ``norm_dtype``: compute the norms in this dtype (e.g. float64
    for float32 rows), then divide in the rows' own dtype."""
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if norm_dtype is None:
        norms = np.linalg.norm(X, axis=-1, keepdims=True)
    else:
        norms = np.linalg.norm(X.astype(norm_dtype, copy=False), axis=-1, keepdims=True).astype(X.dtype)
    return (X / np.maximum(norms, eps)).astype(X.dtype, copy=False)
