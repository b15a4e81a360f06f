"""Every selection method by name: one :class:`~.base.Method` entry each, declared in its
selector's module and collected here.

    lead, lead-no-idu, lead-no-task, lead-no-bandit   :mod:`.lead`
    random, full, ifd, loss, less                      :mod:`.static`
    iterit                                             :mod:`.iterit`
    dynamic, clusterucb                                :mod:`.targeted`

The run asks the registry what a method needs (:func:`needs`, :func:`needs_text`), whether its
length is known in advance (:func:`method_of` ``.fixed_length``) and builds its selector
(:func:`build_selector`); nothing else names a method. The config's ``method`` field lists the same
names (a test checks that the two agree). docs/methods.md ("Adding a method") walks through a new
entry.
"""
from __future__ import annotations

from ..schema import RunConfig
from . import iterit, lead, static, targeted
from .base import Method, PoolView, Selector

METHODS: dict[str, Method] = {m.name: m for module in (lead, static, iterit, targeted) for m in module.METHODS}


def method_of(cfg: RunConfig) -> Method:
    try:
        return METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}") from None


def needs(cfg: RunConfig) -> set[str]:
    """Offline scores the method uses: u0 (base loss), ifd (warm-up IFD), emb (embeddings), less
    (warm-up LESS gradient scores), ifd_base (base-model IFD)."""
    return set(method_of(cfg).needs(cfg))


def needs_text(cfg: RunConfig) -> bool:
    """Whether the method reads the pool's response texts (IterIT's diversity)."""
    return method_of(cfg).reads_text


def build_selector(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[Selector, dict]:
    """(selector, info for run.json). ``scorer``: a :class:`~leadsel.scoring.online.ModelScorer`
    for the methods that score with the model being trained (IterIT, Dynamic, ClusterUCB)."""
    return method_of(cfg).build(cfg, view, scorer)
