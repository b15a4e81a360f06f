"""The set-up every job shares: device, model, tokenizer, pool, encodings, eval sets, caches.

``Session.open(cfg)`` does the work in stages recorded in the run manifest: ``model`` (resolve,
convert a bundled model once, load, LoRA, precision), ``data`` (the user's pool or the bundled
one, validated and encoded; held-out eval sets, checked not to overlap the pool).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from . import dist
from .data.bundled import build_bundled_pool
from .data.encode import EncodedPool, encode
from .data.load import load_pool
from .data.overlap import check_heldout, check_validation, sample_key
from .data.records import Sample
from .data.store import Encoding, TokenStore, open_store
from .manifest import RunManifest
from .model.load import load_model, load_tokenizer, model_fingerprint, resolve_model
from .model.precision import choose_precision, choose_weights
from .schema import RunConfig, to_dict
from .scoring.cache import ScoreCache
from .scoring.counter import PassCounter
from .scoring.passes import loss_pass
from .tracking import accelerator_kwargs
from .utils import cache_root

log = logging.getLogger(__name__)


def build_bundled(cfg: RunConfig, tokenizer):
    """The bundled pool of ``cfg.data.bundled``, its length limit counted in the model's tokens."""
    count = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return build_bundled_pool(cfg.data.bundled, count, cache_root(cfg.cache_dir), tokenizer_name=cfg.model.name,
                              progress=cfg.progress)


class PoolTexts:
    """The pool's response texts as a sequence read from the files on demand: ``take(indices)``
    reads a batch in one pass (IterIT's candidates), ``texts[i]`` one."""

    def __init__(self, store: TokenStore):
        self.store = store

    def __len__(self) -> int:
        return len(self.store.pool)

    def take(self, indices) -> list[str]:
        return [s.response for s in self.store.samples(indices)]

    def __getitem__(self, i: int) -> str:
        return self.take([int(i)])[0]

    def __iter__(self):
        return (s.response for batch in self.store.iter_samples() for s in batch)


@dataclass
class EvalSet:
    name: str
    samples: list[Sample]
    encoded: EncodedPool


@dataclass
class Session:
    cfg: RunConfig
    run_dir: Path
    manifest: RunManifest
    accelerator: Accelerator
    model_path: str = ""
    tokenizer: object = None
    model: object = None
    precision: str = "fp32"
    base_fp: str = ""
    store: TokenStore | None = None
    pool: EncodedPool | None = None
    evals: list[EvalSet] = field(default_factory=list)
    eval_paths: dict[str, Path] = field(default_factory=dict)
    bundled_vals: dict[str, Path] = field(default_factory=dict)
    _vals: list[EvalSet] | None = None
    _alone: EncodedPool | None = None
    cache: ScoreCache | None = None
    counter: PassCounter = field(default_factory=PassCounter)

    @classmethod
    def open(cls, cfg: RunConfig, method: str, resume: bool = False, record: bool = True) -> "Session":
        """``resume``: keep the run directory's manifest (stage times and pass counts accumulate).
        ``record=False``: write no run.json (evaluating a finished run)."""
        run_dir = Path(cfg.output_dir)
        accelerator = Accelerator(**dist.accelerator_kwargs(cfg),
                                  **(accelerator_kwargs(cfg, run_dir) if record else {}))
        if accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
        set_seed(cfg.seed)
        # only the main process writes run.json; the others keep their copy in memory
        manifest = RunManifest(run_dir, to_dict(cfg), cfg.seed, method, resume=resume,
                               record=record and accelerator.is_main_process)
        s = cls(cfg=cfg, run_dir=run_dir, manifest=manifest, accelerator=accelerator,
                counter=PassCounter())  # a resumed run takes its counts from its checkpoint
        s.cache = ScoreCache(cache_root(cfg.cache_dir), enabled=cfg.scoring.cache)
        with s.manifest.stage("model"):
            # a bundled model is converted into the cache once: by the main process, the others then read it
            with accelerator.main_process_first():
                s._load_model()
        with s.manifest.stage("data"):
            with accelerator.main_process_first():  # likewise the bundled pool
                s._load_data()
        return s

    @classmethod
    def around(cls, cfg: RunConfig, accelerator: Accelerator, model, tokenizer, model_path: str, precision: str,
               method: str) -> "Session":
        """A session around a model, tokenizer and accelerator the caller already holds (the HF
        plug-in's, :mod:`leadsel.hf`): nothing is loaded but the data, as :meth:`open` loads it."""
        run_dir = Path(cfg.output_dir)
        if accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
        manifest = RunManifest(run_dir, to_dict(cfg), cfg.seed, method, record=accelerator.is_main_process)
        s = cls(cfg=cfg, run_dir=run_dir, manifest=manifest, accelerator=accelerator, model_path=model_path,
                tokenizer=tokenizer, model=model, precision=precision)
        s.cache = ScoreCache(cache_root(cfg.cache_dir), enabled=cfg.scoring.cache)
        with s.manifest.stage("model"):  # a model not named by a local directory is identified by its weights
            s._record_model(why="the plug-in's trainer holds the model", weights_why="as given",
                            hash_weights=not Path(model_path).is_dir())
        with s.manifest.stage("data"):
            with accelerator.main_process_first():
                s._load_data()
        return s

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def _load_model(self) -> None:
        mc = self.cfg.model
        self.model_path = resolve_model(mc.name, mc.cache_dir or self.cfg.cache_dir)
        self.tokenizer = load_tokenizer(self.model_path, self.cfg.encoding.template)
        device = self.accelerator.device
        self.precision, why = choose_precision(mc.precision, device.type)
        weights, weights_why = choose_weights(mc.weights, device.type, mc.finetuning, self.precision)
        # the adapter's initial weights: the same whether the bundled model was converted just now
        # (which draws from torch's generator) or read from the cache, on every process
        set_seed(self.cfg.seed)
        self.model = load_model(self.model_path, mc.finetuning, mc.lora, weights).to(device)
        self._record_model(why, weights_why, weights)

    def _record_model(self, why: str, weights_why: str, weights: str | None = None, hash_weights: bool = False) -> None:
        """The model's identity (for score caches) and its description in run.json."""
        self.base_fp = model_fingerprint(self.model, self.model_path, hash_weights=hash_weights)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        self.manifest.update("model", name=self.cfg.model.name if weights else self.model_path,
                             path_fingerprint=self.base_fp, finetuning=self.cfg.model.finetuning,
                             precision=self.precision, precision_reason=why,
                             weights=weights or str(next(self.model.parameters()).dtype).removeprefix("torch."),
                             weights_reason=weights_why, device=str(self.accelerator.device),
                             num_processes=self.accelerator.num_processes, trainable_parameters=trainable,
                             total_parameters=total)

    @property
    def encoding(self) -> Encoding:
        return Encoding.of(self.cfg.encoding)

    def alone_pool(self) -> EncodedPool:
        """The pool's responses encoded without their prompts (for IFD), in pool order; built once
        into the token store (by the main process first)."""
        if self._alone is None:
            with self.accelerator.main_process_first(), self.accelerator.local_main_process_first():
                self._alone = self.store.alone(self.tokenizer, self.encoding, progress=self.cfg.progress)
        return self._alone

    def responses(self) -> "PoolTexts":
        """Each pool sample's response text, in pool order, read from the files when asked for."""
        return PoolTexts(self.store)

    def encode(self, samples: list[Sample], alone: bool = False) -> EncodedPool:
        e = self.cfg.encoding
        return encode(samples, self.tokenizer, e.max_length, e.supervise, e.truncation, alone=alone)

    def _load_data(self) -> None:
        dc = self.cfg.data
        eval_paths: dict[str, Path] = {}
        if dc.paths:
            paths = dc.paths
        else:
            built = build_bundled(self.cfg, self.tokenizer)
            paths, eval_paths = [str(built.pool)], dict(built.evals)
            self.bundled_vals = dict(built.vals)
            self.manifest.update("data", bundled=built.stats)
        for p in dc.eval_paths:
            eval_paths[Path(p).name.split(".")[0]] = Path(p)
        self.eval_paths = eval_paths
        # every process needs the token store: built by the main process first (a shared cache then
        # serves all; _load_data runs under main_process_first), and on a machine with a cache of its
        # own by that machine's main process first
        with self.accelerator.local_main_process_first():
            self.store = open_store(paths, self.tokenizer, self.encoding, cache_root(self.cfg.cache_dir),
                                    fmt=dc.format, on_error=dc.on_error, split=dc.split, progress=self.cfg.progress)
        self.pool = self.store.pool
        self.manifest.update("data", load=self.store.load_report.to_dict(), encoding=self.store.encoding_report,
                             supervise=self.cfg.encoding.supervise, n_pool=len(self.pool),
                             token_store=self.store.root.name)
        cap = self.cfg.eval_max_samples
        for name, path in sorted(eval_paths.items()):
            samples, rep = load_pool([path], fmt="auto", on_error=dc.on_error)
            check_heldout(path, samples, self.store)
            samples = samples[:cap] if cap else samples
            enc = self.encode(samples)
            self.evals.append(EvalSet(name, samples, enc))
            self.manifest.update("data", **{f"eval_{name}": {"n": len(enc), "rejected": enc.rejected,
                                                             "skipped": rep.skipped}})

    def validation_sets(self) -> list[EvalSet]:
        """The targeted methods' validation examples, one set per task: ``data.val_paths`` (a task
        per file, named by its stem) or, with the bundled pool, each source's val split. A set that
        shares content with an evaluation set (the whole file, not only the evaluated part) is
        refused: validation examples must never come from a test set."""
        if self._vals is not None:
            return self._vals
        dc = self.cfg.data
        paths = {Path(p).name.split(".")[0]: Path(p) for p in dc.val_paths} or dict(self.bundled_vals)
        if not paths:
            raise ValueError(f"method {self.cfg.method} selects for a target task and needs its validation examples: "
                             "set data.val_paths (JSONL files, one per task)")
        eval_keys: dict[str, str] = {}
        for name, path in self.eval_paths.items():
            samples, _ = load_pool([path], fmt="auto", on_error=self.cfg.data.on_error)
            eval_keys.update((sample_key(x), str(path)) for x in samples)
        vals, info = [], {}
        for name, path in sorted(paths.items()):
            samples, rep = load_pool([path], fmt="auto", on_error=dc.on_error)
            check_validation(path, samples, eval_keys)
            enc = self.encode(samples)
            vals.append(EvalSet(name, samples, enc))
            info[name] = {"n": len(enc), "rejected": enc.rejected, "skipped": rep.skipped}
        self.manifest.update("data", validation=info)
        self._vals = vals
        return vals

    # -- passes -------------------------------------------------------------------------------
    def losses(self, pool: EncodedPool, kind: str, *, base: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample losses of ``pool`` under the base model (adapter off, cached) or the
        current one (not cached)."""
        off = self.model.disable_adapter() if base and hasattr(self.model, "disable_adapter") else nullcontext()
        with off:
            return self.score_with(self.model, pool, kind, self.base_fp if base else None, desc)

    def score_with(self, model, pool: EncodedPool, kind: str, model_fp: str | None, desc: str):
        """Per-sample losses of ``pool`` under ``model``; cached when ``model_fp`` identifies it."""
        out = loss_pass(model, pool, accelerator=self.accelerator, pad_id=self.pad_id, precision=self.precision,
                        scoring=self.cfg.scoring, cache=self.cache if model_fp else None, model_fp=model_fp,
                        kind=kind, desc=desc, progress=self.cfg.progress, counter=self.counter,
                        chunk=self.cfg.model.logit_chunk)
        self.manifest.set("passes", self.counter.to_dict())
        return out

    def evaluate(self, base: bool, label: str, validation: bool = False) -> dict:
        """Held-out loss (mean per sample and per token) on every eval set, or on every validation
        set (``validation``: the sets settings are chosen on)."""
        out = {}
        sets, kind = (self.validation_sets(), "eval-val") if validation else (self.evals, "eval")
        for ev in sets:
            loss, tokens = self.losses(ev.encoded, f"{kind}-{ev.name}", base=base, desc=f"{label} {ev.name}")
            out[ev.name] = {"loss_per_sample": float(loss.mean()),
                            "loss_per_token": float((loss * tokens).sum() / tokens.sum()), "n": len(loss)}
        if out:
            out["mean"] = {"loss_per_sample": float(np.mean([v["loss_per_sample"] for v in out.values()]))}
        return out
