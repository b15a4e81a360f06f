"""LEAD's coarse level: k-means clusters of the pool (docs/algorithms.md §1.1.4).

Default: k-means on the one-dimensional warm-up IFD, so that each cluster is a difficulty band;
clusters are renumbered by their centre (cluster 0 = lowest IFD). Samples whose IFD is not finite
or above 1 (the prompt does not help) are kept, flagged, and form one extra cluster of their own.
Options: k-means on the L2-normalised sentence embeddings, or on both (the embeddings next to the
standardised IFD, scaled so that the IFD column carries as much variance as all embedding
columns together).
"""
from __future__ import annotations

import numpy as np

from ..numeric import l2_normalise


def valid_ifd(ifd: np.ndarray) -> np.ndarray:
    """True where IFD is usable for clustering: finite and at most 1."""
    ifd = np.asarray(ifd, dtype=np.float64)
    return np.isfinite(ifd) & (ifd <= 1.0)


FIT_MAX = 200_000


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (10 starts) on ``x``; on a pool of more than :data:`FIT_MAX` points the centres are
    fitted on a seeded random sample of that many and every point is then given its nearest centre
    (the sample's centres are within noise of the full fit's, and a 10M pool takes seconds)."""
    from sklearn.cluster import KMeans

    fit = x if len(x) <= FIT_MAX else x[np.sort(np.random.default_rng(seed).choice(len(x), FIT_MAX, replace=False))]
    distinct = len(np.unique(fit[:, 0])) if fit.shape[1] == 1 else len(np.unique(fit, axis=0))
    k = max(1, min(k, distinct))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(fit)
    labels = km.labels_ if fit is x else km.predict(x)
    return labels.astype(np.int32), km.cluster_centers_


def cluster_pool(features: str, k: int, seed: int, ifd: np.ndarray | None = None,
                 emb: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(cluster label per sample, info). Labels are 0..K'-1 (K' <= k, fewer when the data has fewer
    distinct points), plus K' for the flagged-IFD bucket when it is not empty."""
    if features in ("ifd", "both") and ifd is None:
        raise ValueError(f"cluster_features={features} needs the warm-up IFD")
    if features in ("embedding", "both") and emb is None:
        raise ValueError(f"cluster_features={features} needs sentence embeddings")
    n = len(ifd) if ifd is not None else len(emb)
    ok = valid_ifd(ifd) if ifd is not None else np.ones(n, dtype=bool)
    labels = np.full(n, -1, dtype=np.int32)
    info: dict = {"features": features, "requested": k, "flagged_ifd": int((~ok).sum())}
    if ok.any():
        if features == "ifd":
            x = np.asarray(ifd, dtype=np.float64)[ok, None]
        else:
            e = np.asarray(emb, dtype=np.float64)[ok]
            e = l2_normalise(e)
            if features == "both":
                f = np.asarray(ifd, dtype=np.float64)[ok]
                z = (f - f.mean()) / (f.std() or 1.0)
                x = np.concatenate([e, z[:, None] * np.sqrt(e.var(axis=0).sum())], axis=1)
            else:
                x = e
        lab, centres = _kmeans(x, k, seed)
        # renumber by the centre's IFD, so cluster 0 is the easiest band (embeddings: k-means order)
        key = centres[:, -1] if features != "embedding" else np.arange(len(centres))
        rank = np.empty(len(centres), dtype=np.int32)
        rank[np.argsort(key, kind="stable")] = np.arange(len(centres))
        labels[ok] = rank[lab]
        if features == "ifd":
            info["centres"] = [float(c) for c in np.sort(centres[:, -1])]
    k_eff = int(labels.max()) + 1 if ok.any() else 0
    if (~ok).any():
        labels[~ok] = k_eff
        info["flagged_cluster"] = k_eff
    info["n_clusters"] = int(labels.max()) + 1
    info["sizes"] = np.bincount(labels).tolist()
    return labels, info
