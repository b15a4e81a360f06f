"""Selection methods behind one protocol (:mod:`.base`), registered by name.

``lead`` and its ablations (:mod:`.lead`), the static baselines ``random``, ``full``, ``ifd``,
``loss``, ``less`` (:mod:`.static`), and the peers ``iterit`` (:mod:`.iterit`), ``dynamic`` and
``clusterucb`` (:mod:`.gradient`). ``needs(cfg)`` says which
offline scores a method uses, so that a run computes (or loads from the cache) only those.
"""
from __future__ import annotations

import dataclasses

from ..config import RunConfig, count_of
from .base import PoolView, RoundStats, Selector
from .clusters import cluster_pool

ABLATIONS = {
    "lead-no-idu": {"idu": False},
    "lead-no-task": {"stratify": False},
}


def lead_settings(cfg: RunConfig):
    """The LeadConfig a LEAD-family method runs with (its ablation applied)."""
    lead = dataclasses.replace(cfg.lead, **ABLATIONS.get(cfg.method, {}))
    if cfg.method == "lead-no-bandit":
        lead = dataclasses.replace(lead, bandit=dataclasses.replace(lead.bandit, name="uniform"))
    return lead


def is_lead(cfg: RunConfig) -> bool:
    return cfg.method.startswith("lead")


def needs(cfg: RunConfig) -> set[str]:
    """Offline scores the method uses: u0 (base loss), ifd (warm-up IFD), emb (embeddings), less
    (warm-up LESS gradient scores)."""
    if is_lead(cfg):
        feats = cfg.lead.cluster_features
        return {"u0"} | ({"ifd"} if feats in ("ifd", "both") else set()) | (
            {"emb"} if feats in ("embedding", "both") else set())
    return {"ifd": {"ifd"}, "loss": {"u0"}, "less": {"less"}, "iterit": {"u0", "ifd_base"}}.get(cfg.method, set())


def needs_text(cfg: RunConfig) -> bool:
    """Whether the method reads the pool's response texts (IterIT's diversity)."""
    return cfg.method == "iterit"


def build_selector(cfg: RunConfig, view: PoolView, scorer=None) -> tuple[Selector, dict]:
    """(selector, info for run.json). ``scorer``: a :class:`~leadsel.scoring.online.ModelScorer`
    for the methods that score with the model being trained (IterIT)."""
    n = len(view)
    budget = count_of(cfg.budget, n)
    if is_lead(cfg):
        from .lead import LeadSelector

        lead = lead_settings(cfg)
        labels, info = cluster_pool(lead.cluster_features, lead.clusters, lead.cluster_seed,
                                    ifd=view.scores.get("ifd"), emb=view.scores.get("emb"))
        sel = LeadSelector(view, lead, labels, budget, cfg.rounds, cfg.seed)
        return sel, {"budget": budget, "clusters": info, "lead": dataclasses.asdict(lead)}
    if cfg.method == "iterit":
        from .iterit import IterITSelector

        if scorer is None or view.responses is None:
            raise ValueError("iterit needs a model scorer and the pool's responses")
        sel = IterITSelector(view, cfg.iterit, budget, cfg.train.epochs, cfg.seed, scorer, view.responses)
        return sel, {"budget": budget, "epochs": cfg.train.epochs, "iterit": dataclasses.asdict(cfg.iterit)}
    if cfg.method in ("dynamic", "clusterucb"):
        from .gradient import GradientSelector

        if scorer is None:
            raise ValueError(f"{cfg.method} needs a model scorer")
        if cfg.method == "clusterucb" and budget > cfg.targeted.draws * n:
            raise ValueError(f"clusterucb trains the top budget ({budget}) of the samples it draws each epoch "
                             f"(targeted.draws x pool = {cfg.targeted.draws * n:g}): raise targeted.draws or lower budget")
        t = cfg.train
        warm = cfg.targeted.warmup_steps * t.per_device_batch_size * t.gradient_accumulation_steps
        sel = GradientSelector(cfg.method, view, cfg.targeted, budget, t.epochs, cfg.seed, scorer, warm)
        return sel, {"budget": budget, "epochs": t.epochs, "warmup_samples": sel.warmup,
                     "targeted": dataclasses.asdict(cfg.targeted), "grads": dataclasses.asdict(cfg.grads)}
    from .static import StaticSelector

    sel = StaticSelector(cfg.method, view, budget, cfg.train.epochs, cfg.seed)
    return sel, {"budget": len(sel.subset), "epochs": cfg.train.epochs, **sel.info}


__all__ = ["PoolView", "RoundStats", "Selector", "build_selector", "needs", "needs_text", "is_lead", "lead_settings"]
