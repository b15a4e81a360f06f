"""Per-sample gradient features of the trainable (LoRA) parameters, as in LESS (Xia et al., ICML 2024).

Used by the gradient-based selectors (LESS, ClusterUCB, Dynamic). For every sample ``i`` of a
pool the feature is

    normalise( project( precondition( grad_theta loss_i ) ) )

* ``loss_i`` is :func:`leadsel.model.loss.per_sample_loss` (mean fp32 cross-entropy over the
  sample's response tokens), ``theta`` the parameters with ``requires_grad`` (the LoRA adapter),
  flattened in a fixed order: the order of ``model.named_parameters()`` restricted to
  ``requires_grad`` (:func:`trainable_parameters`); each parameter is ``p.reshape(-1)`` (row-major,
  i.e. ``lora_A.weight`` of shape ``(r, in)`` contributes ``r * in`` numbers, row by row).
* ``precondition`` (training samples, when an optimizer is given) is LESS's Adam update direction
  from the optimizer's state ``(m, v, t, beta1, beta2, eps)`` of each parameter:
  ``m' = b1 m + (1 - b1) g``, ``v' = b2 v + (1 - b2) g^2`` and

  - ``"bias_corrected"`` (default, the direction AdamW itself would take at step ``t + 1``):
    ``(m' / (1 - b1^(t+1))) / (sqrt(v' / (1 - b2^(t+1))) + eps)``;
  - ``"released"`` (LESS's released code, ``obtain_gradients_with_adam``): ``m' / sqrt(v' + eps)``.

  An optimizer without state for a parameter (no step taken yet) reads as ``m = v = 0, t = 0``:
  the bias-corrected feature is then ``g / (|g| + eps)`` (about ``sign(g)``) and the released one
  ``(1 - b1) g / sqrt((1 - b2) g^2 + eps)``. Weight decay, learning rate and AMSGrad are not part
  of the feature (AMSGrad state is refused). Validation samples use the plain gradient
  (``optimizer=None``).
* ``project`` is a fixed-seed random projection object with ``.project(G: (b, P)) -> (b, d)``
  (:class:`leadsel.scoring.projection.RademacherProjection`, block-wise, never a ``P x d``
  matrix); ``normalise`` is the row L2 normalisation (a zero row stays zero).

Method (per-sample gradients): *exact hooks*, not ``torch.func``. ``vmap(grad(...))`` over the HF
Llama model fails (transformers' ``create_causal_mask`` -> ``sdpa_mask`` ->
``_ignore_causal_mask_sdpa`` branches on tensor values, and ``per_sample_loss`` selects
supervised positions with a boolean mask, a data-dependent shape), so instead every
``nn.Linear`` that owns a trainable parameter (peft's ``lora_A``/``lora_B``) gets a forward hook
that keeps its input ``x`` (b, t, in) and puts a tensor hook on its output; one backward of the
**sum** of the batch's per-sample losses (``torch.autograd.grad`` w.r.t. the trainable
parameters, so no ``.grad`` of the model is written) delivers each output's gradient ``g``
(b, t, out), and the hook immediately forms the per-sample weight gradient
``einsum('bto,bti->boi', g, x)`` (and ``g.sum(1)`` for a trainable bias) into that sample's row.
This is exact because sample ``j``'s loss does not depend on sample ``b``'s activations (no
cross-sample interaction: per-token norms, attention within the sample, eval mode), so
``d(sum_j loss_j)/d out[b] = d loss_b / d out[b]``; padded positions get ``g = 0``. A trainable
parameter that is not the weight/bias of an ``nn.Linear`` (e.g. a trainable embedding, DoRA
magnitude) is refused with NotImplementedError; models whose batch elements interact (MoE with
capacity limits) would break the exactness argument.

Dropout is off: the model is put in ``eval()`` for the computation (so LoRA dropout is the
identity and HF gradient checkpointing, which only acts in training mode, is off) and every
module's previous train/eval flag is restored afterwards, as is torch's grad mode.

Memory, per batch of ``b`` samples with ``P`` trainable numbers: the activations of one forward
kept for its backward (as for a training step on that batch, without checkpointing), plus the
(b, P) float32 per-sample gradient matrix on the model's device, plus transiently one module's
(b, t, out) output gradient and (b, out, in) per-sample weight gradient, plus segment-sized
temporaries for the Adam preconditioning and the flattened Adam state ``m, v`` (2 P float32,
held once). The (b, P) matrix is then copied to the host (the projection is numpy) and projected
block by block; at most one batch of full per-sample gradients exists at a time. For a 7B
model with an r=128 LoRA on q/k/v/o (P ~ 134M) that is ~0.54 GB per sample in the batch, so keep
``max_batch_size`` small there.

Storage and resumption: rows are processed in fixed shards of ``shard`` consecutive positions of
``indices`` (batched by length *within* the shard, so the batches -- hence the floats -- do not
depend on where a run stopped). With a :class:`GradientStore` the features go to a float16
memmap ``features.f16`` (n, d); after each shard the memmap is flushed and the sidecar
``features.json`` (shape, dtype, fingerprint, projection seed/dim, adam variant, rows, done
shards) is rewritten atomically, so a restarted job skips the finished shards and ends with the
same bytes as an uninterrupted one. A sidecar that disagrees with the request is refused.
Single process only (no splitting across accelerate ranks).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.encode import EncodedPool, collate
from ..model.loss import per_sample_loss
from ..train.trainer import autocast
from ..utils import atomic_write_json
from ..utils import fingerprint as _fingerprint
from .passes import PassCounter, length_batches

__all__ = ["ADAM_VARIANTS", "AdamState", "GradientStore", "adam_precondition", "gradient_features",
           "less_scores", "per_sample_grads", "trainable_parameters"]

ADAM_VARIANTS = ("bias_corrected", "released")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters with ``requires_grad``, in ``named_parameters()`` order: the feature order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- per-sample grads

class _Taps:
    """Maps each trainable parameter to the ``nn.Linear`` that owns it and its flat offset."""

    def __init__(self, model: nn.Module):
        self.named = trainable_parameters(model)
        if not self.named:
            raise ValueError("the model has no trainable parameter; per-sample gradients need some")
        owner: dict[int, tuple[nn.Module, str]] = {}
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                for attr in ("weight", "bias"):
                    p = getattr(mod, attr, None)
                    if p is not None and p.requires_grad:
                        owner.setdefault(id(p), (mod, attr))
        missing = [n for n, p in self.named if id(p) not in owner]
        if missing:
            raise NotImplementedError(
                "per-sample gradients are computed for nn.Linear weights/biases only; these trainable "
                f"parameters are not: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        self.sizes = [p.numel() for _, p in self.named]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        # per module: [(attr, start, stop)]
        self.slots: dict[nn.Module, list[tuple[str, int, int]]] = {}
        for k, (_, p) in enumerate(self.named):
            mod, attr = owner[id(p)]
            self.slots.setdefault(mod, []).append((attr, int(self.offsets[k]), int(self.offsets[k + 1])))

    @contextmanager
    def recording(self, out: torch.Tensor):
        """Hooks that add each sample's gradient into row b of ``out`` (b, P) during a backward."""
        b = out.shape[0]

        def forward_hook(mod, inputs, output):
            if not (torch.is_grad_enabled() and output.requires_grad):
                return
            x = inputs[0]
            if x.shape[0] != b:
                raise NotImplementedError(
                    f"a trainable Linear saw an input of leading size {x.shape[0]}, not the batch size {b}; "
                    "per-sample attribution needs (batch, ..., features) inputs")
            slots = self.slots[mod]
            x = x.detach()
            box = [x]

            def tensor_hook(g):
                xf = box[0].reshape(b, -1, box[0].shape[-1]).float()
                gf = g.detach().reshape(b, -1, g.shape[-1]).float()
                for attr, s, e in slots:
                    if attr == "weight":
                        out[:, s:e] += torch.bmm(gf.transpose(1, 2), xf).reshape(b, -1)
                    else:
                        out[:, s:e] += gf.sum(1)
                box[0] = None  # release the input as soon as it is used

            output.register_hook(tensor_hook)

        handles = [mod.register_forward_hook(forward_hook) for mod in self.slots]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@contextmanager
def _eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


def _per_sample_grads(model, taps: _Taps, batch: dict, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    n = batch["input_ids"].shape[0]
    G = torch.zeros((n, taps.total), dtype=torch.float32, device=device)
    params = [p for _, p in taps.named]
    with torch.inference_mode(False), torch.enable_grad(), taps.recording(G):
        with autocast(device.type, precision):
            loss, _counts = per_sample_loss(model, **batch)
        torch.autograd.grad(loss.float().sum(), params, allow_unused=True)
    return G, loss.detach().float()


def per_sample_grads(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor, *, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample gradients (b, P) float32, per-sample losses (b,)) of a right-padded batch.

    Row ``i`` is ``d per_sample_loss_i / d theta`` flattened in :func:`trainable_parameters`
    order. The model is in eval mode meanwhile (modes restored); its ``.grad`` fields are untouched.
    """
    taps = _Taps(model)
    device = next(model.parameters()).device
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
             "labels": labels.to(device)}
    with _eval_mode(model):
        return _per_sample_grads(model, taps, batch, precision)


# ----------------------------------------------------------------------------- Adam

@dataclass
class AdamState:
    """Adam moments flattened in feature order, with per-parameter (beta1, beta2, eps, step).

    ``segments[k] = (start, stop, beta1, beta2, eps, step)`` for the k-th trainable parameter;
    ``step`` is the number of optimizer steps already taken (0 when the optimizer has no state)."""
    m: torch.Tensor
    v: torch.Tensor
    segments: list[tuple[int, int, float, float, float, float]]

    @classmethod
    def from_optimizer(cls, optimizer, params: list[torch.Tensor], device=None) -> AdamState:
        """Read ``exp_avg``/``exp_avg_sq``/``step`` and each group's betas/eps of a torch Adam/AdamW
        (or a wrapper exposing ``param_groups`` and ``state``, e.g. accelerate's) for ``params``."""
        groups = {}
        for grp in optimizer.param_groups:
            for p in grp["params"]:
                groups[id(p)] = grp
        ms, vs, segs, start = [], [], [], 0
        for p in params:
            grp = groups.get(id(p))
            if grp is None:
                raise ValueError("a trainable parameter is not in the optimizer's param_groups")
            if "betas" not in grp or "eps" not in grp:
                raise ValueError("the optimizer is not an Adam-type optimizer (no betas/eps)")
            if grp.get("amsgrad", False):
                raise ValueError("AMSGrad optimizer state is not supported for Adam preconditioning")
            st = optimizer.state.get(p, {})
            dev = device if device is not None else p.device
            if st and "exp_avg" in st:
                ms.append(st["exp_avg"].detach().reshape(-1).to(dev, torch.float32))
                vs.append(st["exp_avg_sq"].detach().reshape(-1).to(dev, torch.float32))
                step = float(st["step"].item() if torch.is_tensor(st["step"]) else st["step"])
            else:
                ms.append(torch.zeros(p.numel(), dtype=torch.float32, device=dev))
                vs.append(torch.zeros(p.numel(), dtype=torch.float32, device=dev))
                step = 0.0
            b1, b2 = grp["betas"]
            segs.append((start, start + p.numel(), float(b1), float(b2), float(grp["eps"]), step))
            start += p.numel()
        return cls(torch.cat(ms), torch.cat(vs), segs)


def adam_precondition(G: torch.Tensor, state: AdamState, variant: str = "bias_corrected") -> torch.Tensor:
    """LESS's Adam feature of per-sample gradients ``G`` (b, P), computed in place (returns ``G``)."""
    if variant not in ADAM_VARIANTS:
        raise ValueError(f"adam_variant {variant!r} is not one of {', '.join(ADAM_VARIANTS)}")
    if G.shape[1] != state.m.numel():
        raise ValueError(f"gradients have {G.shape[1]} columns, the Adam state {state.m.numel()}")
    for s, e, b1, b2, eps, t in state.segments:
        g = G[:, s:e]
        m = b1 * state.m[s:e] + (1 - b1) * g
        v = b2 * state.v[s:e] + (1 - b2) * g * g
        if variant == "bias_corrected":
            m = m / (1 - b1 ** (t + 1))
            v = v / (1 - b2 ** (t + 1))
            g.copy_(m / (v.sqrt() + eps))
        else:
            g.copy_(m / (v + eps).sqrt())
        del m, v
    return G


# ----------------------------------------------------------------------------- storage

class GradientStore:
    """Float16 memmap ``features.f16`` (n, d) plus sidecar ``features.json``, filled shard by shard.

    ``fingerprint`` is the caller's key of what produced the features (model/adapter/optimizer
    state); together with the shape, projection seed/dim, Adam variant, shard size and the rows
    (pool content and indices) it must match on resume, else ValueError.
    """

    FEATURES = "features.f16"
    SIDECAR = "features.json"
    DTYPE = "float16"

    def __init__(self, root: str | Path, fingerprint: str, scratch: bool = False):
        """``scratch``: the store only serves to resume one pass, so a request that does not match
        what it holds (other weights, another shard size) empties it instead of raising."""
        self.root = Path(root)
        self.fingerprint = str(fingerprint)
        self.scratch = scratch
        self.meta: dict | None = None
        self._mm: np.memmap | None = None

    @property
    def features_path(self) -> Path:
        return self.root / self.FEATURES

    @property
    def sidecar_path(self) -> Path:
        return self.root / self.SIDECAR

    def read_sidecar(self) -> dict | None:
        import json

        if not self.sidecar_path.is_file():
            return None
        return json.loads(self.sidecar_path.read_text())

    def open(self, *, n: int, dim: int, seed, adam_variant: str | None, shard: int, rows: str,
             projection: dict | None = None) -> set[int]:
        """Create the store, or validate and reopen it; returns the indices of the finished shards.
        ``projection``: the projection's ``describe()`` (kind, dims, seed, block...), so that stores
        of different projections are never mixed."""
        want = {"shape": [int(n), int(dim)], "dtype": self.DTYPE, "fingerprint": self.fingerprint,
                "projection_seed": seed, "projection_dim": int(dim), "projection": projection,
                "adam_variant": adam_variant,
                "shard": int(shard), "rows": rows}
        have = self.read_sidecar()
        if have is not None and self.scratch and any(have.get(k) != v for k, v in want.items()):
            import shutil

            shutil.rmtree(self.root)
            have = None
        if have is not None and self.features_path.is_file():
            bad = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            if bad:
                detail = "; ".join(f"{k}: stored {a!r}, requested {b!r}" for k, (a, b) in bad.items())
                raise ValueError(f"gradient store {self.root} was written for another request ({detail}); "
                                 "use another directory or delete it")
            if self.features_path.stat().st_size != n * dim * 2:
                raise ValueError(f"gradient store {self.features_path} has {self.features_path.stat().st_size} "
                                 f"bytes, expected {n * dim * 2} for shape ({n}, {dim}) float16")
            self.meta = have
            self._mm = np.memmap(self.features_path, dtype=np.float16, mode="r+", shape=(n, dim))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._mm = np.memmap(self.features_path, dtype=np.float16, mode="w+", shape=(n, dim))
            self._mm.flush()
            self.meta = {"format": "leadsel-grad-features", "version": 1, **want,
                         "n_shards": -(-int(n) // int(shard)), "done_shards": [], "done": 0, "complete": n == 0}
            atomic_write_json(self.sidecar_path, self.meta)
        return set(self.meta["done_shards"])

    def write(self, start: int, feats: np.ndarray) -> None:
        self._mm[start:start + len(feats)] = feats.astype(np.float16)

    def commit_shard(self, k: int, rows: int) -> None:
        """Flush the memmap, then record shard ``k`` (``rows`` rows) as done in the sidecar."""
        self._mm.flush()
        done = sorted(set(self.meta["done_shards"]) | {int(k)})
        self.meta["done_shards"] = done
        self.meta["done"] = int(self.meta["done"]) + int(rows)
        self.meta["complete"] = len(done) == self.meta["n_shards"]
        atomic_write_json(self.sidecar_path, self.meta)

    def array(self) -> np.ndarray:
        """The stored features (a read-only float16 memmap of shape (n, d))."""
        meta = self.meta or self.read_sidecar()
        if meta is None:
            raise FileNotFoundError(f"no gradient store at {self.root}")
        return np.memmap(self.features_path, dtype=np.float16, mode="r", shape=tuple(meta["shape"]))


# ----------------------------------------------------------------------------- features

def _normalise(X: np.ndarray) -> np.ndarray:
    from .projection import l2_normalise

    return l2_normalise(np.asarray(X, dtype=np.float32))


def gradient_features(model: nn.Module, pool: EncodedPool, indices, *, pad_id: int, projection,
                      optimizer=None, adam_variant: str = "bias_corrected", batch_tokens: int = 4096,
                      max_batch_size: int = 8, precision: str = "fp32", shard: int = 1024,
                      store: GradientStore | None = None, progress: bool = True,
                      counter: PassCounter | None = None, stage: str = "grad",
                      on_shard: Callable[[int, int], None] | None = None,
                      desc: str = "gradient features") -> np.ndarray:
    """L2-normalised projected (Adam-preconditioned if ``optimizer``) per-sample gradients.

    Returns float32 ``(len(indices), projection.out_dim)``; row r belongs to ``pool`` sample
    ``indices[r]``. ``optimizer`` is a torch Adam/AdamW over the trainable parameters (or an
    :class:`AdamState`); ``None`` gives plain gradients (validation samples). With ``store`` the
    rows are written to (and on restart read back from) its float16 memmap and the result is the
    stored float16 values as float32. ``on_shard(k, stop)`` is called after each finished shard
    ``k`` (rows ``[k * shard, stop)``), after it is committed to the store. Each computed sample counts one forward and one
    backward sample-pass and its tokens in ``counter`` under ``stage``; rows found done in the
    store count as cached.
    """
    if adam_variant not in ADAM_VARIANTS:
        raise ValueError(f"adam_variant {adam_variant!r} is not one of {', '.join(ADAM_VARIANTS)}")
    if shard < 1:
        raise ValueError("shard must be >= 1")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(indices)
    taps = _Taps(model)
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
    done: set[int] = set()
    if store is not None:
        rows_fp = _fingerprint(pool.fingerprint(), indices)
        done = store.open(n=n, dim=dim, seed=getattr(projection, "seed", None),
                          adam_variant=adam_variant if state is not None else None, shard=shard, rows=rows_fp,
                          projection=projection.describe() if hasattr(projection, "describe") else None)
    out = np.zeros((n, dim), dtype=np.float32)
    shards = [(k, s, min(s + shard, n)) for k, s in enumerate(range(0, n, shard))]
    todo = [t for t in shards if t[0] not in done]
    if counter is not None:
        skipped = np.concatenate([indices[s:e] for k, s, e in shards if k in done] or [np.zeros(0, np.int64)])
        if len(skipped):
            tok = int(lengths[skipped].sum())
            counter.add(stage, len(skipped), tok, cached=True)
            counter.add_backward(stage, len(skipped), tok, cached=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=int(sum(lengths[indices[s:e]].sum() for _, s, e in todo)), desc=desc, unit="tok",
               unit_scale=True, disable=not progress, dynamic_ncols=True)
    computed = 0
    try:
        with _eval_mode(model):
            for k, s, e in todo:
                rows = indices[s:e]
                feats = np.zeros((e - s, dim), dtype=np.float32)
                for pos in length_batches(lengths[rows], batch_tokens, max_batch_size):
                    idx = rows[pos]
                    batch = {kk: v.to(device) for kk, v in collate(pool, idx, pad_id).items()}
                    G, _ = _per_sample_grads(model, taps, batch, precision)
                    if state is not None:
                        adam_precondition(G, state, adam_variant)
                    Gh = G.cpu().numpy()
                    del G
                    feats[pos] = _normalise(np.asarray(projection.project(Gh), dtype=np.float32))
                    del Gh
                    tok = int(lengths[idx].sum())
                    if counter is not None:
                        counter.add(stage, len(idx), tok)
                        counter.add_backward(stage, len(idx), tok)
                    computed += len(idx)
                    bar.update(tok)
                    bar.set_postfix(samples=computed, refresh=False)
                if store is not None:
                    store.write(s, feats)
                    store.commit_shard(k, e - s)
                else:
                    out[s:e] = feats
                if on_shard is not None:
                    on_shard(k, e)
    finally:
        bar.close()
    if store is not None:
        return np.asarray(store.array(), dtype=np.float32)
    return out


# ----------------------------------------------------------------------------- LESS score

def task_similarity(train_feats: np.ndarray, val_feats_by_task: dict[str, np.ndarray]) -> np.ndarray:
    """(n, T): each training sample's mean cosine similarity to each subtask's validation features,
    columns in the order of ``val_feats_by_task``. Rows are (re)normalised here; a zero row has
    cosine 0.

    mean_j cos(x, y_j) = <x/|x|, mean_j y_j/|y_j|>, so each subtask costs one (n, d) @ (d,) product.
    """
    if not val_feats_by_task:
        raise ValueError("LESS scores need at least one validation subtask")
    X = _normalise(np.asarray(train_feats, dtype=np.float32))
    out = np.empty((len(X), len(val_feats_by_task)), dtype=np.float32)
    for t, (task, V) in enumerate(val_feats_by_task.items()):
        V = np.asarray(V, dtype=np.float32)
        if V.ndim != 2 or len(V) == 0 or V.shape[1] != X.shape[1]:
            raise ValueError(f"validation features of subtask {task!r} have shape {V.shape}; "
                             f"need (m >= 1, {X.shape[1]})")
        out[:, t] = X @ _normalise(V).mean(0)
    return out


def less_scores(train_feats: np.ndarray, val_feats_by_task: dict[str, np.ndarray]) -> np.ndarray:
    """LESS score of each training sample at one checkpoint: max over subtasks of its mean cosine
    similarity to that subtask's validation features (:func:`task_similarity`)."""
    return task_similarity(train_feats, val_feats_by_task).max(axis=1)
