"""What a selector may compute with the model being trained, between rounds.

LEAD never calls this: its utilities come from the training forwards. The peers do, and that is
exactly the cost LEAD claims to save, so every pass made here is a real pass over the samples
asked for, counted in ``run.json`` under the stages ``select-loss`` / ``select-loss-alone``
(IFD: forward sample-passes and tokens), ``select-grad`` / ``select-grad-val`` (gradient features:
one forward and one backward per sample), never taken from a cache (the weights change every
round), and timed (``seconds``).

The selector holds a :class:`ModelScorer` and calls it from ``plan()``; the round loop attaches
the trainer once it exists. The selection logic stays plain numpy: it receives arrays back.
"""
from __future__ import annotations

import hashlib
import shutil
import time

import numpy as np
import torch

from ..session import Session
from .features import feature_settings, gradient_features, less_scores, projection_for
from .grad_store import GradientStore
from .passes import ifd_from_losses


class ModelScorer:
    def __init__(self, session: Session):
        self.s = session
        self.trainer = None
        self.seconds = 0.0
        self._projection = None
        self._val: dict[str, np.ndarray] = {}
        self._val_step: int | None = None

    def attach(self, trainer) -> None:
        self.trainer = trainer

    @property
    def num_processes(self) -> int:
        return self.s.accelerator.num_processes

    @property
    def model(self):
        if self.trainer is None:
            raise RuntimeError("the scorer has no model yet: attach the trainer first")
        return self.trainer.model

    def ifd(self, indices: np.ndarray, kind: str, desc: str = "re-scoring IFD") -> np.ndarray:
        """IFD of the samples at ``indices`` (pool positions) under the current weights: one pass
        with the prompt, one over the response alone (2 forward sample-passes per sample)."""
        t0 = time.perf_counter()
        idx = np.asarray(indices, dtype=np.int64)
        cond, _ = self.s.score_with(self.model, self.s.pool.subset(idx), "select-loss", None, f"{desc} L(y|x)")
        alone, _ = self.s.score_with(self.model, self.s.alone_pool().subset(idx), "select-loss-alone", None,
                                     f"{desc} L(y)")
        self.seconds += time.perf_counter() - t0
        return ifd_from_losses(cond, alone, kind)

    def projection(self):
        if self._projection is None:
            self._projection = projection_for(self.s, self.model)
        return self._projection

    def grad_features(self, pool, indices: np.ndarray, *, precondition: bool, stage: str, desc: str,
                      store: str | None = None) -> np.ndarray:
        """L2-normalised projected gradients of ``pool``'s samples at ``indices`` under the current
        weights; Adam-preconditioned with the trainer's optimizer state when ``precondition``.

        ``store``: a name for a pool-wide pass. Its rows then go to a float16
        :class:`~.grad_store.GradientStore` in ``<run_dir>/grad-store/<store>``, shard by shard
        (``scoring.checkpoint_every`` samples), so that a run killed during the pass and resumed
        from its last round (the same weights and optimizer state, checked by a fingerprint of
        both) skips the finished shards. The store is deleted once the pass is complete; one left
        by other weights or cut in shards of another size is discarded."""
        t0 = time.perf_counter()
        gstore = None
        if store is not None:
            root = self.s.run_dir / "grad-store" / store
            gstore = GradientStore(root, self.state_fingerprint(), scratch=True)
        out = gradient_features(self.model, pool, np.asarray(indices, dtype=np.int64), projection=self.projection(),
                                optimizer=self.trainer.optimizer if precondition else None, store=gstore,
                                shard=self.s.cfg.scoring.checkpoint_every, stage=stage, desc=desc,
                                processes=self.s.accelerator, **feature_settings(self.s))
        if gstore is not None and self.s.accelerator.is_main_process:  # the features are in memory now
            shutil.rmtree(root, ignore_errors=True)
            try:
                root.parent.rmdir()  # grad-store/ itself, once it holds no other pass
            except OSError:
                pass
        self.s.manifest.set("passes", self.s.counter.to_dict())
        self.seconds += time.perf_counter() - t0
        return out

    def state_fingerprint(self) -> str:
        """Hash of the trainable weights, the optimizer's state and the step count: what a
        gradient feature depends on besides the sample."""
        h = hashlib.sha256(str(self.trainer.global_step).encode())
        for p in self.model.parameters():
            if p.requires_grad:
                h.update(p.detach().float().cpu().numpy().tobytes())
                for v in self.trainer.optimizer.state.get(p, {}).values():
                    if torch.is_tensor(v):
                        h.update(v.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def target_scores(self, indices: np.ndarray, desc: str = "gradient scores", store: str | None = None) -> np.ndarray:
        """LESS scores of the pool samples at ``indices`` for the validation tasks, at the current
        checkpoint: per task the mean cosine of the (Adam-preconditioned) sample gradient to the
        task's (plain) validation gradients, max over tasks; in [-1, 1]. ``store``: see
        :meth:`grad_features`."""
        feats = self.grad_features(self.s.pool, indices, precondition=True, stage="select-grad", desc=desc, store=store)
        return less_scores(feats, self.val_features())

    def val_features(self) -> dict[str, np.ndarray]:
        """Plain gradient features of every validation set at the current weights (computed once
        per optimizer step count: the weights only change when training steps)."""
        step = self.trainer.global_step
        if self._val_step != step:
            self._val = {v.name: self.grad_features(v.encoded, np.arange(len(v.encoded)), precondition=False,
                                                    stage="select-grad-val", desc=f"validation gradients {v.name}")
                         for v in self.s.validation_sets()}
            self._val_step = step
        return self._val
