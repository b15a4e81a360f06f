"""The ``less`` baseline's scores: LESS (Xia et al. 2024; docs/algorithms.md §3.1), selected once.

A warm-up LoRA adapter (the ``warmup`` settings and the same seeded subset as IFD's warm-up) is
trained for ``warmup.train.epochs`` epochs. At the end of epoch i (checkpoint i) every pool sample
gets its projected gradient, Adam-preconditioned with the warm-up optimizer's state, and every
validation sample its plain projected gradient (``grads.*``, both L2-normalised), and

    less(x) = max over tasks t of  sum_i lr_i * mean_{v in val_t} cos(g_i(x), g_i(v))

with lr_i the mean learning rate of epoch i's optimizer steps. (LESS sums over the 4 checkpoints
of its 4 warm-up epochs, weighted by their mean learning rate; here there is one checkpoint per
warm-up epoch.) The adapter is then removed and the run trains the base model on the ``budget``
samples of highest score, as a static method (:mod:`..select.static`).

The scores are cached like the other offline scores; their key adds the gradient settings and the
validation sets' content. The pool's features of each checkpoint go to a
:class:`~.grad_store.GradientStore` (float16 memmap) in the cache's partial directory, so a pass killed
midway resumes at its last finished shard (``scoring.checkpoint_every`` samples, which may not
change in between, or the pass starts afresh); the warm-up
training before it is re-done, deterministically from ``warmup.seed``. The stores are deleted once
the scores are saved. Passes are counted under ``warmup`` (backward), ``less-grad`` and
``less-grad-val`` (one forward and one backward per sample).

The warm-up trains one epoch per call (a checkpoint after each), so with several warm-up epochs
its optimizer steps can group samples differently from IFD's warm-up, which trains all epochs in
one call; with one epoch (the default) the two warm-ups are the same.
"""
from __future__ import annotations

import shutil

import numpy as np

from .. import dist
from ..schema import to_dict
from ..session import Session
from .features import feature_settings, gradient_features, projection_for, task_similarity
from .grad_store import GradientStore
from .warmup import warmup_key, warmup_plan, warmup_trainer


def checkpoint_sum(similarities: list[np.ndarray], lrs: list[float]) -> np.ndarray:
    """LESS's combination of checkpoints: sum_i lr_i * S_i, S_i the (n, T) mean cosine of each
    sample to each task at checkpoint i; then the max over tasks."""
    if not similarities or len(similarities) != len(lrs):
        raise ValueError(f"need one learning rate per checkpoint and at least one checkpoint "
                         f"(got {len(similarities)} checkpoints, {len(lrs)} learning rates)")
    total = sum(float(lr) * np.asarray(S, dtype=np.float64) for S, lr in zip(similarities, lrs))
    return total.max(axis=1)


def less_offline(s: Session) -> tuple[np.ndarray, dict]:
    """(LESS score of every pool sample, info for run.json), from the cache when present."""
    subset, orders = warmup_plan(s)
    vals = s.validation_sets()
    key = warmup_key(s, "less-v1", subset, to_dict(s.cfg.grads), [(v.name, v.encoded.fingerprint()) for v in vals])
    info = {"warmup_size": int(len(subset)), "checkpoints": len(orders), "fingerprint": key,
            "tasks": [v.name for v in vals]}
    n = len(s.pool)

    def count(cached: bool, orders_done) -> None:
        for order in orders_done:
            s.counter.add_backward("warmup", len(order), int(s.pool.lengths[order].sum()), cached=cached)
            if cached:
                for stage, pool in [("less-grad", s.pool)] + [("less-grad-val", v.encoded) for v in vals]:
                    s.counter.add(stage, len(pool), int(pool.lengths.sum()), cached=True)
                    s.counter.add_backward(stage, len(pool), int(pool.lengths.sum()), cached=True)

    hit = dist.on_main(s.accelerator, lambda: s.cache.load("less", key, s.pool.ids) if s.cache.enabled else None)
    if hit is not None:
        count(True, orders)
        return hit["score"], {**info, "cached": True, "lrs": hit["lrs"].tolist()}
    sims, lrs = [], []
    partial = s.cache.partial_dir("less", key)
    with warmup_trainer(s, sum(len(o) for o in orders)) as (model, trainer):
        common = dict(projection=projection_for(s, model), **feature_settings(s))
        for i, order in enumerate(orders, start=1):
            res = trainer.train(order, desc=f"LESS warm-up, epoch {i}" if s.cfg.progress else None)
            count(False, [order])
            lrs.append(float(np.mean(res.lrs)))
            store = GradientStore(partial / f"checkpoint{i}", f"{key}-{i}", scratch=True)
            feats = gradient_features(model, s.pool, np.arange(n), optimizer=trainer.optimizer, store=store,
                                      processes=s.accelerator,
                                      shard=s.cfg.scoring.checkpoint_every, stage="less-grad",
                                      desc=f"LESS pool gradients, checkpoint {i}", **common)
            val = {v.name: gradient_features(model, v.encoded, np.arange(len(v.encoded)), stage="less-grad-val",
                                             processes=s.accelerator,
                                             desc=f"LESS validation gradients {v.name}, checkpoint {i}", **common)
                   for v in vals}
            sims.append(task_similarity(feats, val))
            s.manifest.set("passes", s.counter.to_dict())
    score = checkpoint_sum(sims, lrs)
    if s.accelerator.is_main_process:  # the main process alone wrote the stores
        s.cache.save("less", key, s.pool.ids, score=score, lrs=np.asarray(lrs))
        shutil.rmtree(partial, ignore_errors=True)
    return score, {**info, "cached": False, "lrs": lrs}
