"""Batched forward passes over an encoded pool: per-sample loss, and IFD from two such losses.

Samples are sorted by length and packed into batches of at most ``batch_tokens`` padded tokens
(``max_batch_size`` samples), so padding is small and long samples do not blow memory. Passes
show a progress bar (rate, ETA), save partial results every ``checkpoint_every`` samples, and
cache their result by a fingerprint of (model, encoded pool, kind). Under several processes the
main process reads the cache and the partial results and tells the others; the batches left are
dealt round-robin to the processes and the losses gathered in pool order; only the main process
writes the cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import dist
from ..data.encode import EncodedPool, collate
from ..model.loss import per_sample_loss
from ..model.precision import autocast
from ..utils import atomic_save_npz, fingerprint, trim_heap
from .cache import ScoreCache
from .counter import PassCounter


def length_batches(lengths: np.ndarray, batch_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length (ties by index), packed so that n x max_len <= batch_tokens."""
    order = np.argsort(lengths, kind="stable")
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, int(lengths[i]))
        if cur and (w * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch_size):
            batches.append(np.asarray(cur))
            cur, w = [], int(lengths[i])
        cur.append(int(i))
        width = w
    if cur:
        batches.append(np.asarray(cur))
    return batches


def pass_fingerprint(model_fp: str, pool: EncodedPool, kind: str, precision: str) -> str:
    """Cache key of a loss pass: the model, the encoded pool, what is scored, and the precision."""
    return fingerprint(model_fp, pool.fingerprint(), kind, precision)


def loss_pass(model, pool: EncodedPool, *, accelerator, pad_id: int, precision: str, scoring,
              cache: ScoreCache | None = None, model_fp: str | None = None, kind: str = "loss",
              desc: str = "scoring loss", progress: bool = True, counter: PassCounter | None = None,
              chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean response-token loss float32[n], supervised tokens int64[n]) of every sample;
    ``chunk``: the loss's logit chunk (``model.logit_chunk``)."""
    fp = pass_fingerprint(model_fp, pool, kind, precision) if model_fp else None
    partial = cache.partial_dir(kind, fp) if (cache is not None and fp) else None

    def look_up():
        hit = cache.load(kind, fp, pool.ids) if partial is not None else None
        if hit is not None:
            return hit["loss"], hit["tokens"], None
        losses, counts = np.full(len(pool), np.nan, dtype=np.float32), np.zeros(len(pool), dtype=np.int64)
        return losses, counts, _load_partial(partial, losses, counts)

    losses, counts, done = dist.on_main(accelerator, look_up)
    if done is None:  # a cache hit
        if counter is not None:
            counter.add(kind, len(pool), int(pool.lengths.sum()), cached=True)
        return losses, counts
    batches = length_batches(pool.lengths, scoring.batch_tokens, scoring.max_batch_size)
    rank, world = accelerator.process_index, accelerator.num_processes
    left = [(b, idx) for b, idx in enumerate(batches) if not done[idx].all()]
    mine = left[rank::world][::-1]  # longest first: the peak comes at once, later batches fit in its memory
    from tqdm.auto import tqdm

    # counted in tokens: batches run longest first, so a count of samples would promise too late an end
    lengths = pool.lengths
    bar = tqdm(total=int(sum(lengths[idx].sum() for _, idx in mine)), desc=desc, unit="tok", unit_scale=True,
               disable=not progress or not accelerator.is_local_main_process, dynamic_ncols=True)
    model.eval()
    buf_idx, buf_loss, buf_cnt, since, scored = [], [], [], 0, 0
    with torch.inference_mode():
        for b, idx in mine:
            batch = {k: v.to(accelerator.device) for k, v in collate(pool, idx, pad_id).items()}
            with autocast(accelerator.device.type, precision):
                loss, cnt = per_sample_loss(model, **batch, chunk=chunk)
            loss, cnt = loss.float().cpu().numpy(), cnt.cpu().numpy()
            losses[idx], counts[idx] = loss, cnt
            buf_idx.append(idx), buf_loss.append(loss), buf_cnt.append(cnt)
            since += len(idx)
            bar.update(int(lengths[idx].sum()))
            scored += len(idx)
            bar.set_postfix(samples=scored, refresh=False)
            trim_heap(accelerator.device.type)
            if partial is not None and since >= scoring.checkpoint_every:
                _save_shard(partial, rank, b, buf_idx, buf_loss, buf_cnt)
                buf_idx, buf_loss, buf_cnt, since = [], [], [], 0
    bar.close()
    if world > 1:
        losses, counts = _merge_across(accelerator, losses, counts)
    if np.isnan(losses).any():  # pragma: no cover - would be a bug in batching
        raise RuntimeError(f"{desc}: {int(np.isnan(losses).sum())} samples were not scored")
    if counter is not None and left:  # every process's batches, counted on each
        scored_now = np.concatenate([idx for _, idx in left])
        counter.add(kind, len(scored_now), int(lengths[scored_now].sum()))
    if cache is not None and fp and accelerator.is_main_process:
        cache.save(kind, fp, pool.ids, loss=losses, tokens=counts)
    return losses, counts


def _save_shard(partial: Path, rank: int, b: int, idx, loss, cnt) -> None:
    atomic_save_npz(partial / f"r{rank}-b{b:08d}.npz", idx=np.concatenate(idx),
                    loss=np.concatenate(loss), tokens=np.concatenate(cnt))


def _load_partial(partial: Path | None, losses: np.ndarray, counts: np.ndarray) -> np.ndarray:
    done = np.zeros(len(losses), dtype=bool)
    if partial is not None and partial.is_dir():
        for f in sorted(partial.glob("*.npz")):
            with np.load(f) as z:
                losses[z["idx"]], counts[z["idx"]] = z["loss"], z["tokens"]
                done[z["idx"]] = True
    return done


def _merge_across(accelerator, losses, counts):
    from accelerate.utils import gather_object

    parts = gather_object([(losses, counts)])
    out_l, out_c = parts[0]
    for l2, c2 in parts[1:]:
        ok = ~np.isnan(l2)
        out_l[ok], out_c[ok] = l2[ok], c2[ok]
    return out_l, out_c


def ifd_from_losses(cond: np.ndarray, alone: np.ndarray, kind: str = "loss_ratio") -> np.ndarray:
    """IFD = L(y|x) / L(y) (loss_ratio) or exp(L(y|x) - L(y)) (ppl_ratio, IterIT)."""
    if kind == "loss_ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(alone > 0, cond / alone, np.inf).astype(np.float32)
    if kind == "ppl_ratio":
        return np.exp(cond.astype(np.float64) - alone).astype(np.float32)
    raise ValueError(f"ifd_kind {kind!r} is not one of loss_ratio, ppl_ratio")
