"""Selection methods behind one protocol (:mod:`.base`), registered by name (:mod:`.registry`).

``lead`` and its ablations (:mod:`.lead`), the static baselines ``random``, ``full``, ``ifd``,
``loss``, ``less`` (:mod:`.static`), and the peers ``iterit`` (:mod:`.iterit`), ``dynamic`` and
``clusterucb`` (:mod:`.targeted`). Selection logic is plain numpy: nothing here imports torch.
"""
from __future__ import annotations

from .base import Method, PoolView, RoundStats, Selector
from .registry import METHODS, build_selector, method_of, needs, needs_text

__all__ = ["METHODS", "Method", "PoolView", "RoundStats", "Selector", "build_selector", "method_of", "needs",
           "needs_text"]
