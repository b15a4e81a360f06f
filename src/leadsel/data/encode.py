"""Chat-template encoding with loss masks, the truncation policy, and the batch collator.

A conversation is rendered with the tokenizer's chat template and split, by character offsets,
into unsupervised and supervised segments: a supervised segment runs from the end of the
generation prompt before an assistant turn to the end of that turn (its content and the
end-of-turn marker). Segments are tokenized separately and concatenated, so the label mask is
exact. ``supervise="last"`` marks only the final assistant turn; ``"all"`` every assistant turn.

Truncation (``left_prompt``): tokens are dropped from the left, never past the start of the final
response; if the final response alone is still too long it is cut from the right. ``drop``
rejects every over-long sample instead. A sample with no predictable supervised token left (the
first token of a sequence predicts nothing) is rejected and counted, never scored 0.

The encoded pool is stored flat (one token array, one mask array, offsets): a few bytes per token
and trivially hashed for cache keys; its ids and sources are compact columns (:mod:`.columns`).
:func:`encode` encodes a list in memory (held-out sets); :mod:`.store` streams a pool through
:func:`encode_batch` onto disk.
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Sequence

import numpy as np

from ..utils import fingerprint
from .columns import Labels, Strings
from .records import Sample

SENTINEL = "\uE000leadsel-response\uE001"


class TemplateError(ValueError):
    pass


@dataclass
class EncodedPool:
    """Encoded samples, flat. ``index[i]`` is sample i's position in the list (or stream) that was
    encoded. ``tokens`` and ``supervised`` may be memory-mapped (a token store's)."""
    tokens: np.ndarray              # int32, all samples concatenated
    supervised: np.ndarray          # bool, True where the token is a label
    offsets: np.ndarray             # int64, n + 1
    index: np.ndarray               # int64, position of each kept sample in the input
    ids: Strings                    # a list of str is converted
    sources: Labels
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_ids: list[str] = field(default_factory=list)   # the first MAX_REJECTED_IDS
    truncated: int = 0
    stored_fingerprint: str | None = None                   # a token store's, computed when it was built

    def __post_init__(self) -> None:
        self.ids, self.sources = Strings.of(self.ids), Labels.of(self.sources)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        labels = np.where(self.supervised[a:b], self.tokens[a:b], -100)
        return self.tokens[a:b], labels

    def fingerprint(self) -> str:
        if self.stored_fingerprint is None:
            self.stored_fingerprint = fingerprint(np.asarray(self.tokens), np.asarray(self.supervised),
                                                  self.offsets, self.ids.digest())
        return self.stored_fingerprint

    def subset(self, indices) -> "EncodedPool":
        """The samples at ``indices`` (pool positions), in that order, as a pool of their own."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # token positions: each sample's start repeated over its length, plus 0..length-1
        pos = np.repeat(self.offsets[idx] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return EncodedPool(self.tokens[pos], self.supervised[pos], offsets, self.index[idx],
                           self.ids.take(idx), self.sources.take(idx))

    def report(self) -> dict:
        return {"n_encoded": len(self), "rejected": dict(self.rejected), "truncated": self.truncated,
                "rejected_ids_first": self.rejected_ids[:MAX_REJECTED_IDS],
                "tokens_total": int(self.offsets[-1]), "tokens_supervised": int(np.count_nonzero(self.supervised))}


def _render(tok, messages, generation_prompt: bool = False) -> str:
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja raises for conversations a template refuses
        raise TemplateError(f"the chat template cannot render this conversation: {e}") from None


def segments(tok, messages: list[dict], supervise: str = "last") -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, supervised) segments."""
    full = _render(tok, messages)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if supervise == "last":
        turns = turns[-1:]
    out, pos = [], 0
    for i in turns:
        start = _render(tok, messages[:i], generation_prompt=True)
        end = full if i == len(messages) - 1 else _render(tok, messages[: i + 1])
        if not (full.startswith(start) and full.startswith(end) and len(start) >= pos and len(end) > len(start)):
            raise TemplateError("the chat template does not render a conversation's prefix as a prefix "
                                "of the whole; its masks cannot be derived")
        out += [(full[pos:len(start)], False), (full[len(start):len(end)], True)]
        pos = len(end)
    out.append((full[pos:], False))
    return [s for s in out if s[0]]


def alone_segments(tok, response: str) -> list[tuple[str, bool]]:
    """The response encoded without its prompt: the template applied to the assistant turn only."""
    try:
        text = _render(tok, [{"role": "assistant", "content": SENTINEL}])
    except TemplateError:  # templates that insist on a user turn first get an empty one
        text = _render(tok, [{"role": "user", "content": ""}, {"role": "assistant", "content": SENTINEL}])
    if text.count(SENTINEL) != 1:
        raise TemplateError("the chat template transforms the assistant content; cannot isolate it")
    head, tail = text.split(SENTINEL)
    return [s for s in [(head, False), (response + tail, True)] if s[0]]


def _truncate(ids: list[int], sup: list[bool], max_length: int) -> tuple[list[int], list[bool]]:
    """Drop from the left (not past the final response's start), then from the right."""
    extra = len(ids) - max_length
    if extra <= 0:
        return ids, sup
    # start of the final supervised run
    j = len(sup) - 1
    while j >= 0 and not sup[j]:
        j -= 1
    while j > 0 and sup[j - 1]:
        j -= 1
    left = min(extra, max(j, 0))
    ids, sup = ids[left:], sup[left:]
    return ids[:max_length], sup[:max_length]


MAX_REJECTED_IDS = 20
TRUNCATIONS = ("left_prompt", "drop")


def check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"encoding.truncation: {truncation!r} is not one of {', '.join(TRUNCATIONS)}")


def encode_batch(samples: Sequence[Sample], tok, max_length: int, supervise: str = "last",
                 truncation: str = "left_prompt", alone: bool = False) -> list:
    """Per sample: its (token ids int32, supervised bool) after truncation, with ``.truncated``
    set, or the reason it is rejected (``too_long``, ``no_response_tokens``). One tokenizer call
    for the batch; :func:`prepare_batch`, :func:`tokenize` and :func:`finish_batch` are its steps
    (the token store runs the tokenizer of one batch while it prepares the next)."""
    check_truncation(truncation)
    prepared = prepare_batch(samples, tok, supervise, alone)
    return finish_batch(prepared, tokenize(tok, prepared.texts), max_length, truncation)


@dataclass
class Prepared:
    """A batch's segments: their texts, whether each is supervised, and how many each sample has."""
    texts: list[str]
    supervised: np.ndarray      # bool per segment
    n_segments: np.ndarray      # int64 per sample


def prepare_batch(samples: Sequence[Sample], tok, supervise: str = "last", alone: bool = False) -> Prepared:
    texts, sups, counts = [], [], []
    for s in samples:
        try:
            segs = alone_segments(tok, s.response) if alone else segments(tok, s.messages, supervise)
        except TemplateError as e:
            raise TemplateError(f"{s.file}:{s.line} (id {s.id}): {e}") from None
        texts += [t for t, _ in segs]
        sups += [sup for _, sup in segs]
        counts.append(len(segs))
    return Prepared(texts, np.asarray(sups, dtype=bool), np.asarray(counts, dtype=np.int64))


def tokenize(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added. A fast tokenizer's batch encoder is called
    directly (what ``tok(texts)`` calls, without building its BatchEncoding; it runs outside the GIL)."""
    if not texts:
        return []
    backend = getattr(tok, "backend_tokenizer", None)
    # a backend set to truncate or pad (tokenizer.json can say so) is left to tok(), which turns that off
    if backend is not None and backend.truncation is None and backend.padding is None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tok(texts, add_special_tokens=False)["input_ids"]


def finish_batch(prepared: Prepared, token_lists: list[list[int]], max_length: int, truncation: str) -> list:
    """Concatenate each sample's segments, mask them, truncate or reject (see :func:`encode_batch`)."""
    seg_len = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    flat = np.fromiter(chain.from_iterable(token_lists), dtype=np.int32, count=int(seg_len.sum()))
    mask = np.repeat(prepared.supervised, seg_len)
    # where each sample's tokens end: the token count up to its last segment
    ends = np.concatenate([[0], np.cumsum(seg_len)])[np.cumsum(prepared.n_segments)]
    out: list = []
    start = 0
    for end in ends.tolist():
        tid, sup = flat[start:end], mask[start:end]
        start = end
        cut = len(tid) > max_length
        if cut:
            if truncation == "drop":
                out.append("too_long")
                continue
            tid, sup = _truncate(tid, sup, max_length)
        if not sup[1:].any():
            out.append("no_response_tokens")
            continue
        out.append(_Encoded(tid, sup, cut))
    return out


class _Encoded(tuple):
    """(tokens, supervised) of one kept sample, and whether it was truncated."""

    def __new__(cls, tokens, supervised, truncated: bool):
        self = super().__new__(cls, (tokens, supervised))
        self.truncated = truncated
        return self


class PoolBuilder:
    """Collects encoded samples batch by batch: the arrays in memory (:func:`encode`), or each
    batch handed to ``sink(tokens, supervised)`` as it comes (the token store's files)."""

    def __init__(self, sink=None):
        self.sink = sink
        self.tokens, self.masks = [], []
        self.lengths, self.index = array("q"), array("q")   # per kept sample: 8 bytes, not a Python int
        self.rejected, self.rejected_ids, self.truncated = Counter(), [], 0
        self.n_supervised = 0

    def add(self, samples: Sequence[Sample], results: list, first: int) -> list[int]:
        """Take ``encode_batch``'s results for ``samples`` (inputs ``first``, ``first + 1``, ...);
        returns the batch positions kept."""
        kept, toks, masks = [], [], []
        for j, (s, r) in enumerate(zip(samples, results)):
            if isinstance(r, str):
                self.rejected[r] += 1
                if len(self.rejected_ids) < MAX_REJECTED_IDS:
                    self.rejected_ids.append(s.id)
                continue
            self.truncated += r.truncated
            kept.append(j)
            toks.append(r[0])
            masks.append(r[1])
            self.lengths.append(len(r[0]))
            self.index.append(first + j)
            self.n_supervised += int(r[1].sum())
        if self.sink is None:
            self.tokens += toks
            self.masks += masks
        elif toks:
            self.sink(np.concatenate(toks), np.concatenate(masks))
        return kept

    def offsets(self) -> np.ndarray:
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self.lengths, dtype=np.int64), out=offsets[1:])
        return offsets

    def report(self) -> dict:
        return {"n_encoded": len(self.lengths), "rejected": dict(self.rejected), "truncated": self.truncated,
                "rejected_ids_first": self.rejected_ids[:MAX_REJECTED_IDS],
                "tokens_total": int(np.sum(np.frombuffer(self.lengths, dtype=np.int64))),
                "tokens_supervised": self.n_supervised}


def encode(samples: list[Sample], tok, max_length: int, supervise: str = "last",
           truncation: str = "left_prompt", alone: bool = False, progress: bool = False) -> EncodedPool:
    """Encode ``samples`` (their conversations, or with ``alone`` their responses only), in memory."""
    b = PoolBuilder()
    kept = b.add(samples, encode_batch(samples, tok, max_length, supervise, truncation, alone), 0)
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
    return EncodedPool(cat(b.tokens, np.int32), cat(b.masks, bool), b.offsets(), np.asarray(b.index, dtype=np.int64),
                       [samples[j].id for j in kept], [samples[j].source for j in kept], dict(b.rejected),
                       b.rejected_ids, b.truncated)


def collate(pool: EncodedPool, indices, pad_id: int):
    """Right-padded torch batch (input_ids, attention_mask, labels) of the given samples."""
    import torch

    n = len(indices)
    width = int(max(pool.lengths[i] for i in indices))
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for r, i in enumerate(indices):
        tid, lab = pool.sample(int(i))
        input_ids[r, : len(tid)] = torch.from_numpy(tid.astype(np.int64))
        labels[r, : len(tid)] = torch.from_numpy(lab.astype(np.int64))
        attention[r, : len(tid)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
