"""Spherical (cosine) k-means on feature rows: ClusterUCB's clusters of the pool's gradient features.
Plain numpy.

Readings chosen (where the paper / released code leave room)
-----------------------------------------------------------
* **k-means init**: ``k`` distinct row *indices* drawn by ``np.random.default_rng(seed).choice(n,
  k, replace=False)`` (rows with equal direction may be drawn; the empty clusters this causes are
  re-seeded as below). Computation runs in float32 when ``X`` is float32, else float64; centroid
  sums are accumulated in float64.
* **k-means assignment**: argmax cosine, ties -> lowest cluster index.
* **Empty cluster**: re-seeded, in increasing cluster index, with the point farthest from its own
  centroid (lowest cosine to the centroid it was assigned to; ties -> lowest point index) taken
  only from clusters that keep at least one other member, so re-seeding never empties another
  cluster (with ``n >= k`` such a point always exists). The point moves to the empty cluster and
  becomes its centroid. Hence every returned cluster is non-empty.
* **Degenerate centroid**: if a cluster's members sum to the zero vector (e.g. two antipodal
  points), its previous centroid is kept.
* **Convergence**: stop when an iteration (assignment + re-seeding) leaves the labels unchanged,
  or after ``iters`` iterations. The returned centroids are the normalised means of the returned
  labels' members (at convergence, the labels are also the argmax assignment to them).
* **Renumbering**: clusters are numbered by their first (lowest-index) member, so cluster 0 holds
  row 0, and the labels do not depend on the internal order.
* **Zero-norm / non-finite rows**: ``ValueError`` naming how many; ``k > n``: ``ValueError``.
"""
from __future__ import annotations

import numpy as np

from ..numeric import is_int, l2_normalise


def _normalise_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n, d), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    work = np.float32 if X.dtype == np.float32 else np.float64
    X = X.astype(work, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} row(s) of X are not finite (first: row {int(np.flatnonzero(bad)[0])})")
    with np.errstate(invalid="ignore"):  # a zero row becomes 0/0: refused below
        Xn = l2_normalise(X, eps=0.0, norm_dtype=np.float64)
    zero = ~np.isfinite(Xn).all(axis=1)
    if zero.any():
        raise ValueError(f"{int(zero.sum())} row(s) of X have zero norm (first: row {int(np.flatnonzero(zero)[0])}); "
                         "cosine k-means needs a direction for every row")
    return Xn


def _centroids(Xn: np.ndarray, labels: np.ndarray, k: int, prev: np.ndarray) -> np.ndarray:
    """Normalised member sums per cluster (float64 accumulation); a zero sum keeps ``prev``."""
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    ends = np.append(starts[1:], labels.size)
    Xs = Xn[order]
    sums = np.zeros((k, Xn.shape[1]))
    for c, s, e in zip(present.tolist(), starts.tolist(), ends.tolist()):
        sums[c] = Xs[s:e].sum(axis=0, dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1)
    C = prev.astype(np.float64, copy=True)
    ok = norms > 0
    C[ok] = sums[ok] / norms[ok, None]
    return C.astype(Xn.dtype)


def _reseed_empty(labels: np.ndarray, own_sim: np.ndarray, k: int) -> np.ndarray:
    """Move, for each empty cluster (increasing index), the point farthest from its centroid
    (lowest ``own_sim``, ties -> lowest index) out of a cluster that keeps >= 1 other member."""
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return labels
    labels = labels.copy()
    order = np.lexsort((np.arange(labels.size), own_sim))  # farthest first, ties by index
    used = np.zeros(labels.size, dtype=bool)
    pos = 0
    for c in empty:
        while True:  # terminates: n >= k leaves a cluster with >= 2 members while one is empty
            i = order[pos]
            pos += 1
            if not used[i] and counts[labels[i]] >= 2:
                break
        counts[labels[i]] -= 1
        labels[i] = c
        counts[c] = 1
        used[i] = True
    return labels


def spherical_kmeans(X: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means on the L2-normalised rows of ``X`` (n, d).

    Returns ``(labels int64 (n,), centroids (k, d) unit rows)``; every cluster is non-empty and
    clusters are numbered by their first member. See the module docstring for init, empty-cluster
    re-seeding, convergence and tie rules.
    """
    Xn = _normalise_rows(X)
    n = Xn.shape[0]
    if not is_int(k) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if not is_int(iters) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    k = int(k)
    rng = np.random.default_rng(seed)
    C = Xn[rng.choice(n, size=k, replace=False)].copy()
    labels: np.ndarray | None = None
    for _ in range(int(iters)):
        sims = Xn @ C.T
        assign = np.argmax(sims, axis=1)  # first maximum: ties -> lowest cluster index
        new = _reseed_empty(assign, sims[np.arange(n), assign], k)
        C = _centroids(Xn, new, k, C)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
    assert labels is not None
    # renumber by first member: np.unique's return_index gives each cluster's lowest row index
    present, first = np.unique(labels, return_index=True)
    assert present.size == k
    old_order = present[np.argsort(first, kind="stable")]  # old id of new cluster 0, 1, ...
    rank = np.empty(k, dtype=np.int64)
    rank[old_order] = np.arange(k)
    return rank[labels].astype(np.int64), C[old_order]
