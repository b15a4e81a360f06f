"""Gradient features of a pool: per-sample gradients (:mod:`.grads`), Adam-preconditioned for pool
samples, projected (:mod:`.projection`) and L2-normalised, batched by length within fixed shards
and optionally written to a :class:`~.grad_store.GradientStore`; and LESS's similarity of those
features to validation tasks (docs/algorithms.md §3.1).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from .. import dist
from ..data.encode import EncodedPool, collate
from ..numeric import l2_normalise
from ..session import Session
from ..utils import fingerprint as _fingerprint
from .counter import PassCounter
from .grad_store import GradientStore
from .grads import ADAM_VARIANTS, AdamState, GradTaps, adam_precondition, checkpointed, eval_mode, tapped_grads
from .passes import length_batches
from .projection import make_projection


def gradient_features(model: nn.Module, pool: EncodedPool, indices, *, pad_id: int, projection,
                      optimizer=None, adam_variant: str = "bias_corrected", batch_tokens: int = 4096,
                      max_batch_size: int = 8, precision: str = "fp32", shard: int = 1024,
                      store: GradientStore | None = None, progress: bool = True,
                      counter: PassCounter | None = None, stage: str = "grad",
                      on_shard: Callable[[int, int], None] | None = None,
                      desc: str = "gradient features", processes=None, logit_chunk: int | None = None,
                      checkpointing: bool = False) -> np.ndarray:
    """L2-normalised projected (Adam-preconditioned if ``optimizer``) per-sample gradients.

    Returns float32 ``(len(indices), projection.out_dim)``; row r belongs to ``pool`` sample
    ``indices[r]``. ``optimizer`` is a torch Adam/AdamW over the trainable parameters (or an
    :class:`AdamState`); ``None`` gives plain gradients (validation samples). With ``store`` the
    rows are written to (and on restart read back from) its float16 memmap and the result is the
    stored float16 values as float32. ``on_shard(k, stop)`` is called after each finished shard
    ``k`` (rows ``[k * shard, stop)``), after it is committed to the store. Each computed sample counts one forward and one
    backward sample-pass and its tokens in ``counter`` under ``stage``; rows found done in the
    store count as cached.

    ``processes`` (the run's Accelerator): the shards are dealt to the processes in waves, one
    each, and gathered after every wave, so every process returns the whole result; the main
    process alone opens and writes ``store``.
    """
    if adam_variant not in ADAM_VARIANTS:
        raise ValueError(f"adam_variant {adam_variant!r} is not one of {', '.join(ADAM_VARIANTS)}")
    if shard < 1:
        raise ValueError("shard must be >= 1")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(indices)
    taps = GradTaps(model)
    if n == 0:
        return np.zeros((0, int(projection.out_dim)), dtype=np.float32)
    in_dim = getattr(projection, "in_dim", None)
    if in_dim is not None and int(in_dim) != taps.total:
        raise ValueError(f"the projection takes {in_dim} inputs, the model has {taps.total} trainable numbers")
    dim = int(projection.out_dim)
    device = next(model.parameters()).device
    state = None
    if optimizer is not None:
        state = optimizer if isinstance(optimizer, AdamState) else \
            AdamState.from_optimizer(optimizer, [p for _, p in taps.named], device=device)
    lengths = pool.lengths
    rank, world = dist.position(processes)

    def open_store():  # on the main process, which alone reads and writes the store
        if store is None:
            return set(), {}
        done = store.open(n=n, dim=dim, seed=getattr(projection, "seed", None),
                          adam_variant=adam_variant if state is not None else None, shard=shard,
                          rows=_fingerprint(pool.fingerprint(), indices),
                          projection=projection.describe() if hasattr(projection, "describe") else None)
        stored = store.array()
        return done, {k: np.asarray(stored[k * shard:(k + 1) * shard]) for k in done}

    done, stored = dist.on_main(processes, open_store)
    out = np.zeros((n, dim), dtype=np.float32)
    for k, rows in stored.items():
        out[k * shard:k * shard + len(rows)] = rows
    shards = [(k, s, min(s + shard, n)) for k, s in enumerate(range(0, n, shard))]
    todo = [t for t in shards if t[0] not in done]
    if counter is not None:
        skipped = np.concatenate([indices[s:e] for k, s, e in shards if k in done] or [np.zeros(0, np.int64)])
        if len(skipped):
            tok = int(lengths[skipped].sum())
            counter.add(stage, len(skipped), tok, cached=True)
            counter.add_backward(stage, len(skipped), tok, cached=True)
    from tqdm.auto import tqdm

    # under several processes the shards go in waves, one to each process, gathered after each wave
    waves = [todo[w:w + world] for w in range(0, len(todo), world)]
    bar = tqdm(total=int(sum(lengths[indices[s:e]].sum() for wave in waves if rank < len(wave)
                             for _, s, e in [wave[rank]])), desc=desc, unit="tok", unit_scale=True,
               disable=not progress or rank != 0, dynamic_ncols=True)
    computed = 0
    try:
        with eval_mode(model), checkpointed(model, checkpointing):
            for wave in waves:
                mine = []
                if rank < len(wave):
                    k, s, e = wave[rank]
                    rows = indices[s:e]
                    feats = np.zeros((e - s, dim), dtype=np.float32)
                    for pos in length_batches(lengths[rows], batch_tokens, max_batch_size):
                        idx = rows[pos]
                        batch = {kk: v.to(device) for kk, v in collate(pool, idx, pad_id).items()}
                        G, _ = tapped_grads(model, taps, batch, precision, logit_chunk)
                        if state is not None:
                            adam_precondition(G, state, adam_variant)
                        Gh = G.cpu().numpy()
                        del G
                        feats[pos] = l2_normalise(np.asarray(projection.project(Gh), dtype=np.float32))
                        del Gh
                        computed += len(idx)
                        bar.update(int(lengths[idx].sum()))
                        bar.set_postfix(samples=computed, refresh=False)
                    if store is not None:  # the values kept are the store's float16 ones, on every process
                        feats = feats.astype(np.float16).astype(np.float32)
                    mine = [(k, s, e, feats)]
                for k, s, e, feats in sorted(sum(dist.gather(processes, mine), [])):
                    out[s:e] = feats
                    if counter is not None:
                        tok = int(lengths[indices[s:e]].sum())
                        counter.add(stage, e - s, tok)
                        counter.add_backward(stage, e - s, tok)
                    if store is not None and rank == 0:
                        store.write(s, feats)
                        store.commit_shard(k, e - s)
                    if on_shard is not None:
                        on_shard(k, e)
    finally:
        bar.close()
    return out


def task_similarity(train_feats: np.ndarray, val_feats_by_task: dict[str, np.ndarray]) -> np.ndarray:
    """(n, T): each training sample's mean cosine similarity to each subtask's validation features,
    columns in the order of ``val_feats_by_task``. Rows are (re)normalised here; a zero row has
    cosine 0.

    mean_j cos(x, y_j) = <x/|x|, mean_j y_j/|y_j|>, so each subtask costs one (n, d) @ (d,) product.
    """
    if not val_feats_by_task:
        raise ValueError("LESS scores need at least one validation subtask")
    X = l2_normalise(np.asarray(train_feats, dtype=np.float32))
    out = np.empty((len(X), len(val_feats_by_task)), dtype=np.float32)
    for t, (task, V) in enumerate(val_feats_by_task.items()):
        V = np.asarray(V, dtype=np.float32)
        if V.ndim != 2 or len(V) == 0 or V.shape[1] != X.shape[1]:
            raise ValueError(f"validation features of subtask {task!r} have shape {V.shape}; "
                             f"need (m >= 1, {X.shape[1]})")
        out[:, t] = X @ l2_normalise(V).mean(0)
    return out


def less_scores(train_feats: np.ndarray, val_feats_by_task: dict[str, np.ndarray]) -> np.ndarray:
    """LESS score of each training sample at one checkpoint: max over subtasks of its mean cosine
    similarity to that subtask's validation features (:func:`task_similarity`)."""
    return task_similarity(train_feats, val_feats_by_task).max(axis=1)


# -------------------------------------------------------------------- what a run's config fixes

def projection_for(s: Session, model):
    """The ``grads`` projection of ``model``'s trainable numbers (seeded: the same for equal sizes)."""
    g = s.cfg.grads
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return make_projection(g.projection, n, g.dim, g.seed)


def feature_settings(s: Session) -> dict:
    """The keyword arguments of :func:`gradient_features` that a run's config fixes."""
    return dict(pad_id=s.pad_id, adam_variant=s.cfg.grads.adam_variant, max_batch_size=s.cfg.grads.batch_size,
                batch_tokens=s.cfg.scoring.batch_tokens, precision=s.precision, progress=s.cfg.progress,
                counter=s.counter, logit_chunk=s.cfg.model.logit_chunk,
                checkpointing=s.cfg.train.gradient_checkpointing)
