"""LEAD's offline stage and the static baselines' scores (ALGORITHMS.md §1.1), each cached.

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

from contextlib import contextmanager

import numpy as np

from ..config import count_of, to_dict
from ..utils import fingerprint
from .passes import embed_texts, ifd_from_losses, pass_fingerprint


def offline_scores(s, needs: set[str], ifd_kind: str = "loss_ratio") -> dict[str, np.ndarray]:
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
        from .less import less_offline

        out["less"], info = less_offline(s)
        s.manifest.update("offline", less=info)
    if "emb" in needs:
        kept = [s.samples[i] for i in s.pool.index]
        which = s.cfg.scoring.embed_text
        texts = [("\n".join(m["content"] for m in x.prompt_messages) if which != "response" else "")
                 + ("\n" + x.response if which != "prompt" else "") for x in kept]
        out["emb"] = embed_texts(texts, batch_size=s.cfg.scoring.embed_batch_size, progress=s.cfg.progress,
                                 cache=s.cache, desc="embeddings")
    return out


def warmup_subset(n: int, size: float, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=count_of(size, n), replace=False))


def warmup_plan(s) -> tuple[np.ndarray, list[np.ndarray]]:
    """(subset, one seeded order per epoch) of the warm-up training: they depend on ``warmup.*``
    and the pool only, so every run of a comparison trains the same warm-up."""
    w = s.cfg.warmup
    subset = warmup_subset(len(s.pool), w.size, w.seed)
    return subset, [np.random.default_rng([w.seed, e]).permutation(subset) for e in range(w.train.epochs)]


def warmup_key(s, kind: str, subset: np.ndarray, *extra) -> str:
    """Fingerprint of a result computed under the warm-up model (``kind`` names what)."""
    return fingerprint(kind, s.base_fp, s.pool.fingerprint(), to_dict(s.cfg.warmup), s.cfg.model.finetuning,
                       s.precision, subset, *extra)


@contextmanager
def warmup_trainer(s, n_samples: int):
    """(model, trainer) of a fresh warm-up adapter (``warmup.lora``, ``warmup.train``) on the base
    model, seeded by ``warmup.seed``; the adapter is removed bit-exactly on exit."""
    from accelerate.utils import set_seed

    from ..model.adapters import temporary_adapter
    from ..train.trainer import Trainer, steps_for

    w = s.cfg.warmup
    set_seed(w.seed)
    with temporary_adapter(s.model, w.lora, name="warmup") as model:
        trainer = Trainer(model, s.pool, w.train, s.accelerator, s.pad_id, s.precision,
                          total_steps=steps_for(n_samples, w.train, s.accelerator.num_processes), track=False)
        try:
            yield model, trainer
        finally:
            del trainer
    s.accelerator.free_memory()


def warmup_losses(s) -> tuple[np.ndarray, np.ndarray, dict]:
    """(L(y|x), L(y)) of every pool sample under the warm-up model, from the cache when present."""
    w = s.cfg.warmup
    subset, orders = warmup_plan(s)
    key = warmup_key(s, "warmup-v1", subset)
    alone_pool = s.alone_pool()
    info = {"size": int(len(subset)), "seed": w.seed, "fingerprint": key, "epochs": w.train.epochs}
    hits = [s.cache.load(kind, pass_fingerprint(key, pool, kind, s.precision), pool.ids) if s.cache.enabled
            else None for kind, pool in (("warm-loss", s.pool), ("warm-loss-alone", alone_pool))]
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
