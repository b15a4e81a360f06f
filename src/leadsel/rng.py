"""Named random streams: every seeded generator a method draws from, by name.

``stream(seed, name)`` is ``numpy.random.default_rng([seed, STREAMS[name]])``. A name says what the
stream is for; its number is part of the results (changing it changes every run that draws from
it), so numbers are never reused for another purpose under the same seed and never changed. Streams
that differ only by an index the caller owns (a warm-up epoch, a projection block) take that index
in place of a name. The bundled pool names its streams in :mod:`leadsel.data.bundled`.
"""
from __future__ import annotations

import numpy as np

STREAMS = {
    "lead": 1,               # LEAD (run seed): softmax sampling and each round's training order
    "epoch-order": 2,        # static methods, IterIT, Dynamic, ClusterUCB (run seed): each epoch's training order
    "random-subset": 3,      # method random (run seed): its subset
    "targeted-warmup": 5,    # Dynamic, ClusterUCB (run seed): the warm-up round's random samples
    "cold-start": 1,         # ClusterUCB's epoch (its own seed, see clusterucb_core.run_clusterucb): the cold start
}


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator of stream ``name`` under ``seed``."""
    return np.random.default_rng([int(seed), STREAMS[name]])
