"""LESS-style random projection of per-sample gradients (Xia et al., LESS, ICML 2024), in numpy.

Two projections with one interface (``project(G)`` / ``__call__``, ``project_part(G_part,
start)``, ``in_dim``, ``out_dim``, ``seed``, ``block``, ``n_blocks``, ``block_rows(b)``,
``max_block_shape``, ``kind``, ``describe()``); :func:`make_projection` builds either by name:

* :class:`RademacherProjection` (``kind = "rademacher"``): dense ``+-1/sqrt(d)``, described
  below. Every block is regenerated at every call: 0.05-0.25 s per 16384-row block on a 2-core
  CPU, i.e. 20-70 s per call for a 4.9M-parameter LoRA, whatever the batch size.
* :class:`SparseJLProjection` (``kind = "sparse"``): each input coordinate goes to ``nnz``
  distinct outputs with value ``+-1/sqrt(nnz)`` (sparse JL), applied as a sparse product, with
  the generated blocks cached in memory up to a byte limit. Same norm/inner-product variance as
  the dense one for spread-out vectors; see its docstring. On the same loaded 2-core CPU, a
  (16, 4.9M) float32 batch takes ~0.75 s on the first call (0.6 s of it generating the blocks;
  plus ~0.7 s once per process to import scipy.sparse) and ~0.4 s once cached (nnz = 4).

A projection is fully determined by ``describe()`` (``make_projection(**p.describe())``
rebuilds it): record that dict in a sidecar next to stored features.

Dense Rademacher projection
---------------------------

A gradient of dimension ``P`` (millions for a 7B LoRA) is mapped to ``d`` dimensions (default
1024) by a fixed-seed Rademacher matrix ``S`` (``P x d``, entries ``+-1/sqrt(d)``):
``project(g) = g @ S``. By Johnson-Lindenstrauss, norms and inner products are approximately
preserved: for a unit vector ``x``, ``E ||x S||^2 = 1`` and ``Var ||x S||^2 = (2/d) (1 - sum x_i^4)
<= 2/d``, so the squared norm has relative std ``~ sqrt(2/d)`` (0.044 at d = 1024) and the norm
about half that (0.022); for unit ``x, y``, ``<xS, yS> - <x, y>`` has std ``~ sqrt((1 + <x,y>^2)/d)``.

``S`` is never materialised: it is defined block-wise and regenerated on the fly.

* The ``P`` input dimensions are split into fixed blocks of ``block`` rows: block ``b`` covers
  rows ``[b * block, min((b + 1) * block, P))``. Block boundaries are fixed by the projection, not
  by the caller's batch or chunking.
* Block ``b`` is generated from ``np.random.default_rng([seed, b])``: its bit generator (PCG64
  seeded with ``SeedSequence([seed, b])``) emits ``ceil(block * d / 64)`` raw 64-bit words
  (``bit_generator.random_raw``; raw bit-generator streams are stable across NumPy versions, unlike
  ``Generator`` methods), read little-endian and unpacked into bits little-endian: bit ``j`` of the
  stream is entry ``(j // d, j % d)`` of the block, ``+1`` for a set bit and ``-1`` otherwise. The
  stream is sequential, so only the words for the rows needed are generated, and row ``i`` of
  ``S`` depends only on ``(seed, i // block, i % block, d)`` (the last, shorter block is the first
  rows of what a full block would be).
* ``project`` loops over blocks: memory is one ``block x d`` sign matrix (in ``dtype``) plus its
  bits at a time, never ``P x d``. The ``1/sqrt(d)`` scale is applied once to the result.
  Any block can be regenerated alone (:meth:`RademacherProjection.block_matrix`), so the result
  does not depend on the batch size or on how the caller splits the input columns
  (:meth:`RademacherProjection.project_part` projects a column range; the parts sum to the whole),
  up to float rounding.
* Inputs are numpy arrays only (a torch tensor: pass ``t.detach().cpu().numpy()``); the sum is
  accumulated in ``dtype`` (float32 by default), one block's contribution at a time.

Cost: generating a block costs about as much as multiplying a batch of a few dozen rows by it, so
project gradients in batches (the sign matrix is regenerated per call, not cached).

:func:`l2_normalise` row-normalises (LESS compares unit-normalised projected gradients).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..numeric import is_int, l2_normalise

__all__ = ["RademacherProjection", "SparseJLProjection", "make_projection", "l2_normalise"]


_SIGN_TABLES: dict[np.dtype, np.ndarray] = {}


def _sign_table(dtype: np.dtype) -> np.ndarray:
    """(256, 8): row v holds 2 * bit_j(v) - 1 for j = 0..7 (little-endian bit order)."""
    if dtype not in _SIGN_TABLES:
        bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
        _SIGN_TABLES[dtype] = (2.0 * bits - 1.0).astype(dtype)
    return _SIGN_TABLES[dtype]


class _BlockProjection:
    """Shared part of the block-wise projections: argument checks, the block layout and the loop
    of :meth:`project_part` over the blocks a column range touches. A subclass provides
    ``_contribution(G_cols, b, r0, r1)``, the *unscaled* product of ``G_cols`` (``(batch, r1 - r0)``,
    in ``dtype``) with rows ``[r0, r1)`` of block ``b``; the constant ``scale`` is applied once at
    the end."""

    kind = ""

    def __init__(self, in_dim: int, out_dim: int, seed: int, block: int, dtype: Any) -> None:
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("block", block)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.in_dim, self.out_dim, self.seed, self.block = int(in_dim), int(out_dim), int(seed), int(block)
        self.n_blocks = -(-self.in_dim // self.block)
        self.max_block_shape: tuple[int, int] = (0, 0)

    def describe(self) -> dict[str, Any]:
        """What a sidecar should record: ``make_projection(**describe())`` rebuilds an identical
        projection (the cache limit is left out: it changes speed, never results)."""
        return {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim, "seed": self.seed,
                "block": self.block, "dtype": self.dtype.name}

    def block_rows(self, b: int) -> tuple[int, int]:
        """Input rows ``[lo, hi)`` covered by block ``b``."""
        if not is_int(b) or not 0 <= b < self.n_blocks:
            raise ValueError(f"block index must be in [0, {self.n_blocks}), got {b!r}")
        lo = int(b) * self.block
        return lo, min(lo + self.block, self.in_dim)

    def _check(self, G: Any, width: int) -> tuple[np.ndarray, bool]:
        if not isinstance(G, np.ndarray):
            raise TypeError(f"expected a numpy array, got {type(G).__name__} (torch: pass t.detach().cpu().numpy())")
        vec = G.ndim == 1
        G2 = G[None, :] if vec else G
        if G2.ndim != 2 or G2.shape[1] != width:
            raise ValueError(f"expected shape (batch, {width}) or ({width},), got {G.shape}")
        if not (np.issubdtype(G2.dtype, np.floating) or np.issubdtype(G2.dtype, np.integer)):
            raise ValueError(f"expected a numeric array, got dtype {G2.dtype}")
        return G2, vec

    def _contribution(self, G_cols: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
        raise NotImplementedError

    def project_part(self, G_part: np.ndarray, start: int) -> np.ndarray:
        """Contribution of input columns ``[start, start + width)`` (``G_part`` is
        ``(batch, width)``): ``G_part @ S[start:start + width]``. Summing the parts over any split
        of ``[0, in_dim)`` gives :meth:`project` (up to float rounding)."""
        if not is_int(start) or not 0 <= start <= self.in_dim:
            raise ValueError(f"start must be an int in [0, {self.in_dim}], got {start!r}")
        width = G_part.shape[-1] if isinstance(G_part, np.ndarray) and G_part.ndim else -1
        if width < 0 or start + width > self.in_dim:
            raise ValueError(f"columns [{start}, {start + max(width, 0)}) exceed in_dim={self.in_dim}")
        G2, vec = self._check(G_part, width)
        out = np.zeros((G2.shape[0], self.out_dim), dtype=self.dtype)
        stop = start + width
        if width:
            for b in range(start // self.block, (stop - 1) // self.block + 1):
                lo, hi = self.block_rows(b)
                s, e = max(lo, start), min(hi, stop)
                out += self._contribution(G2[:, s - start:e - start].astype(self.dtype, copy=False), b, s - lo, e - lo)
        out *= self.dtype.type(self.scale)
        return out[0] if vec else out

    def project(self, G: np.ndarray) -> np.ndarray:
        """``G @ S`` for ``G`` of shape ``(batch, in_dim)`` or ``(in_dim,)``, in ``dtype``."""
        self._check(G, self.in_dim)
        return self.project_part(G, 0)

    def __call__(self, G: np.ndarray) -> np.ndarray:
        return self.project(G)


class RademacherProjection(_BlockProjection):
    """Fixed-seed block-wise Rademacher projection ``R^in_dim -> R^out_dim`` (module docstring).

    ``project(G)`` maps ``(batch, in_dim)`` (or ``(in_dim,)``) to ``(batch, out_dim)`` (or
    ``(out_dim,)``). ``max_block_shape`` records the largest sign matrix generated so far.
    """

    kind = "rademacher"

    def __init__(self, in_dim: int, out_dim: int = 1024, seed: int = 0, block: int = 16384,
                 dtype: Any = np.float32) -> None:
        super().__init__(in_dim, out_dim, seed, block, dtype)
        self.scale = 1.0 / math.sqrt(self.out_dim)

    def __repr__(self) -> str:
        return (f"RademacherProjection(in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed}, "
                f"block={self.block}, dtype={self.dtype.name})")

    def _signs(self, b: int, rows: int | None = None) -> np.ndarray:
        """The first ``rows`` rows (default: all) of block ``b``'s +-1 matrix, in ``dtype``,
        unscaled. Only the raw words those rows need are generated (the stream is sequential)."""
        lo, hi = self.block_rows(b)
        rows = hi - lo if rows is None else rows
        if not 0 <= rows <= hi - lo:
            raise ValueError(f"block {b} has {hi - lo} rows, asked for {rows}")
        used = rows * self.out_dim
        bg = np.random.default_rng([self.seed, int(b)]).bit_generator
        raw = np.asarray(bg.random_raw(-(-used // 64)), dtype=np.uint64).astype("<u8", copy=False).view(np.uint8)
        # byte -> its 8 signs, little-endian bit order (one gather instead of unpack + convert)
        signs = np.take(_sign_table(self.dtype), raw, axis=0).reshape(-1)[:used].reshape(rows, self.out_dim)
        if signs.size > self.max_block_shape[0] * self.max_block_shape[1]:
            self.max_block_shape = signs.shape
        return signs

    def block_matrix(self, b: int) -> np.ndarray:
        """Rows ``block_rows(b)`` of the projection matrix, entries ``+-1/sqrt(out_dim)``."""
        return self._signs(b) * self.dtype.type(self.scale)

    def _contribution(self, G_cols: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
        return G_cols @ self._signs(b, r1)[r0:]


class SparseJLProjection(_BlockProjection):
    """Fixed-seed block-wise sparse JL projection ``R^in_dim -> R^out_dim`` (Kane & Nelson 2014,
    "graph" construction; CountSketch is ``nnz = 1``).

    Row ``i`` of ``S`` (``in_dim x out_dim``) has exactly ``nnz`` non-zeros, in distinct columns
    chosen uniformly at random, each ``+-1/sqrt(nnz)`` with an independent fair sign; every row
    has unit norm, so a 1-sparse vector keeps its norm exactly.

    JL behaviour. For a unit ``x``, ``E ||xS||^2 = 1`` and ``Var ||xS||^2 = (2/d)(1 - sum x_i^4)``,
    the same as the dense Rademacher matrix, for any ``nnz`` (only pairs ``i != j`` sharing an
    output column contribute; each column is shared with probability ``nnz^2/d^2`` per output, the
    ``1/nnz^2`` of the values cancels it). So for spread-out vectors (gradients) the norm has
    relative std ``~ sqrt(1/(2d))`` (0.022 at d = 1024) and inner products
    ``~ sqrt((1 + <x,y>^2)/d)``, as for the dense one. What ``nnz`` changes is the tail for
    vectors with a few heavy coordinates: ``||xS||^2 - 1`` is a sum of terms ``+-2 x_i x_j / nnz``
    over shared columns, so e.g. for ``(e_i + e_j)/sqrt 2`` it is 0 unless the two rows share a
    column (probability ~ ``nnz^2/d``, 1.6% at nnz = 4, d = 1024) and then ``+-1/nnz`` per shared
    column (so ``||xS||`` is ``sqrt(1 +- 1/4) = 1.118 / 0.866`` for one shared column at nnz = 4,
    outside +-15% only when two or more are shared, probability ~ ``2 C(nnz, 2)^2 / d^2`` ~ 7e-5).
    It never blows up: the rows of ``S`` have unit norm, so ``||xS|| <= ||x||_1`` (``sqrt 2`` for
    that example), and ``||xS||^2 - 1 = sum_{i != j} x_i x_j <S_i, S_j>`` with
    ``|<S_i, S_j>| <= 1``.

    Generation (the spec; stable across NumPy versions, like :class:`RademacherProjection`):

    * Input rows are split into fixed blocks of ``block`` rows (block ``b``: rows
      ``[b * block, min((b + 1) * block, in_dim))``), independent of the caller's batch or split.
    * Block ``b`` uses the raw 64-bit words of ``np.random.default_rng([seed, b]).bit_generator``
      (``random_raw``): row ``r`` of the block uses words ``w_k = word[r * nnz + k]``,
      ``k = 0 .. nnz - 1``. So row ``i`` of ``S`` depends only on ``(seed, i // block,
      i % block, nnz, d)``, and a short last block is the first rows of a full one.
    * Columns: Floyd's algorithm (a uniform ``nnz``-subset of ``range(d)``, no rejection, a fixed
      number of words per row), vectorised over the rows: for ``k = 0 .. nnz - 1``, with
      ``j = d - nnz + k``, ``t = ((w_k & 0xFFFFFFFF) * (j + 1)) >> 32`` (uniform on ``[0, j]`` up
      to a relative bias ``< (j + 1) / 2**32``, i.e. < 2.4e-7 at d = 1024); if ``t`` is one of the
      row's earlier columns, the column is ``j`` instead, else ``t``. Entry ``k`` of the row is in
      that column, with sign ``+1`` if bit 63 of ``w_k`` is set, else ``-1``.
    * A block is kept as ``cols`` (int32, ``(rows, nnz)``) and ``signs`` (``dtype``, ``+-1``,
      unscaled) and applied as a CSC matrix ``(d, rows)`` (= ``S_block^T``, ``nnz`` entries per
      input row): the contribution of ``G`` columns is ``(S_block^T @ G^T)^T``
      (scipy.sparse, single-threaded, ``batch * rows * nnz`` multiply-adds). ``1/sqrt(nnz)`` is
      applied once to the result. A block is always generated whole (a few ms per 65536 rows).

    Cache: generated blocks are kept in memory (``nnz * (4 + itemsize)`` bytes per input row: 32
    bytes at nnz = 4 in float32, i.e. 157 MB for 4.9M rows) while the total stays within
    ``cache_bytes`` (default 256 MiB); a block that does not fit is regenerated at each use and
    nothing is evicted (with calls that sweep the blocks in order, keeping the first ones is what
    an LRU would fail to do). ``cache_bytes=0`` disables it; :meth:`clear_cache` empties it;
    ``cached_bytes`` and ``n_generated`` (blocks generated so far) report on it. The cache does
    not change results (bit-identical either way).
    """

    kind = "sparse"

    def __init__(self, in_dim: int, out_dim: int = 1024, seed: int = 0, nnz: int = 4, block: int = 65536,
                 dtype: Any = np.float32, cache_bytes: int = 256 * 2 ** 20) -> None:
        super().__init__(in_dim, out_dim, seed, block, dtype)
        if not is_int(nnz) or not 1 <= nnz <= self.out_dim:
            raise ValueError(f"nnz must be an int in [1, out_dim={self.out_dim}], got {nnz!r}")
        if self.out_dim >= 2 ** 31:
            raise ValueError(f"out_dim must be < 2**31, got {self.out_dim}")
        if self.block * int(nnz) >= 2 ** 31:
            raise ValueError(f"block * nnz must be < 2**31, got {self.block} * {nnz}")
        if not is_int(cache_bytes) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
        self.nnz, self.cache_bytes = int(nnz), int(cache_bytes)
        self.scale = 1.0 / math.sqrt(self.nnz)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.cached_bytes = 0
        self.n_generated = 0
        self._indptr = np.arange(0, (min(self.block, self.in_dim) + 1) * self.nnz, self.nnz, dtype=np.int32)
        self._indptr.setflags(write=False)

    def __repr__(self) -> str:
        return (f"SparseJLProjection(in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed}, "
                f"nnz={self.nnz}, block={self.block}, dtype={self.dtype.name})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "nnz": self.nnz}

    def clear_cache(self) -> None:
        self._cache.clear()
        self.cached_bytes = 0

    def _generate(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``b`` as ``(cols, signs)``, both ``(rows, nnz)`` (class docstring)."""
        lo, hi = self.block_rows(b)
        rows, s, d = hi - lo, self.nnz, self.out_dim
        w = np.random.default_rng([self.seed, int(b)]).bit_generator.random_raw(rows * s)
        w = np.asarray(w, dtype=np.uint64).reshape(rows, s)
        cols = np.empty((s, rows), dtype=np.int32)  # entry-major while drawing (contiguous compares)
        mask = np.uint64(0xFFFFFFFF)
        for k in range(s):
            j = d - s + k
            t = w[:, k] & mask
            t *= np.uint64(j + 1)
            t >>= np.uint64(32)
            c = t.astype(np.int32)
            if k:
                dup = cols[0] == c
                for q in range(1, k):
                    dup |= cols[q] == c
                c[dup] = j
            cols[k] = c
        signs = np.array([-1.0, 1.0], dtype=self.dtype).take((w >> np.uint64(63)).view(np.int64))
        cols = np.ascontiguousarray(cols.T)
        for a in (cols, signs):
            a.setflags(write=False)  # cached and shared: an in-place edit would corrupt later calls
        self.n_generated += 1
        if rows * d > self.max_block_shape[0] * self.max_block_shape[1]:
            self.max_block_shape = (rows, d)
        return cols, signs

    def block_entries(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``b`` as ``(cols, signs)``: int32 and ``dtype`` arrays of shape ``(rows, nnz)``,
        row ``r`` holding input row ``block_rows(b)[0] + r``'s distinct columns and ``+-1`` signs
        (unscaled). Served from the cache when there, and cached when it fits."""
        hit = self._cache.get(b)
        if hit is not None:
            return hit
        entry = self._generate(b)
        size = entry[0].nbytes + entry[1].nbytes
        if self.cached_bytes + size <= self.cache_bytes:
            self._cache[b] = entry
            self.cached_bytes += size
        return entry

    def block_matrix(self, b: int):
        """Rows ``block_rows(b)`` of the projection matrix as a scipy CSR array
        ``(rows, out_dim)``, entries ``+-1/sqrt(nnz)``."""
        import scipy.sparse as sp

        cols, signs = self.block_entries(b)
        rows = cols.shape[0]
        return sp.csr_array((signs.reshape(-1) * self.dtype.type(self.scale), cols.reshape(-1).copy(),
                             self._indptr[:rows + 1].copy()), shape=(rows, self.out_dim))

    def _contribution(self, G_cols: np.ndarray, b: int, r0: int, r1: int) -> np.ndarray:
        import scipy.sparse as sp

        cols, signs = self.block_entries(b)
        ST = sp.csc_array((signs[r0:r1].reshape(-1), cols[r0:r1].reshape(-1), self._indptr[:r1 - r0 + 1]),
                          shape=(self.out_dim, r1 - r0))
        return (ST @ np.ascontiguousarray(G_cols.T)).T


def make_projection(kind: str, in_dim: int, out_dim: int = 1024, seed: int = 0, **kw: Any):
    """A projection by name: ``"rademacher"`` (:class:`RademacherProjection`) or ``"sparse"``
    (:class:`SparseJLProjection`); ``kw`` goes to the constructor (``block``, ``dtype``; for
    ``"sparse"`` also ``nnz``, ``cache_bytes``). ``make_projection(**p.describe())`` rebuilds
    ``p``."""
    classes = {"rademacher": RademacherProjection, "sparse": SparseJLProjection}
    if kind not in classes:
        raise ValueError(f"unknown projection kind {kind!r}; expected one of {sorted(classes)}")
    return classes[kind](in_dim, out_dim, seed, **kw)
