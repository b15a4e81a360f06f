"""The warm-up adapter every warm-up-based score shares (IFD's, LESS's): its seeded subset of the
pool, its training order per epoch, the fingerprint of what it produces, and a context that trains
it and removes it bit-exactly.

The subset and orders depend on ``warmup.*`` and the pool only (not the run seed), so every run of
a comparison trains the same warm-up and shares its cached results.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from accelerate.utils import set_seed

from ..model.adapters import temporary_adapter
from ..schema import count_of, to_dict
from ..session import Session
from ..train.trainer import Trainer, steps_for
from ..utils import fingerprint


def warmup_subset(n: int, size: float, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=count_of(size, n), replace=False))


def warmup_plan(s: Session) -> tuple[np.ndarray, list[np.ndarray]]:
    """(subset, one seeded order per epoch) of the warm-up training: they depend on ``warmup.*``
    and the pool only, so every run of a comparison trains the same warm-up."""
    w = s.cfg.warmup
    subset = warmup_subset(len(s.pool), w.size, w.seed)
    return subset, [np.random.default_rng([w.seed, e]).permutation(subset) for e in range(w.train.epochs)]


def warmup_key(s: Session, kind: str, subset: np.ndarray, *extra) -> str:
    """Fingerprint of a result computed under the warm-up model (``kind`` names what). The
    accumulation enters as the global one (x processes), so a run with the same global batch in
    another number of processes, which trains the same warm-up, shares the result; gradient
    checkpointing does not enter."""
    w = to_dict(s.cfg.warmup)
    w["train"]["gradient_accumulation_steps"] *= s.accelerator.num_processes
    del w["train"]["gradient_checkpointing"]  # memory only: the same warm-up either way
    return fingerprint(kind, s.base_fp, s.pool.fingerprint(), w, s.cfg.model.finetuning, s.precision, subset,
                       *extra)


@contextmanager
def warmup_trainer(s: Session, n_samples: int):
    """(model, trainer) of a fresh warm-up adapter (``warmup.lora``, ``warmup.train``) on the base
    model, seeded by ``warmup.seed``; the adapter is removed bit-exactly on exit."""
    w = s.cfg.warmup
    set_seed(w.seed)
    with temporary_adapter(s.model, w.lora, name="warmup") as model:
        trainer = Trainer(model, s.pool, w.train, s.accelerator, s.pad_id, s.precision,
                          total_steps=steps_for(n_samples, w.train, s.accelerator.num_processes), track=False,
                          logit_chunk=s.cfg.model.logit_chunk)
        try:
            yield model, trainer
        finally:
            del trainer
    s.accelerator.free_memory()
