"""The gradient store: a pool's gradient features on disk, filled shard by shard, resumable.

:func:`~.features.gradient_features` computes a pool's rows in fixed shards of consecutive
positions (batched by length *within* a shard, so the floats do not depend on where a run
stopped). With a :class:`GradientStore` the features go to a float16 memmap ``features.f16``
(n, d); after each shard the memmap is flushed and the sidecar
``features.json`` (shape, dtype, fingerprint, projection seed/dim, adam variant, rows, done
shards) is rewritten atomically, so a restarted job skips the finished shards and ends with the
same bytes as an uninterrupted one. A sidecar that disagrees with the request is refused.
Single process only (no splitting across accelerate ranks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_write_json


class GradientStore:
    """Float16 memmap ``features.f16`` (n, d) plus sidecar ``features.json``, filled shard by shard.

    ``fingerprint`` is the caller's key of what produced the features (model/adapter/optimizer
    state); together with the shape, projection seed/dim, Adam variant, shard size and the rows
    (pool content and indices) it must match on resume, else ValueError.
    """

    FEATURES = "features.f16"
    SIDECAR = "features.json"
    DTYPE = "float16"

    def __init__(self, root: str | Path, fingerprint: str, scratch: bool = False):
        """``scratch``: the store only serves to resume one pass, so a request that does not match
        what it holds (other weights, another shard size) empties it instead of raising."""
        self.root = Path(root)
        self.fingerprint = str(fingerprint)
        self.scratch = scratch
        self.meta: dict | None = None
        self._mm: np.memmap | None = None

    @property
    def features_path(self) -> Path:
        return self.root / self.FEATURES

    @property
    def sidecar_path(self) -> Path:
        return self.root / self.SIDECAR

    def read_sidecar(self) -> dict | None:
        import json

        if not self.sidecar_path.is_file():
            return None
        return json.loads(self.sidecar_path.read_text())

    def open(self, *, n: int, dim: int, seed, adam_variant: str | None, shard: int, rows: str,
             projection: dict | None = None) -> set[int]:
        """Create the store, or validate and reopen it; returns the indices of the finished shards.
        ``projection``: the projection's ``describe()`` (kind, dims, seed, block...), so that stores
        of different projections are never mixed."""
        want = {"shape": [int(n), int(dim)], "dtype": self.DTYPE, "fingerprint": self.fingerprint,
                "projection_seed": seed, "projection_dim": int(dim), "projection": projection,
                "adam_variant": adam_variant,
                "shard": int(shard), "rows": rows}
        have = self.read_sidecar()
        if have is not None and self.scratch and any(have.get(k) != v for k, v in want.items()):
            import shutil

            shutil.rmtree(self.root)
            have = None
        if have is not None and self.features_path.is_file():
            bad = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            if bad:
                detail = "; ".join(f"{k}: stored {a!r}, requested {b!r}" for k, (a, b) in bad.items())
                raise ValueError(f"gradient store {self.root} was written for another request ({detail}); "
                                 "use another directory or delete it")
            if self.features_path.stat().st_size != n * dim * 2:
                raise ValueError(f"gradient store {self.features_path} has {self.features_path.stat().st_size} "
                                 f"bytes, expected {n * dim * 2} for shape ({n}, {dim}) float16")
            self.meta = have
            self._mm = np.memmap(self.features_path, dtype=np.float16, mode="r+", shape=(n, dim))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._mm = np.memmap(self.features_path, dtype=np.float16, mode="w+", shape=(n, dim))
            self._mm.flush()
            self.meta = {"format": "leadsel-grad-features", "version": 1, **want,
                         "n_shards": -(-int(n) // int(shard)), "done_shards": [], "done": 0, "complete": n == 0}
            atomic_write_json(self.sidecar_path, self.meta)
        return set(self.meta["done_shards"])

    def write(self, start: int, feats: np.ndarray) -> None:
        self._mm[start:start + len(feats)] = feats.astype(np.float16)

    def commit_shard(self, k: int, rows: int) -> None:
        """Flush the memmap, then record shard ``k`` (``rows`` rows) as done in the sidecar."""
        self._mm.flush()
        done = sorted(set(self.meta["done_shards"]) | {int(k)})
        self.meta["done_shards"] = done
        self.meta["done"] = int(self.meta["done"]) + int(rows)
        self.meta["complete"] = len(done) == self.meta["n_shards"]
        atomic_write_json(self.sidecar_path, self.meta)

    def array(self) -> np.ndarray:
        """The stored features (a read-only float16 memmap of shape (n, d))."""
        meta = self.meta or self.read_sidecar()
        if meta is None:
            raise FileNotFoundError(f"no gradient store at {self.root}")
        return np.memmap(self.features_path, dtype=np.float16, mode="r", shape=tuple(meta["shape"]))
