"""lm-evaluation-harness tasks on a model held in memory (``leadsel eval RUN_DIR --harness TASKS``).

The trained model of a run is evaluated as it is after :func:`~leadsel.eval.heldout.load_trained`:
nothing is written to disk and nothing is reloaded. A LoRA model is handed to lm-eval's ``HFLM``
as the peft model it is (adapter active, not merged); a fully fine-tuned model as the plain
transformers model. Needs the ``eval`` extra: ``pip install 'leadsel[eval]'`` (lm-eval 0.4.13).

Command line (``leadsel eval RUN_DIR ...``)::

    --harness TASK1,TASK2     lm-eval task, group or tag names (or paths of task YAML files),
                              comma-separated (the flag may be repeated)
    --num-fewshot N           few-shot examples per prompt (default: each task's own, else 0;
                              a task whose YAML sets num_fewshot: 0 keeps 0, as in lm-eval)
    --harness-limit N         at most N documents per task (a quick look, not a benchmark number)
    --harness-batch-size N    batch size of the log-likelihood / generation passes (default 8;
                              "auto" lets lm-eval probe the largest that fits)
    --chat-template / --no-chat-template
                              format prompts with the tokenizer's chat template (the run's
                              template, see encoding.template); few-shot examples then become
                              turns of the conversation (lm-eval's fewshot_as_multiturn). Off by
                              default
    --harness-include DIR     a folder of your own task YAMLs (repeat for more); when every
                              requested task is found there, lm-eval's own task list (14,000
                              entries, ~10 s to index) is not read
    --no-heldout              only the harness: the held-out losses already in eval.json are kept

Results go to ``eval.json`` and to the ``eval`` entry of ``run.json`` under ``"harness"``::

    {"lm_eval": "0.4.13", "tasks": {TASK: {"metrics": {"acc": .., "acc_stderr": .., ...},
     "n_shot": 0, "version": 1.0, "n_samples": {"original": .., "effective": ..}, "higher_is_better": ..}},
     "groups": {...}, "apply_chat_template": false, "fewshot_as_multiturn": null, "num_fewshot": null,
     "limit": null, "batch_size": 8, "device": "cpu", "precision": "fp32", "model": {...}, ...}

Metric names are lm-eval's own (``acc``, ``acc_norm``, ``exact_match``, their ``_stderr``); the
``,none`` filter suffix lm-eval appends is dropped, any other filter is kept (``exact_match,strict-match``).

Offline unless asked (``--allow-download``, or ``LEADSEL_ALLOW_DOWNLOAD=1``, for a machine with hub
access that should fetch e.g. MMLU's data): leadsel downloads nothing, and lm-eval would otherwise fetch task data (and a few
metrics) from the Hugging Face hub. For the duration of the call ``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and ``HF_EVALUATE_OFFLINE`` are set to 1 (also
in the already-imported ``huggingface_hub``, ``datasets`` and ``evaluate``, which read them at
import), and restored afterwards. Hub data already in the local datasets
cache is still used; a task whose data is not there fails with an error naming it: write a local
task instead (``dataset_path: json`` with ``dataset_kwargs: {data_files: {test: FILE.jsonl}}``)
and pass its folder with ``--harness-include``.

lm-eval itself also seeds Python's, numpy's and torch's global generators (its defaults 0, 1234,
1234; recorded), caches the datasets it prepares in the ``datasets`` cache (``HF_DATASETS_CACHE``)
and runs ``git describe`` in the working directory for its own record (not kept here).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "the harness needs lm-eval: pip install 'leadsel[eval]'"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")
# datasets' own loaders: a task with one of these as dataset_path reads local files
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "webdataset", "xml", "imagefolder",
                  "audiofolder", "videofolder"}
HUB_ERRORS = {"OfflineModeIsEnabled", "DatasetNotFoundError", "LocalEntryNotFoundError", "RepositoryNotFoundError",
              "GatedRepoError", "HfHubHTTPError", "HFValidationError"}


class HarnessError(RuntimeError):
    """lm-eval is missing, a task is unknown or cannot be loaded, or its evaluation failed."""


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        detail = "" if (e.name or "").split(".")[0] == "lm_eval" else f" (importing it failed: {e})"
        raise HarnessError(INSTALL_HINT + detail) from e
    return lm_eval, HFLM, TaskManager


@contextmanager
def offline() -> Iterator[None]:
    """Hub access off for lm-eval, ``datasets``, ``evaluate`` and transformers; restored afterwards.
    ``LEADSEL_ALLOW_DOWNLOAD=1`` (``leadsel eval --allow-download``) leaves the user's settings as
    they are, for a machine that may fetch benchmark data from the hub."""
    if os.environ.get("LEADSEL_ALLOW_DOWNLOAD") == "1":
        yield
        return
    saved_env = {k: os.environ.get(k) for k in OFFLINE_VARS}
    patches = [("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
               ("datasets.config", "HF_DATASETS_OFFLINE"), ("evaluate.config", "HF_EVALUATE_OFFLINE")]
    saved_attrs = []
    os.environ.update({k: "1" for k in OFFLINE_VARS})
    try:
        for mod, attr in patches:
            m = sys.modules.get(mod)  # modules imported later read the environment themselves
            if m is not None and hasattr(m, attr):
                saved_attrs.append((m, attr, getattr(m, attr)))
                setattr(m, attr, True)
        yield
    finally:
        for m, attr, value in reversed(saved_attrs):
            setattr(m, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _DropPassedModelWarnings(logging.Filter):
    """HFLM warns on every pre-built model that its device/dtype/parallelism arguments are
    ignored: expected here, so not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("`pretrained` model kwarg is not of type `str`",
                                               "Passed an already-initialized model through `pretrained`"))


def split_tasks(tasks: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    parts = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for p in parts:
        for name in str(p).split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    if not out:
        raise ValueError("--harness needs at least one task name (comma-separated)")
    return out


def _include_list(include_path: str | Path | Sequence[str | Path] | None) -> list[str]:
    if include_path is None:
        return []
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    out = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"--harness-include {p}: not a folder (it should hold lm-eval task YAMLs)")
        out.append(str(p.resolve()))
    return out


def _is_yaml_file(name: str) -> bool:
    return Path(name).suffix in (".yaml", ".yml") and Path(name).is_file()


@dataclass
class HarnessTasks:
    """Requested tasks, resolved and with their data loaded (by :func:`prepare_tasks`); for one
    :func:`harness_eval` call (lm-eval sets the few-shot count into the task objects)."""
    names: list[str]
    objects: list  # top-level lm-eval Task / Group objects, in request order
    include_path: list[str]
    builtin_index: bool  # whether lm-eval's own task list was indexed
    manager: Any = None  # the TaskManager (handed to simple_evaluate, which would otherwise index everything)


def _unknown(name: str, tm, include: list[str], builtin: bool = True) -> ValueError:
    import difflib

    close = difflib.get_close_matches(name, tm.all_tasks, n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = " or ".join((["lm-eval's task list"] if builtin else []) + include) or "any task list"
    return ValueError(f"unknown harness task {name!r}: not in {where}{hint}; local tasks: --harness-include DIR "
                      f"with task YAMLs (`lm-eval ls tasks` lists the built-in ones)")


def _hub_error(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionError) or type(e).__name__ in HUB_ERRORS:
            return True
        e = e.__cause__ or e.__context__
    return False


def _load_error(name: str, tm, e: Exception) -> HarnessError:
    entry = tm.task_index.get(name) if hasattr(tm, "task_index") else None
    dataset = (entry.cfg or {}).get("dataset_path") if entry is not None and entry.cfg else None
    if _hub_error(e) or (dataset and dataset not in LOCAL_BUILDERS and isinstance(e, FileNotFoundError)
                         and not Path(str(dataset)).exists()):
        what = f"data set {dataset!r}" if dataset else "data"
        return HarnessError(
            f"harness task {name!r}: its {what} comes from the Hugging Face hub, and the harness runs offline "
            f"(leadsel downloads nothing) with no copy in the local datasets cache. Evaluate a local task instead: "
            f"--harness-include DIR with a task YAML whose dataset_path is json (dataset_kwargs: "
            f"{{data_files: {{test: FILE.jsonl}}}}). ({type(e).__name__}: {e})")
    return HarnessError(f"harness task {name!r} could not be loaded: {type(e).__name__}: {e}")


def _top_level(loaded: dict) -> list:
    """The top-level objects of ``TaskManager.load([one spec])``: the group (or groups) not
    nested in another, and the tasks in no group."""
    children = {c for kids in loaded.get("group_map", {}).values() for c in kids}
    groups = [g for n, g in loaded.get("groups", {}).items() if n not in children]
    inside = {t for g in loaded.get("groups", {}).values() for t in (x.task_name for x in g.get_all_tasks())}
    return groups + [t for n, t in loaded["tasks"].items() if n not in inside]


def prepare_tasks(tasks: str | Sequence[str], include_path=None, *, builtin_index: bool | None = None) -> HarnessTasks:
    """Resolve the task names and load their data (offline), with clear errors for an unknown
    task, a task whose data is on the hub, lm-eval missing. Call before long work to fail early.

    ``builtin_index``: index lm-eval's own task list (slow); ``None``: only when a requested task
    is not found in ``include_path`` (or is not a YAML file path)."""
    names = split_tasks(tasks)
    include = _include_list(include_path)
    _, _, TaskManager = _import_lm_eval()

    def resolvable(tm, name):
        return name in tm.task_index or _is_yaml_file(name)

    with offline():
        tm, builtin = None, False
        if not builtin_index and (include or all(_is_yaml_file(n) for n in names)):
            tm = TaskManager(include_path=include or None, include_defaults=False)
            if not all(resolvable(tm, n) for n in names):
                if builtin_index is False:
                    raise _unknown(next(n for n in names if not resolvable(tm, n)), tm, include, False)
                tm = None
        if tm is None:
            log.info("indexing lm-eval's built-in tasks (14,000 YAML files; seconds)")
            tm, builtin = TaskManager(include_path=include or None), True
        for n in names:
            if not resolvable(tm, n):
                raise _unknown(n, tm, include)
        objects = []
        for n in names:
            try:
                loaded = tm.load([n])
            except KeyError as e:
                if builtin:
                    raise HarnessError(f"harness task {n!r} could not be loaded: {e}") from e
                # a local group naming a built-in task: index lm-eval's own list too
                if builtin_index is False:
                    raise HarnessError(f"harness task {n!r} could not be loaded: {e}") from e
                return prepare_tasks(names, include, builtin_index=True)
            except Exception as e:
                raise _load_error(n, tm, e) from e
            objects.extend(_top_level(loaded))
    return HarnessTasks(names, objects, include, builtin, tm)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            v = v.item()
        except (TypeError, ValueError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _metrics(entry: dict) -> dict:
    """lm-eval's ``{"acc,none": .., "acc_stderr,none": .., "alias": ..}`` -> ``{"acc": .., "acc_stderr": ..}``."""
    out = {}
    for key, value in entry.items():
        if "," not in key:  # alias, name, sample_len
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else key] = _jsonable(value)
    return out


def _model_info(model, lm) -> dict:
    peft = hasattr(model, "peft_config")
    p = next(model.parameters(), None)
    info = {"class": type(model).__name__, "peft": peft,
            "passed_as": "in-memory peft model, adapter active (not merged)" if peft else "in-memory model",
            "dtype": str(p.dtype).removeprefix("torch.") if p is not None else None,
            "max_length": int(lm.max_length), "backend": lm.backend}
    if peft:
        info["adapters"] = sorted(model.peft_config)
    return info


def harness_eval(model, tokenizer, tasks: str | Sequence[str] | HarnessTasks, *, num_fewshot: int | None = None,
                 limit: int | float | None = None, batch_size: int | str = 8, apply_chat_template: bool = False,
                 include_path=None, device: str | None = None, precision: str = "fp32",
                 bootstrap_iters: int = 100000) -> dict:
    """Evaluate ``model`` (in memory; a peft model as it is) on lm-eval ``tasks``; a JSON record of
    the metrics per task and the settings that produced them (see the module docstring).

    ``device``: where to run (the model is moved there); ``None``: where the model already is.
    ``precision``: ``"bf16"`` runs the forward passes under bf16 autocast (fp32 weights, fp32
    log-softmax), as leadsel's own passes do; ``"fp32"`` as the weights are.
    ``tasks`` may be a :class:`HarnessTasks` from :func:`prepare_tasks` (then ``include_path`` is its own).
    """
    import torch

    lm_eval, HFLM, _ = _import_lm_eval()
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be bf16 or fp32, not {precision!r}")
    if num_fewshot is not None and num_fewshot < 0:
        raise ValueError(f"--num-fewshot must be >= 0, not {num_fewshot}")
    if limit is not None and limit <= 0:
        raise ValueError(f"--harness-limit must be > 0, not {limit}")
    if isinstance(batch_size, str) and not batch_size.startswith("auto"):
        batch_size = int(batch_size)
    if isinstance(batch_size, int) and batch_size < 1:
        raise ValueError(f"--harness-batch-size must be >= 1 or auto, not {batch_size}")
    if apply_chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat-template: the tokenizer has no chat template (set encoding.template)")
    prepared = tasks if isinstance(tasks, HarnessTasks) else prepare_tasks(tasks, include_path)

    if device is not None:
        model.to(device)
    was_training = model.training
    hf_logger = logging.getLogger("lm_eval.models.huggingface")
    quiet = _DropPassedModelWarnings()
    hf_logger.addFilter(quiet)
    start = time.perf_counter()
    try:
        with offline():
            bf16 = precision == "bf16"
            # a pre-built model: HFLM takes its device from model.device and ignores device/dtype
            lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                      mixed_precision_dtype=torch.bfloat16 if bf16 else None,
                      softmax_dtype=torch.float32 if bf16 else None)
            results = lm_eval.simple_evaluate(
                model=lm, tasks=prepared.objects, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
                apply_chat_template=apply_chat_template, fewshot_as_multiturn=apply_chat_template,
                log_samples=False, bootstrap_iters=bootstrap_iters, task_manager=prepared.manager)
    except HarnessError:
        raise
    except Exception as e:
        if _hub_error(e):
            raise HarnessError(f"the harness tried to reach the Hugging Face hub, and it runs offline (leadsel "
                               f"downloads nothing): {type(e).__name__}: {e}") from e
        # mostly a task config lm-eval cannot run (e.g. an empty continuation: a loglikelihood task's
        # doc_to_target needs its leading space); LEADSEL_DEBUG=1 shows where
        raise HarnessError(f"lm-eval failed on {', '.join(prepared.names)}: {type(e).__name__}: {e or '(no message)'}"
                           f" (set LEADSEL_DEBUG=1 for the traceback)") from e
    finally:
        hf_logger.removeFilter(quiet)
        model.train(was_training)
    if results is None:
        raise HarnessError("lm-eval returned no results (not the main process?)")

    n_shot, versions = results.get("n-shot", {}), results.get("versions", {})
    n_samples, hib = results.get("n-samples", {}), results.get("higher_is_better", {})
    per_task = {name: {"metrics": _metrics(entry), "n_shot": _jsonable(n_shot.get(name)),
                       "version": _jsonable(versions.get(name)), "n_samples": _jsonable(n_samples.get(name)),
                       "higher_is_better": _jsonable(hib.get(name))}
                for name, entry in results["results"].items()}
    groups = {name: {"metrics": _metrics(entry), "version": _jsonable(versions.get(name)),
                     "subtasks": _jsonable(results.get("group_subtasks", {}).get(name))}
              for name, entry in results.get("groups", {}).items()}
    for name in groups:  # a group's aggregate also shows up in results: keep it once, under groups
        per_task.pop(name, None)
    cfg = results.get("config", {})
    return {
        "lm_eval": lm_eval.__version__,
        "tasks": per_task,
        "groups": groups,
        "requested": prepared.names,
        "num_fewshot": num_fewshot,
        "apply_chat_template": bool(apply_chat_template),
        "fewshot_as_multiturn": bool(apply_chat_template) if apply_chat_template else None,
        "limit": limit,
        "batch_size": batch_size,
        "device": str(lm.device),
        "precision": precision,
        "model": _model_info(model, lm),
        "include_path": prepared.include_path,
        "builtin_tasks_indexed": prepared.builtin_index,
        "bootstrap_iters": bootstrap_iters,
        "seeds": {k: cfg.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
        "offline": os.environ.get("LEADSEL_ALLOW_DOWNLOAD") != "1",
        "seconds": round(time.perf_counter() - start, 3),
    }
