"""What the HF ``Trainer`` iterates in a round: leadsel's micro-batches, in leadsel's order.

A round's plan (pool positions, in training order) is cut into optimizer steps of ``B = batch x
accumulation x processes`` samples, as leadsel's own loop cuts it (:mod:`leadsel.train.trainer`):
process ``r`` trains the step's positions ``r, r + W, r + 2W, ...`` in micro-batches of ``batch``.
accelerate hands batch ``k`` of the sampler's stream to process ``k mod W``, so the sampler
emits, per step, micro-batch ``m`` of every process in turn; each process's share is padded with
*filler* rows to a whole ``accumulation x batch``, so that every step is a whole optimizer step on
every process (a short step never runs into the next round).

Each row travels as one integer, ``(position + 1) * 2**32 + pool index``, and a filler as its pool
index alone (position 0), so the dataset and the collator need no state of their own (dataloader
workers may hold stale copies of both). The collator drops the fillers of a micro-batch; one that
is all filler keeps a single row, which trains with weight 0 (leadsel's loop does the same for a
process left without samples in a short last step).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.encode import EncodedPool, collate

SHIFT = 2 ** 32


def layout(n: int, batch: int, accumulation: int, world: int) -> list[list[int | None]]:
    """Per optimizer step of an ``n``-sample round, the positions in the order the sampler emits
    them (``None``: filler)."""
    per_step = batch * accumulation * world
    steps = []
    for s in range(0, n, per_step):
        chunk = list(range(s, min(n, s + per_step)))
        shares = [chunk[r::world] + [None] * (batch * accumulation - len(chunk[r::world])) for r in range(world)]
        steps.append([pos for m in range(accumulation) for r in range(world)
                      for pos in shares[r][m * batch:(m + 1) * batch]])
    return steps


def encode_codes(order: np.ndarray, steps: list[list[int | None]]) -> list[int]:
    """The integers the sampler yields for ``order`` laid out as ``steps``; a step's fillers are
    its first sample's row."""
    out = []
    for step in steps:
        first = int(order[next(p for p in step if p is not None)])
        out += [first if p is None else (p + 1) * SHIFT + int(order[p]) for p in step]
    return out


def decode(codes) -> tuple[np.ndarray, np.ndarray]:
    """(position in the round or -1 for a filler, pool index) of each code."""
    codes = np.asarray(codes, dtype=np.int64)
    return codes // SHIFT - 1, codes % SHIFT


class RoundSampler(torch.utils.data.Sampler):
    """Yields the current round's codes. Its length is the longest round's (HF reads it once per
    ``train()``); a shorter round ends its epoch early (the callback stops it after its last step).
    It has no ``generator``: the order is leadsel's, the same on every process."""

    def __init__(self, bound: int, per_step: int):
        self.length = max(1, math.ceil(bound / per_step)) * per_step
        self.codes: list[int] = []

    def set_round(self, codes: list[int]) -> None:
        if len(codes) > self.length:
            raise RuntimeError(f"a round of {len(codes)} rows is longer than the {self.length} the trainer was sized for")
        self.codes = list(codes)

    def __iter__(self):
        return iter(list(self.codes))

    def __len__(self) -> int:
        return self.length


class Row:
    """One row as the dataset returns it: its code. Not a dict, so HF's column remover passes it
    through; ``in`` answers False (TRL asks a sample whether it holds images)."""
    __slots__ = ("code",)

    def __init__(self, code: int):
        self.code = int(code)

    def __contains__(self, key) -> bool:
        return False


class PoolRows(torch.utils.data.Dataset):
    """The pool as the trainer's ``train_dataset``: ``rows[code]`` is ``Row(code)``; its length
    (the pool's) is set once the pool is loaded."""

    def __init__(self):
        self.n = 0

    def __getitem__(self, code: int) -> Row:
        return Row(code)

    def __len__(self) -> int:
        return self.n


class Collator:
    """Codes -> leadsel's right-padded batch of the real rows (``input_ids``, ``attention_mask``,
    ``labels``) and ``lead_codes`` (their codes; a lone filler kept for an all-filler micro-batch).
    Any other rows (an eval set's) go to ``fallback``, the collator the trainer would have used."""

    def __init__(self, fallback=None):
        self.pool: EncodedPool | None = None   # set once the pool is loaded
        self.pad_id = 0
        self.fallback = fallback

    def __call__(self, rows: list[Row]) -> dict:
        if rows and not isinstance(rows[0], Row):
            if self.fallback is None:
                raise TypeError("these rows are not the selection's and no data_collator was given for them")
            return self.fallback(rows)
        codes = np.array([r.code for r in rows], dtype=np.int64)
        pos, idx = decode(codes)
        keep = pos >= 0
        if not keep.any():
            keep[0] = True
        batch = collate(self.pool, idx[keep], self.pad_id)
        batch["lead_codes"] = torch.from_numpy(codes[keep])
        return batch
