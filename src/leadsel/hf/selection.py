"""``LeadSelection``: leadsel's selection, held for an HF trainer (:mod:`.trainer`).

It is built from a leadsel config -- the same ``method``, ``budget``, ``rounds``, ``seed``,
``lead:``, ``warmup:``, ``scoring:`` and ``encoding:`` settings ``leadsel run`` reads; its
``train:`` section is not used, the trainer's arguments decide how to train. The trainer attaches
it to its model, tokenizer and accelerator; it then

- loads the pool (the trainer's ``train_dataset``, written once as JSONL into the run directory,
  or the config's ``data:``) into leadsel's token store, with leadsel's encoding, so that the
  offline scores and the training losses are of the same tokens;
- runs the offline stage through leadsel's cached scoring (U0, warm-up IFD, embeddings, as the
  method needs) with the trainer's model as the base model;
- plans each round and observes it, as ``leadsel run`` does, and keeps the round log.

Its run directory, ``<output_dir>/leadsel`` of the trainer, is a leadsel run directory:
``run.json`` and ``rounds.jsonl`` as the rounds go, and after :meth:`LeadSelection.save`
``scores.parquet`` and ``selected.jsonl``, so ``leadsel report`` and ``leadsel compare`` read it.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed

from .. import dist
from ..config import load_config
from ..model.load import FALLBACK_TEMPLATES
from ..rundir import write_rows, write_selection
from ..runner import observe_round, round_line
from ..schema import RunConfig
from ..scoring.counter import PassCounter
from ..scoring.offline import offline_scores
from ..select import PoolView, build_selector, method_of, needs
from ..session import Session
from ..utils import atomic_open, atomic_write_bytes


class LeadSelection:
    """A leadsel selection method for ``LeadTrainer`` / ``LeadSFTTrainer``.

    ``LeadSelection.from_yaml("lead.yaml", "budget=0.05", "lead.clusters=16")``, or
    ``LeadSelection(cfg)`` with a :class:`~leadsel.schema.RunConfig`. Methods: ``lead`` and its
    ablations, and the static ones (random, full, ifd, loss, less); IterIT, Dynamic and ClusterUCB
    score with the model being trained between rounds and run in ``leadsel run`` only."""

    def __init__(self, cfg: RunConfig):
        if method_of(cfg).online:
            raise ValueError(f"method {cfg.method} scores the pool with the model being trained between rounds, "
                             "which the HF plug-in does not do: run it with `leadsel run`, or choose lead, one of its "
                             "ablations, or a static method (random, full, ifd, loss, less)")
        self.cfg = cfg
        self.session: Session | None = None
        self.selector = None
        self.scores: dict = {}
        self.rows: list[dict] = []
        self.round = 0            # the last round observed
        self.optimizer_steps: int | None = None   # the trainer's, when its training ended
        self._plan_seconds = 0.0

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, *overrides: str) -> "LeadSelection":
        """From a leadsel config file (None: the defaults) and ``key=value`` overrides."""
        return cls(load_config(path, list(overrides)))

    # -- set-up (by the trainer) ---------------------------------------------------------------
    def attach(self, *, accelerator, model, tokenizer, precision: str, output_dir: str, dataset=None,
               max_length: int | None = None) -> None:
        """Load the pool and run the offline stage (the trainer calls this once, at construction)."""
        if self.session is not None:
            raise RuntimeError("this LeadSelection is attached to a trainer already: build one per trainer")
        cfg = self.cfg
        run_dir = Path(output_dir) / "leadsel"
        if cfg.encoding.template is not None:  # as `leadsel run` does: the config's template replaces the tokenizer's
            tokenizer.chat_template = FALLBACK_TEMPLATES.get(cfg.encoding.template, cfg.encoding.template)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: set encoding.template in the leadsel config")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        name = getattr(base.config, "_name_or_path", "") or type(base).__name__
        changes = {"output_dir": str(run_dir),
                   "model": dataclasses.replace(cfg.model, name=name,
                                                finetuning="lora" if hasattr(model, "peft_config") else "full")}
        if dataset is not None:
            changes["data"] = dataclasses.replace(cfg.data, paths=[str(write_pool(dataset, run_dir, accelerator))])
        if max_length is not None:
            changes["encoding"] = dataclasses.replace(cfg.encoding, max_length=int(max_length))
        self.cfg = cfg = dataclasses.replace(cfg, **changes)
        # a fresh run.json: a resumed run takes its rounds and counts from the checkpoint (load_state_dict)
        s = self.session = Session.around(cfg, accelerator, model, tokenizer, name, precision, cfg.method)
        with s.manifest.stage("offline"):
            self.scores = offline_scores(s, needs(cfg), cfg.lead.ifd_kind)
        set_seed(cfg.seed)  # as `leadsel run`: whether the offline stage ran or hit the cache, the rounds start alike
        self.selector, info = build_selector(cfg, PoolView(s.pool.ids, s.pool.sources, self.scores))
        s.manifest.update("selection", **info, trainer="hf plug-in")

    @property
    def pool(self):
        return self.session.pool

    @property
    def max_rounds(self) -> int:
        return int(self.selector.max_rounds)

    @property
    def max_round_samples(self) -> int:
        return int(self.selector.max_round_samples)

    # -- rounds --------------------------------------------------------------------------------
    def plan(self) -> np.ndarray | None:
        """The next round's samples (pool positions, in training order), or None when done; the
        same on every process (checked)."""
        t0 = time.perf_counter()
        idx = self.selector.plan(self.round + 1)
        dist.check_same(self.session.accelerator, dist.digest(idx), f"round {self.round + 1}: the selected samples")
        self._plan_seconds = time.perf_counter() - t0
        return idx

    def observe(self, idx: np.ndarray, result, train_seconds: float) -> dict:
        """Give the selector the round's ``TrainResult``; its log row (written to rounds.jsonl)."""
        s = self.session
        self.round += 1
        s.counter.add_backward("train", len(idx), int(s.pool.lengths[idx].sum()))
        row = observe_round(self.round, idx, self.selector, result, s.pool.ids, self._plan_seconds, train_seconds)
        self.rows.append(row)
        if s.accelerator.is_main_process:
            write_rows(s.run_dir, self.rows)
        s.manifest.set("passes", s.counter.to_dict())
        s.manifest.tick()
        if self.cfg.progress and s.accelerator.is_local_main_process:
            print(round_line(row), file=sys.stderr, flush=True)
        return row

    def state_dict(self) -> dict:
        """What continues the selection exactly: the selector's state, the round log, the counts."""
        return {"round": self.round, "selector": self.selector.state_dict(), "rows": self.rows,
                "passes": self.session.counter.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.rows = int(state["round"]), list(state["rows"])
        self.selector.load_state_dict(state["selector"])
        self.session.counter = PassCounter(state["passes"])
        self.session.manifest.update("rounds", resumed_from_round=self.round)

    # -- results -------------------------------------------------------------------------------
    @property
    def selected_ids(self) -> list[str]:
        """The distinct samples trained so far, in pool order."""
        used = np.flatnonzero(self.selector.columns()["times_used"] > 0)
        return [self.pool.ids[int(i)] for i in used]

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the run directory's final artifacts (scores.parquet, selected.jsonl, rounds.jsonl,
        run.json marked complete); with ``directory``, copy the directory's files there too."""
        s = self.session
        if s is None:
            raise RuntimeError("this selection has not been attached to a trainer yet")
        rows = self.rows
        s.manifest.update("rounds", n=len(rows), samples_trained=int(sum(x["n_selected"] for x in rows)),
                          distinct_trained=rows[-1]["unique_used"] if rows else 0,
                          optimizer_steps=self.optimizer_steps)
        s.manifest.set("passes", s.counter.to_dict())
        if s.accelerator.is_main_process:
            write_selection(s, self.scores, self.selector)
            write_rows(s.run_dir, rows)
        s.manifest.complete()
        out = s.run_dir
        if directory is not None and Path(directory).resolve() != s.run_dir.resolve():
            out = Path(directory)
            if s.accelerator.is_main_process:
                out.mkdir(parents=True, exist_ok=True)
                for name in ("run.json", "rounds.jsonl", "scores.parquet", "selected.jsonl"):
                    atomic_write_bytes(out / name, (s.run_dir / name).read_bytes())
        dist.barrier(s.accelerator)
        return out


def write_pool(dataset, run_dir: Path, accelerator) -> Path:
    """The trainer's ``datasets.Dataset`` as ``run_dir/pool.jsonl`` (one record per row, its
    columns as they are: leadsel's readers detect the shape), written atomically by the first
    process of each machine while the others wait."""
    path = run_dir / "pool.jsonl"
    if not hasattr(dataset, "to_json"):
        raise TypeError(f"train_dataset must be a datasets.Dataset (got {type(dataset).__name__}); or pass none "
                        "and set data.paths in the leadsel config")
    with accelerator.local_main_process_first():
        if accelerator.is_local_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(path) as f:
                dataset.to_json(f, lines=True, force_ascii=False)
    return path
