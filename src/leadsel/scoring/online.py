"""What a selector may compute with the model being trained, between rounds.

LEAD never calls this: its utilities come from the training forwards. The peers do, and that is
exactly the cost LEAD claims to save, so every pass made here is a real pass over the samples
asked for, counted in ``run.json`` under the stages ``select-loss`` / ``select-loss-alone``
(forward sample-passes and tokens), never taken from a cache (the weights change every round),
and timed (``seconds``).

The selector holds a :class:`ModelScorer` and calls it from ``plan()``; the round loop attaches
the trainer once it exists. The selection logic stays plain numpy: it receives arrays back.
"""
from __future__ import annotations

import time

import numpy as np


class ModelScorer:
    def __init__(self, session):
        self.s = session
        self.trainer = None
        self.seconds = 0.0

    def attach(self, trainer) -> None:
        self.trainer = trainer

    @property
    def model(self):
        if self.trainer is None:
            raise RuntimeError("the scorer has no model yet: attach the trainer first")
        return self.trainer.model

    def ifd(self, indices: np.ndarray, kind: str, desc: str = "re-scoring IFD") -> np.ndarray:
        """IFD of the samples at ``indices`` (pool positions) under the current weights: one pass
        with the prompt, one over the response alone (2 forward sample-passes per sample)."""
        from .passes import ifd_from_losses

        t0 = time.perf_counter()
        idx = np.asarray(indices, dtype=np.int64)
        cond, _ = self.s.score_with(self.model, self.s.pool.subset(idx), "select-loss", None, f"{desc} L(y|x)")
        alone, _ = self.s.score_with(self.model, self.s.alone_pool().subset(idx), "select-loss-alone", None,
                                     f"{desc} L(y)")
        self.seconds += time.perf_counter() - t0
        return ifd_from_losses(cond, alone, kind)
