"""LEAD's offline stage and the static baselines' scores (docs/algorithms.md §1.1), each cached.

    u0    base-model loss of every sample (initial utility; the ``loss`` baseline)
    ifd   IFD of every sample under a warm-up model: a separate LoRA adapter trained briefly on a
          random subset of the pool (``warmup``), used to score the pool with and without the
          prompt, then removed, so online training starts from the base model
    emb   sentence embeddings (clustering option)
    ifd_base  IFD under the base model, from u0 and the base loss of the response alone
          (``u0_alone``): IterIT's complexity before its first epoch (``iterit.ifd_kind``)
    less  LESS gradient scores for the validation sets under a warm-up adapter (:mod:`.less`):
          the ``less`` baseline

Every result is cached by a fingerprint of what produced it (base model, encoded pool, settings),
so a second seed or method on the same pool scores nothing again. The warm-up subset and adapter
depend on ``warmup.seed``, not the run seed, for that reason.
"""
from __future__ import annotations

import numpy as np

from .. import dist
from ..session import Session
from .embed import embed_texts
from .less import less_offline
from .passes import ifd_from_losses, pass_fingerprint
from .warmup import warmup_key, warmup_plan, warmup_trainer


def offline_scores(s: Session, needs: set[str], ifd_kind: str = "loss_ratio") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if needs & {"u0", "ifd_base"}:
        out["u0"], out["tokens"] = s.losses(s.pool, "loss", base=True, desc="base loss U0")
    if "ifd_base" in needs:  # IFD under the base model (IterIT's epoch-0 complexity)
        out["u0_alone"], _ = s.losses(s.alone_pool(), "loss-alone", base=True, desc="base loss L(y)")
        out["ifd_base"] = ifd_from_losses(out["u0"], out["u0_alone"], s.cfg.iterit.ifd_kind)
    if "ifd" in needs:
        cond, alone, info = warmup_losses(s)
        out["warm_loss"], out["warm_loss_alone"] = cond, alone
        out["ifd"] = ifd_from_losses(cond, alone, ifd_kind)
        s.manifest.update("offline", warmup=info)
    if "less" in needs:
        out["less"], info = less_offline(s)
        s.manifest.update("offline", less=info)
    if "emb" in needs:
        which = s.cfg.scoring.embed_text
        texts = [("\n".join(m["content"] for m in x.prompt_messages) if which != "response" else "")
                 + ("\n" + x.response if which != "prompt" else "") for batch in s.store.iter_samples() for x in batch]
        out["emb"] = embed_texts(texts, batch_size=s.cfg.scoring.embed_batch_size, progress=s.cfg.progress,
                                 cache=s.cache, desc="embeddings", processes=s.accelerator)
    return out


def warmup_losses(s: Session) -> tuple[np.ndarray, np.ndarray, dict]:
    """(L(y|x), L(y)) of every pool sample under the warm-up model, from the cache when present."""
    w = s.cfg.warmup
    subset, orders = warmup_plan(s)
    key = warmup_key(s, "warmup-v1", subset)
    alone_pool = s.alone_pool()
    info = {"size": int(len(subset)), "seed": w.seed, "fingerprint": key, "epochs": w.train.epochs}
    hits = dist.on_main(s.accelerator, lambda: [
        s.cache.load(kind, pass_fingerprint(key, pool, kind, s.precision), pool.ids) if s.cache.enabled else None
        for kind, pool in (("warm-loss", s.pool), ("warm-loss-alone", alone_pool))])
    order = np.concatenate(orders)
    tokens = int(s.pool.lengths[order].sum())
    if all(h is not None for h in hits):
        s.counter.add_backward("warmup", len(order), tokens, cached=True)
        for kind, pool in (("warm-loss", s.pool), ("warm-loss-alone", alone_pool)):
            s.counter.add(kind, len(pool), int(pool.lengths.sum()), cached=True)
        return hits[0]["loss"], hits[1]["loss"], {**info, "cached": True}
    with warmup_trainer(s, len(order)) as (model, trainer):
        result = trainer.train(order, desc="warm-up training" if s.cfg.progress else None)
        s.counter.add_backward("warmup", len(order), tokens)
        cond, _ = s.score_with(model, s.pool, "warm-loss", key, desc="warm-up loss L(y|x)")
        alone, _ = s.score_with(model, alone_pool, "warm-loss-alone", key, desc="warm-up loss L(y)")
    return cond, alone, {**info, "cached": False, "mean_train_loss": float(result.losses.mean())}
