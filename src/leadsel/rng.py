"""Named random streams: the seeded generators the selection methods draw from, by name.

``stream(seed, name)`` is ``numpy.random.default_rng([seed, STREAMS[name]])``. A name says what the
stream is for; its number is part of the results (changing it changes every run that draws from
it), so numbers are never changed. Two names may share a number only when they are drawn under
different seeds (``cold-start`` is seeded per ClusterUCB epoch, ``lead`` by the run seed).

The other seeded generators take a seed of their own and, where there are many, an index the
caller owns: each warm-up epoch's order (``[warmup.seed, epoch]``, :mod:`leadsel.scoring.warmup`),
each projection block (``[grads.seed, block]``, :mod:`leadsel.scoring.projection`), the bundled
pool's shuffles (named in :mod:`leadsel.data.bundled`); the bandits, spherical k-means and
ClusterUCB's bandit draw from ``default_rng(seed)`` of the seed they are given.
"""
from __future__ import annotations

import numpy as np

STREAMS = {
    "lead": 1,               # LEAD (run seed): softmax sampling and each round's training order
    "epoch-order": 2,        # static methods, IterIT, Dynamic, ClusterUCB (run seed): each epoch's training order
    "random-subset": 3,      # method random (run seed): its subset
    "targeted-warmup": 5,    # Dynamic, ClusterUCB (run seed): the warm-up round's random samples
    "gradient-sketch": 6,    # LEAD (run seed): the hash seed of its reference-gradient sketch
    "cold-start": 1,         # ClusterUCB's epoch (its own seed, see clusterucb_core.run_clusterucb): the cold start
}


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator of stream ``name`` under ``seed``."""
    return np.random.default_rng([int(seed), STREAMS[name]])
