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
and trivially hashed for cache keys.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..utils import fingerprint
from .records import Sample

SENTINEL = "\uE000leadsel-response\uE001"


class TemplateError(ValueError):
    pass


@dataclass
class EncodedPool:
    """Encoded samples, flat. ``index[i]`` is sample i's position in the list that was encoded."""
    tokens: np.ndarray              # int32, all samples concatenated
    supervised: np.ndarray          # bool, True where the token is a label
    offsets: np.ndarray             # int64, n + 1
    index: np.ndarray               # int64, position of each kept sample in the input list
    ids: list[str]
    sources: list[str]
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_ids: list[str] = field(default_factory=list)
    truncated: int = 0

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
        return fingerprint(self.tokens, self.supervised, self.offsets, self.ids)

    def subset(self, indices) -> "EncodedPool":
        """The samples at ``indices`` (pool positions), in that order, as a pool of their own."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # token positions: each sample's start repeated over its length, plus 0..length-1
        pos = np.repeat(self.offsets[idx] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return EncodedPool(self.tokens[pos], self.supervised[pos], offsets, self.index[idx],
                           [self.ids[i] for i in idx], [self.sources[i] for i in idx])

    def report(self) -> dict:
        return {"n_encoded": len(self), "rejected": dict(self.rejected), "truncated": self.truncated,
                "rejected_ids_first": self.rejected_ids[:20],
                "tokens_total": int(self.offsets[-1]), "tokens_supervised": int(self.supervised.sum())}


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
        end = _render(tok, messages[: i + 1])
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


def encode(samples: list[Sample], tok, max_length: int, supervise: str = "last",
           truncation: str = "left_prompt", alone: bool = False, progress: bool = False) -> EncodedPool:
    """Encode ``samples`` (their conversations, or with ``alone`` their responses only)."""
    if truncation not in ("left_prompt", "drop"):
        raise ValueError(f"encoding.truncation: {truncation!r} is not one of left_prompt, drop")
    segs_all, owner = [], []
    rejected, rejected_ids = Counter(), []
    for k, s in enumerate(samples):
        try:
            segs = alone_segments(tok, s.response) if alone else segments(tok, s.messages, supervise)
        except TemplateError as e:
            raise TemplateError(f"{s.file}:{s.line} (id {s.id}): {e}") from None
        segs_all += segs
        owner += [k] * len(segs)
    texts = [t for t, _ in segs_all]
    token_lists = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    per_sample: list[tuple[list[int], list[bool]]] = [([], []) for _ in samples]
    for (text, sup), ids, k in zip(segs_all, token_lists, owner):
        per_sample[k][0].extend(ids)
        per_sample[k][1].extend([sup] * len(ids))
    tokens, masks, lengths, index, ids, sources, truncated = [], [], [], [], [], [], 0
    for k, (s, (tid, sup)) in enumerate(zip(samples, per_sample)):
        if len(tid) > max_length:
            if truncation == "drop":
                rejected["too_long"] += 1
                rejected_ids.append(s.id)
                continue
            tid, sup = _truncate(tid, sup, max_length)
            truncated += 1
        if not any(sup[1:]):
            rejected["no_response_tokens"] += 1
            rejected_ids.append(s.id)
            continue
        tokens.append(np.asarray(tid, dtype=np.int32))
        masks.append(np.asarray(sup, dtype=bool))
        lengths.append(len(tid))
        index.append(k)
        ids.append(s.id)
        sources.append(s.source)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
    return EncodedPool(cat(tokens, np.int32), cat(masks, bool), offsets, np.asarray(index, dtype=np.int64),
                       ids, sources, dict(rejected), rejected_ids, truncated)


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
