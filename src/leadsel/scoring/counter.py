"""Counting the work of a run: sample-passes and tokens per stage (run.json's ``passes``)."""
from __future__ import annotations


class PassCounter:
    """Work per stage, for run manifests and cost tables: sample-passes and tokens, forward-only
    (scoring) and forward+backward (training), plus the work a cache hit spared this run (what the
    method needs all the same: ``cached_*``)."""

    KEYS = ("forward", "forward_tokens", "backward", "backward_tokens",
            "cached_forward", "cached_forward_tokens", "cached_backward", "cached_backward_tokens")

    def __init__(self, start: dict | None = None):
        start = start or {}
        for k in self.KEYS:
            setattr(self, k, dict(start.get(k, {})))

    def _add(self, prefix: str, stage: str, n: int, tokens: int) -> None:
        for key, v in ((prefix, n), (prefix + "_tokens", tokens)):
            d = getattr(self, key)
            d[stage] = d.get(stage, 0) + int(v)

    def add(self, stage: str, n: int, tokens: int = 0, cached: bool = False) -> None:
        self._add("cached_forward" if cached else "forward", stage, n, tokens)

    def add_backward(self, stage: str, n: int, tokens: int = 0, cached: bool = False) -> None:
        self._add("cached_backward" if cached else "backward", stage, n, tokens)

    def to_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in self.KEYS}
