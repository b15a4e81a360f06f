"""LEAD's coarse level (leadsel.select.clusters, docs/algorithms.md §1.1.4): k-means clusters of the pool.

Inputs are built so that the right partition is obvious by eye (well-separated groups), and the
numbering follows the spec: clusters by increasing IFD (0 = lowest), flagged IFD (> 1, inf, nan)
in one extra cluster numbered after them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from leadsel.select.clusters import cluster_pool, valid_ifd

# three bands, shuffled so that the order in the pool is not the order of the bands
LOW, MID, HIGH = [0.1, 0.12, 0.08], [0.5, 0.52, 0.48], [0.9, 0.88, 0.92]
IFD3 = [0.5, 0.9, 0.1, 0.88, 0.12, 0.52, 0.08, 0.92, 0.48]
WANT3 = [1, 2, 0, 2, 0, 1, 0, 2, 1]


def test_valid_ifd():
    assert valid_ifd(np.array([0.0, 1.0, 1.0001, math.inf, -math.inf, math.nan, 0.3])).tolist() == [
        True, True, False, False, False, False, True]


def test_ifd_bands_numbered_by_increasing_ifd():
    labels, info = cluster_pool("ifd", 3, 42, ifd=np.array(IFD3))
    assert labels.tolist() == WANT3
    assert info["sizes"] == [3, 3, 3]
    assert info["n_clusters"] == 3 and info["flagged_ifd"] == 0
    assert "flagged_cluster" not in info
    # centres: band means 0.1, 0.5, 0.9 ((0.1+0.12+0.08)/3 = 0.1, ...)
    assert info["centres"] == pytest.approx([0.1, 0.5, 0.9])


def test_flagged_ifd_form_one_extra_cluster():
    ifd = np.array(IFD3 + [1.5, math.inf, math.nan, 1.0])
    labels, info = cluster_pool("ifd", 3, 42, ifd=ifd)
    # 1.5, inf, nan -> cluster 3 (= K); 1.0 is valid (<= 1) and joins the high band (0.9)
    assert labels.tolist() == WANT3 + [3, 3, 3, 2]
    assert info["flagged_ifd"] == 3 and info["flagged_cluster"] == 3
    assert info["n_clusters"] == 4
    assert info["sizes"] == [3, 3, 4, 3]


def test_fewer_distinct_values_than_k():
    labels, info = cluster_pool("ifd", 7, 42, ifd=np.array([0.7, 0.2, 0.2, 0.7, 0.7]))
    # two distinct values -> two clusters, 0 = the lower IFD
    assert labels.tolist() == [1, 0, 0, 1, 1]
    assert info["n_clusters"] == 2 and info["sizes"] == [2, 3]
    # with a flagged sample the extra cluster is numbered 2 (after the 2 real ones), not 7
    labels, info = cluster_pool("ifd", 7, 42, ifd=np.array([0.7, 0.2, 3.0]))
    assert labels.tolist() == [1, 0, 2]
    assert info["flagged_cluster"] == 2 and info["sizes"] == [1, 1, 1]


def test_all_flagged_is_one_cluster():
    labels, info = cluster_pool("ifd", 3, 42, ifd=np.array([2.0, math.inf, math.nan]))
    assert labels.tolist() == [0, 0, 0]
    assert info["flagged_cluster"] == 0 and info["sizes"] == [3]


def two_groups(n_per=6, dim=8, seed=0):
    """Two tight groups of embeddings around orthogonal directions e0 and e1."""
    rng = np.random.default_rng(seed)
    e = np.zeros((2 * n_per, dim))
    e[:n_per, 0] = 1.0
    e[n_per:, 1] = 1.0
    return e + 0.01 * rng.standard_normal(e.shape)


def test_embedding_clusters_separate_groups():
    emb = two_groups()
    labels, info = cluster_pool("embedding", 2, 42, emb=emb)
    first, second = labels[:6], labels[6:]
    assert len(set(first.tolist())) == 1 and len(set(second.tolist())) == 1
    assert first[0] != second[0]
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6
    assert info["sizes"] == [6, 6] and info["n_clusters"] == 2


def test_both_numbered_by_ifd():
    emb = two_groups()
    # group of e0 is the hard one (IFD ~0.8), group of e1 the easy one (~0.2): cluster 0 = e1 group
    ifd = np.array([0.8, 0.82, 0.78, 0.81, 0.79, 0.8, 0.2, 0.22, 0.18, 0.21, 0.19, 0.2])
    labels, info = cluster_pool("both", 2, 42, ifd=ifd, emb=emb)
    assert labels.tolist() == [1] * 6 + [0] * 6
    assert info["sizes"] == [6, 6]
    # a flagged IFD goes to the extra cluster 2
    ifd2 = ifd.copy()
    ifd2[0] = 1.7
    labels, info = cluster_pool("both", 2, 42, ifd=ifd2, emb=emb)
    assert labels.tolist() == [2] + [1] * 5 + [0] * 6
    assert info["sizes"] == [6, 5, 1] and info["flagged_cluster"] == 2


@pytest.mark.parametrize("features,kw", [
    ("ifd", {}),
    ("ifd", {"emb": np.eye(3)}),
    ("embedding", {}),
    ("embedding", {"ifd": np.array([0.1, 0.2, 0.3])}),
    ("both", {"ifd": np.array([0.1, 0.2, 0.3])}),
    ("both", {"emb": np.eye(3)}),
])
def test_missing_inputs_are_an_error(features, kw):
    with pytest.raises(ValueError):
        cluster_pool(features, 2, 42, **kw)


def test_seeded_and_deterministic():
    rng = np.random.default_rng(3)
    ifd = rng.uniform(0.0, 1.0, 60)
    a, _ = cluster_pool("ifd", 5, 42, ifd=ifd)
    b, _ = cluster_pool("ifd", 5, 42, ifd=ifd)
    assert a.tolist() == b.tolist()
    # 1-D k-means bands are contiguous: sorted by IFD, labels never decrease
    assert np.all(np.diff(a[np.argsort(ifd)]) >= 0)


def test_a_large_pool_is_fitted_on_a_sample_and_assigned_to_the_nearest_centre(monkeypatch):
    import leadsel.select.clusters as clusters

    rng = np.random.default_rng(0)
    ifd = np.concatenate([rng.normal(c, 0.02, size=400) for c in (0.2, 0.5, 0.8)])
    small, info_small = clusters.cluster_pool("ifd", 3, 42, ifd=ifd)
    monkeypatch.setattr(clusters, "FIT_MAX", 300)            # fit on 300 of the 1,200
    labels, info = clusters.cluster_pool("ifd", 3, 42, ifd=ifd)
    centres = np.asarray(info["centres"])
    assert np.allclose(centres, [0.2, 0.5, 0.8], atol=0.01)
    nearest = np.argmin(np.abs(ifd[:, None] - centres[None, :]), axis=1)
    assert labels.tolist() == nearest.tolist() == small.tolist()
