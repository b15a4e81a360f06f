"""The foundation job (``leadsel demo`` / ``leadsel run``): build the pool, score it offline,
train on a random subset, and report held-out loss before and after.

Stages, each timed in ``run.json``: model, data, score (base-model loss U0, IFD, embeddings; all
cached), eval_before, train, eval_after, save. Artifacts: ``run.json``, ``scores.parquet`` (one
row per pool sample), ``selected.jsonl`` (the trained samples in their input schema),
``eval.json``, and ``model/`` (the adapter or model, plus the tokenizer).
"""
from __future__ import annotations

import math

import numpy as np

from .config import RunConfig
from .data.load import write_jsonl
from .scoring.passes import embed_texts, ifd_from_losses
from .session import Session
from .train.trainer import Trainer, steps_for
from .utils import atomic_open, atomic_write_json


def offline_scores(s: Session) -> dict[str, np.ndarray]:
    """U0 (base loss), the response-alone loss, IFD (loss ratio) and embeddings of the pool."""
    kept = [s.samples[i] for i in s.pool.index]
    u0, tokens = s.losses(s.pool, "loss", base=True, desc="base loss U0")
    alone_pool = s.encode(kept, alone=True)
    if alone_pool.ids != s.pool.ids:
        raise RuntimeError("the response-alone encoding rejected samples the full encoding kept")
    alone, _ = s.losses(alone_pool, "loss-alone", base=True, desc="response-alone loss")
    which = s.cfg.scoring.embed_text
    texts = [("\n".join(m["content"] for m in x.prompt_messages) if which != "response" else "")
             + ("\n" + x.response if which != "prompt" else "") for x in kept]
    emb = embed_texts(texts, batch_size=s.cfg.scoring.embed_batch_size, progress=s.cfg.progress,
                      cache=s.cache, desc="embeddings")
    return {"u0": u0, "tokens": tokens, "loss_alone": alone, "ifd": ifd_from_losses(u0, alone), "emb": emb}


def write_scores(s: Session, scores: dict[str, np.ndarray], times_used: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": s.pool.ids, "source": s.pool.sources, "u0": scores["u0"], "ifd": scores["ifd"],
                      "loss_alone": scores["loss_alone"], "tokens": scores["tokens"], "times_used": times_used})
    with atomic_open(s.run_dir / "scores.parquet") as f:
        pq.write_table(table, f)


def run_random_subset(cfg: RunConfig) -> dict:
    s = Session.open(cfg, method="random")
    m = s.manifest
    with m.stage("score"):
        scores = offline_scores(s)
    with m.stage("eval_before"):
        before = s.evaluate(base=True, label="eval (base)")
    n = len(s.pool)
    k = max(1, math.ceil(cfg.subset_fraction * n))
    rng = np.random.default_rng(cfg.seed)
    subset = np.sort(rng.choice(n, size=k, replace=False))
    with m.stage("train"):
        order = np.concatenate([rng.permutation(subset) for _ in range(cfg.train.epochs)])
        trainer = Trainer(s.model, s.pool, cfg.train, s.accelerator, s.pad_id, s.precision,
                          total_steps=steps_for(len(order), cfg.train, s.accelerator.num_processes))
        result = trainer.train(order)
        m.update("train", samples=int(len(order)), distinct=int(k), optimizer_steps=len(result.steps),
                 mean_in_loop_loss=float(result.losses.mean()), delta_mean=result.delta,
                 first_lr=result.lrs[0], last_lr=result.lrs[-1])
    s.counter.add("train", len(order))
    with m.stage("eval_after"):
        after = s.evaluate(base=False, label="eval (trained)")
    with m.stage("save"):
        times = np.bincount(result.indices, minlength=n).astype(np.int32)
        write_scores(s, scores, times)
        write_jsonl([s.samples[s.pool.index[i]] for i in subset], s.run_dir / "selected.jsonl")
        atomic_write_json(s.run_dir / "eval.json", {"base": before, "trained": after,
                                                    "template": cfg.encoding.template or "model's own",
                                                    "max_length": cfg.encoding.max_length,
                                                    "model_fingerprint": s.base_fp})
        if s.accelerator.is_main_process:
            s.accelerator.unwrap_model(trainer.model).save_pretrained(s.run_dir / "model")
            s.tokenizer.save_pretrained(s.run_dir / "model")
    m.set("passes", {"forward": dict(s.counter.forward), "backward": {"train": int(len(order))}})
    m.set("eval", {"base": before, "trained": after})
    m.complete()
    return {"run_dir": str(s.run_dir), "n_pool": n, "n_trained": int(k), "before": before, "after": after,
            "stages": {k2: v.get("seconds") for k2, v in m.data["stages"].items()},
            "precision": s.precision}
