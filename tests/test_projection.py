"""LESS-style block-wise projections (dense Rademacher and sparse JL): determinism, chunking
invariance, JL behaviour, block boundaries, memory (the full in_dim x out_dim matrix is never
built), the sparse projection's block cache and the make_projection factory."""
from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest

from leadsel.scoring.projection import (RademacherProjection, SparseJLProjection, l2_normalise,
                                        make_projection)


def dense(p: RademacherProjection) -> np.ndarray:
    """The whole matrix, stacked from its blocks (test-only, small sizes)."""
    return np.concatenate([p.block_matrix(b) for b in range(p.n_blocks)])


def test_matches_dense_matrix_and_entries():
    # in_dim = 100 is not a multiple of block = 7: 15 blocks, the last one has 2 rows
    p = RademacherProjection(100, out_dim=16, seed=3, block=7, dtype=np.float64)
    assert p.n_blocks == 15 and p.block_rows(14) == (98, 100)
    m = dense(p)
    assert m.shape == (100, 16)
    np.testing.assert_array_equal(np.abs(m), 0.25)  # +-1/sqrt(16)
    g = np.random.default_rng(0).normal(size=(5, 100))
    np.testing.assert_allclose(p.project(g), g @ m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.project(g[2]), g[2] @ m, rtol=1e-12, atol=1e-12)  # 1-D input
    # a block is regenerated identically in any order; both signs appear about equally often
    np.testing.assert_array_equal(p.block_matrix(9), m[63:70])
    big = RademacherProjection(4096, out_dim=256, block=4096)
    assert abs(float(np.mean(big.block_matrix(0) > 0)) - 0.5) < 0.005  # 1M signs: std 0.0005


def test_spec_of_block_generation():
    # block b is the little-endian bit stream of default_rng([seed, b]).bit_generator.random_raw
    p = RademacherProjection(50, out_dim=64, seed=11, block=20)
    raw = np.random.default_rng([11, 1]).bit_generator.random_raw(20)  # 20 rows x 64 bits
    bits = np.array([[(int(w) >> j) & 1 for j in range(64)] for w in raw])
    np.testing.assert_array_equal(p.block_matrix(1), (2.0 * bits - 1) / 8.0)
    # rows depend on (seed, block, row) only: a longer in_dim shares the common rows
    np.testing.assert_array_equal(dense(RademacherProjection(37, 64, seed=11, block=20)), dense(p)[:37])


def test_seed_determinism():
    g = np.random.default_rng(1).normal(size=(4, 3000)).astype(np.float32)
    a = RademacherProjection(3000, 128, seed=5, block=1000).project(g)
    b = RademacherProjection(3000, 128, seed=5, block=1000).project(g)
    c = RademacherProjection(3000, 128, seed=6, block=1000).project(g)
    assert a.dtype == np.float32 and a.shape == (4, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("cls", [RademacherProjection, SparseJLProjection])
def test_independent_of_batch_and_column_split(cls):
    p = cls(5000, 256, seed=2, block=1024)
    g = np.random.default_rng(2).normal(size=(6, 5000)).astype(np.float32)
    whole = p.project(g)
    rows = np.stack([p.project(g[i:i + 1])[0] for i in range(6)])
    np.testing.assert_allclose(rows, whole, rtol=1e-5, atol=1e-5)
    # any split of the input columns (boundaries inside blocks too) sums to the whole
    cuts = [0, 1, 700, 1024, 3333, 5000]
    parts = sum(p.project_part(g[:, s:e], s) for s, e in itertools.pairwise(cuts))
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-4)
    assert p.project_part(g[:, :0], 5000).shape == (6, 256)  # an empty part contributes zero
    with pytest.raises(ValueError, match="exceed"):
        p.project_part(g[:, :10], 4995)


def test_norm_preservation():
    # ||x S||^2 has relative std ~ sqrt(2/d) = 0.044 at d = 1024, so ||x S|| about 0.022: +-15% is
    # ~7 std of the norm; essentially all 50 vectors pass (the spec asks for >= 95%)
    d, n_in = 1024, 20000
    x = l2_normalise(np.random.default_rng(3).normal(size=(50, n_in))).astype(np.float32)
    y = RademacherProjection(n_in, d, seed=0, block=10000).project(x)
    norms = np.linalg.norm(y.astype(np.float64), axis=1)
    assert np.mean(np.abs(norms - 1.0) <= 0.15) >= 0.95
    assert abs(norms.mean() - 1.0) < 0.02  # mean of 50: std ~ 0.022 / sqrt 50 = 0.003
    assert 0.01 < norms.std() < 0.04  # ~ sqrt(1/(2d)) = 0.022


def test_inner_products_preserved():
    # <xS, yS> - <x, y> has std ~ sqrt((1 + <x, y>^2) / d) <= 0.044 at d = 1024
    # (4.5 std = 0.2 bounds the max of 20; mean |err| ~ 0.8 * 0.037 = 0.03)
    rng = np.random.default_rng(4)
    n_in, d = 4000, 1024
    base = l2_normalise(rng.normal(size=(20, n_in)))
    other = l2_normalise(rng.normal(size=(20, n_in)))
    rho = np.linspace(-0.9, 0.9, 20)[:, None]
    mixed = rho * base + np.sqrt(1 - rho ** 2) * other  # unit vectors with <base, mixed> ~ rho
    p = RademacherProjection(n_in, d, seed=1, block=4096)
    pb, pm, po = np.split(p.project(np.concatenate([base, mixed, other]).astype(np.float32)), 3)
    err = np.sum(pb * pm, axis=1, dtype=np.float64) - np.sum(base * mixed, axis=1)
    assert np.abs(err).max() < 0.2 and np.abs(err).mean() < 0.06
    # and the cosine ranking of a clearly-closer vector is kept
    zb, zm, zo = (l2_normalise(v) for v in (pb, pm, po))
    assert np.sum(zb[-1] * zm[-1]) > np.sum(zb[-1] * zo[-1]) + 0.5


def test_memory_never_full_matrix():
    n_in, d, block = 12000, 512, 1024
    p = RademacherProjection(n_in, d, seed=0, block=block)
    g = np.random.default_rng(5).normal(size=(4, n_in)).astype(np.float32)
    shapes = []
    orig = p._signs

    def spy(b, rows=None):
        out = orig(b, rows)
        shapes.append(out.shape)
        return out

    p._signs = spy
    tracemalloc.start()
    try:
        p.project(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(shapes) == p.n_blocks == 12
    assert max(r for r, _ in shapes) <= block and p.max_block_shape == (block, d)
    assert shapes[-1] == (n_in - 11 * block, d)  # 12000 is not a multiple of 1024
    full = n_in * d * 4  # 24.6 MB in float32 (one block: 2 MB)
    assert peak < full / 4, f"peak {peak / 2**20:.1f} MiB vs full matrix {full / 2**20:.1f} MiB"


def test_input_checks_and_l2_normalise():
    p = RademacherProjection(10, 4)
    with pytest.raises(TypeError, match="numpy"):
        p.project([[0.0] * 10])
    with pytest.raises(ValueError, match="shape"):
        p.project(np.zeros((2, 11)))
    with pytest.raises(ValueError, match="seed"):
        RademacherProjection(10, 4, seed=-1)
    with pytest.raises(ValueError, match="block"):
        RademacherProjection(10, 4, block=0)
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    z = l2_normalise(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(np.array([1, 1])), [1 / math.sqrt(2)] * 2)


# ----------------------------------------------------------------------------- sparse JL


def sparse_dense(p: SparseJLProjection) -> np.ndarray:
    return np.concatenate([p.block_matrix(b).toarray() for b in range(p.n_blocks)])


def test_sparse_matches_dense_matrix_and_entries():
    p = SparseJLProjection(100, out_dim=16, seed=3, nnz=3, block=7, dtype=np.float64)
    assert p.n_blocks == 15 and p.block_rows(14) == (98, 100) and p.kind == "sparse"
    m = sparse_dense(p)
    assert m.shape == (100, 16)
    # exactly nnz distinct columns per row, each +-1/sqrt(nnz): every row has unit norm
    assert ((m != 0).sum(axis=1) == 3).all()
    np.testing.assert_allclose(np.abs(m[m != 0]), 1 / math.sqrt(3), rtol=1e-15)
    g = np.random.default_rng(0).normal(size=(5, 100))
    np.testing.assert_allclose(p.project(g), g @ m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p(g[2]), g[2] @ m, rtol=1e-12, atol=1e-12)  # 1-D input, __call__
    # 1-sparse vectors keep their norm exactly (distinct columns: no collision inside a row)
    np.testing.assert_allclose(np.linalg.norm(p.project(np.eye(100)), axis=1), 1.0, rtol=1e-12)
    # blocks regenerate identically alone, in any order, with or without the cache
    fresh = SparseJLProjection(100, 16, seed=3, nnz=3, block=7, dtype=np.float64, cache_bytes=0)
    np.testing.assert_array_equal(fresh.block_matrix(9).toarray(), m[63:70])
    # rows depend on (seed, block, row) only: a shorter in_dim shares the common rows
    short = SparseJLProjection(37, 16, seed=3, nnz=3, block=7, dtype=np.float64)
    np.testing.assert_array_equal(sparse_dense(short), m[:37])


def test_sparse_spec_of_block_generation():
    # Floyd's algorithm on the raw words of default_rng([seed, b]), row r using words r*nnz + k
    d, nnz, block = 16, 3, 20
    p = SparseJLProjection(50, out_dim=d, seed=11, nnz=nnz, block=block)
    cols, signs = p.block_entries(1)
    raw = [int(w) for w in np.random.default_rng([11, 1]).bit_generator.random_raw(block * nnz)]
    for r in range(block):
        chosen, sgn = [], []
        for k in range(nnz):
            w, j = raw[r * nnz + k], d - nnz + k
            t = ((w & 0xFFFFFFFF) * (j + 1)) >> 32
            chosen.append(j if t in chosen else t)
            sgn.append(1.0 if w >> 63 else -1.0)
        assert cols[r].tolist() == chosen and signs[r].tolist() == sgn
    assert cols.dtype == np.int32 and signs.dtype == np.float32 and not cols.flags.writeable


def test_sparse_column_subsets_and_signs_uniform():
    # 65536 rows, d = 64, nnz = 4: each column in a row w.p. 4/64 (count 4096, std ~62); each
    # pair of columns together w.p. 6/2016 (count ~195, std ~14); 262144 signs (std of mean 0.001)
    d, nnz, rows = 64, 4, 65536
    cols, signs = SparseJLProjection(rows, d, seed=9, nnz=nnz, block=rows).block_entries(0)
    srt = np.sort(cols, axis=1)
    assert (np.diff(srt, axis=1) > 0).all()  # distinct within each row
    counts = np.bincount(cols.ravel(), minlength=d)
    assert np.abs(counts - rows * nnz / d).max() < 5 * 62
    pairs = np.concatenate([srt[:, a] * d + srt[:, b] for a, b in itertools.combinations(range(nnz), 2)])
    pc = np.bincount(pairs, minlength=d * d).reshape(d, d)[np.triu_indices(d, 1)]
    assert np.abs(pc - rows * 6 / (d * (d - 1) / 2)).max() < 6 * 14
    assert abs(float(np.mean(signs > 0)) - 0.5) < 0.005


def test_sparse_seed_determinism_and_factory():
    g = np.random.default_rng(1).normal(size=(4, 3000)).astype(np.float32)
    a = SparseJLProjection(3000, 128, seed=5, block=1000).project(g)
    b = make_projection("sparse", 3000, 128, 5, block=1000).project(g)
    c = SparseJLProjection(3000, 128, seed=6, block=1000).project(g)
    e = SparseJLProjection(3000, 128, seed=5, nnz=8, block=1000).project(g)
    assert a.dtype == np.float32 and a.shape == (4, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, e)
    for p in (SparseJLProjection(3000, 128, seed=5, nnz=2, block=700, cache_bytes=0),
              RademacherProjection(3000, 128, seed=5, block=700)):
        desc = p.describe()
        assert desc["kind"] == p.kind and desc["in_dim"] == 3000 and desc["seed"] == 5
        q = make_projection(**desc)  # a sidecar's record rebuilds the same projection
        assert type(q) is type(p) and q.describe() == desc
        np.testing.assert_array_equal(q.project(g), p.project(g))
    assert SparseJLProjection(10, 4, nnz=2).describe() == {
        "kind": "sparse", "in_dim": 10, "out_dim": 4, "seed": 0, "block": 65536, "dtype": "float32", "nnz": 2}
    with pytest.raises(ValueError, match="kind"):
        make_projection("gaussian", 10, 4)
    with pytest.raises(ValueError, match="nnz"):
        SparseJLProjection(10, 4, nnz=5)
    with pytest.raises(ValueError, match="nnz"):
        SparseJLProjection(10, 4, nnz=0)
    with pytest.raises(ValueError, match="cache_bytes"):
        SparseJLProjection(10, 4, cache_bytes=-1)
    with pytest.raises(TypeError, match="numpy"):
        SparseJLProjection(10, 4).project([[0.0] * 10])


def test_sparse_accumulates_in_float32():
    p = SparseJLProjection(5000, 256, seed=2, block=1024)
    g = np.random.default_rng(2).normal(size=(6, 5000)).astype(np.float32)
    whole = p.project(g)
    # float64 and integer inputs are accumulated in float32
    np.testing.assert_allclose(p.project(g.astype(np.float64)), whole, rtol=1e-6, atol=1e-6)
    assert p.project(np.ones((2, 5000), dtype=np.int64)).dtype == np.float32


def test_sparse_norm_preservation():
    # Var ||xS||^2 = (2/d)(1 - sum x^4), as for the dense matrix: the norm of a spread-out unit
    # vector has std ~ sqrt(1/(2d)) = 0.022 at d = 1024, so +-15% is ~7 std
    d, n_in = 1024, 20000
    p = SparseJLProjection(n_in, d, seed=0, nnz=4, block=8192)
    rng = np.random.default_rng(3)
    x = l2_normalise(rng.normal(size=(50, n_in))).astype(np.float32)
    norms = np.linalg.norm(p.project(x).astype(np.float64), axis=1)
    assert np.mean(np.abs(norms - 1.0) <= 0.15) >= 0.95
    assert abs(norms.mean() - 1.0) < 0.02
    assert 0.01 < norms.std() < 0.04

    # heavy coordinates. (e_i + e_j)/sqrt 2: ||xS||^2 = 1 + m/4, m = signed count of shared
    # columns (0 w.p. ~98.4%, |m| = 1 -> norm 1.118 / 0.866, |m| >= 2 w.p. ~7e-5); never above sqrt 2
    ij = np.stack([rng.choice(n_in, size=2, replace=False) for _ in range(400)])
    two = np.zeros((400, n_in), dtype=np.float32)
    two[np.arange(400)[:, None], ij] = 1 / math.sqrt(2)
    n2 = np.linalg.norm(p.project(two).astype(np.float64), axis=1)
    m = (n2 ** 2 - 1) * 4
    np.testing.assert_allclose(m, np.round(m), atol=1e-4)
    assert (n2 <= math.sqrt(2) + 1e-5).all() and np.mean(np.abs(n2 - 1) <= 0.15) >= 0.95
    assert np.mean(np.round(m) == 0) > 0.9
    # a few heavy coordinates (80% of the energy on 5 of them) on dense noise, at a large scale
    heavy = rng.normal(size=(50, n_in)) * 0.2 / math.sqrt(n_in) * 1e6
    for r in range(50):
        heavy[r, rng.choice(n_in, size=5, replace=False)] = rng.normal(size=5) * 0.4 * 1e6
    heavy = heavy.astype(np.float32)
    rel = (np.linalg.norm(p.project(heavy).astype(np.float64), axis=1)
           / np.linalg.norm(heavy.astype(np.float64), axis=1))
    assert np.isfinite(rel).all() and np.mean(np.abs(rel - 1) <= 0.15) >= 0.95 and rel.max() < 1.5


def test_sparse_inner_products_preserved():
    # <xS, yS> - <x, y> has variance (1 + <x,y>^2 - 2 sum x_i^2 y_i^2) / d, as for the dense one
    rng = np.random.default_rng(4)
    n_in, d = 4000, 1024
    base = l2_normalise(rng.normal(size=(20, n_in)))
    other = l2_normalise(rng.normal(size=(20, n_in)))
    rho = np.linspace(-0.9, 0.9, 20)[:, None]
    mixed = rho * base + np.sqrt(1 - rho ** 2) * other
    p = SparseJLProjection(n_in, d, seed=1, nnz=4, block=1500)
    pb, pm, po = np.split(p.project(np.concatenate([base, mixed, other]).astype(np.float32)), 3)
    err = np.sum(pb * pm, axis=1, dtype=np.float64) - np.sum(base * mixed, axis=1)
    assert np.abs(err).max() < 0.2 and np.abs(err).mean() < 0.06
    zb, zm, zo = (l2_normalise(v) for v in (pb, pm, po))
    assert np.sum(zb[-1] * zm[-1]) > np.sum(zb[-1] * zo[-1]) + 0.5


def test_sparse_cache_limit():
    n_in, d, block, nnz = 10000, 256, 1000, 4
    per_block = block * nnz * (4 + 4)  # int32 columns + float32 signs: 32 kB
    g = np.random.default_rng(5).normal(size=(3, n_in)).astype(np.float32)
    ref = None
    for limit, cached_blocks in ((256 * 2 ** 20, 10), (0, 0), (per_block - 1, 0), (3 * per_block + 5, 3)):
        p = SparseJLProjection(n_in, d, seed=4, nnz=nnz, block=block, cache_bytes=limit)
        first = p.project(g)
        assert p.n_generated == 10 and p.cached_bytes == cached_blocks * per_block <= limit
        second = p.project(g)
        assert p.n_generated == 10 + (10 - cached_blocks)  # blocks beyond the limit are regenerated
        parts = p.project_part(g[:, 2500:], 2500) + p.project_part(g[:, :2500], 0)
        ref = first if ref is None else ref
        np.testing.assert_array_equal(first, ref)  # the cache never changes results
        np.testing.assert_array_equal(second, ref)
        np.testing.assert_allclose(parts, ref, rtol=1e-5, atol=1e-5)
        assert p.max_block_shape == (block, d)
    p.clear_cache()
    assert p.cached_bytes == 0
    np.testing.assert_array_equal(p.project(g), ref)
