"""The processes of a run under ``accelerate launch`` or ``torchrun``: one process group, and the
few rules that keep N processes computing one result.

* Decisions that read the file system (is the run directory fresh, resumable or complete? is a
  score in the cache? which shards of a pass are done?) are taken on the main process and
  broadcast (:func:`on_main`): ranks never disagree about them, so none skips a collective that
  another runs. An error raised there is raised on every rank.
* Only the main process writes artifacts, checkpoints, the cache and run.json; a rank that reads
  what it wrote waits at a barrier first (:func:`barrier`).
* Work over a pool (loss passes, embeddings, gradient features) is split across ranks by batch or
  shard and gathered in pool order (:func:`gather`).
* Every rank plans each round itself, and the plans are compared (:func:`check_same`): a
  difference stops the run with an error naming the round instead of a hang.

With one process every helper is a plain call. The process group's timeout is ``ddp_timeout``
seconds (a collective that waits longer fails with torch's timeout error). FSDP and DeepSpeed are
refused at start (:func:`refuse_sharded`).
"""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import numpy as np

SUPPORTED = "one device, or data parallel (DDP) over several processes"


def launched_processes() -> int:
    """Processes of the launch this process belongs to (torchrun / accelerate set WORLD_SIZE)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_launch() -> bool:
    """Whether this is the main process of its launch (rank 0; the only process of a plain run)."""
    return os.environ.get("RANK", "0") == "0"


def accelerator_kwargs(cfg) -> dict:
    """Arguments of every Accelerator a run makes: the process group's timeout, and ``cpu=True``
    when several processes are launched on a machine without an accelerator (accelerate would
    otherwise leave each process alone, running the whole job N times)."""
    import torch
    from accelerate.utils import InitProcessGroupKwargs, parse_flag_from_env

    refuse_sharded()
    kwargs = {"kwargs_handlers": [InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.ddp_timeout))]}
    if parse_flag_from_env("ACCELERATE_USE_CPU") or (launched_processes() > 1 and not torch.accelerator.is_available()):
        kwargs["cpu"] = True
    return kwargs


def process_state(cfg):
    """The process group (accelerate's ``PartialState``), made with the settings of
    :func:`accelerator_kwargs` so that every later Accelerator of the run shares it."""
    from accelerate import PartialState

    return PartialState(cpu=accelerator_kwargs(cfg).get("cpu", False), timeout=timedelta(seconds=cfg.ddp_timeout))


def refuse_sharded() -> None:
    """FSDP and DeepSpeed are refused when the launcher's environment asks for them
    (``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``, which accelerate's config files set; leadsel
    passes accelerate no plugin of its own): they shard the trainable parameters, so the dot
    products behind LEAD's ``delta`` and the summed gradient would be per-shard (a silently wrong
    reward), and DeepSpeed steps the optimizer inside ``backward``."""
    from accelerate.utils import parse_flag_from_env

    asked = [name for name, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if parse_flag_from_env(flag)]
    if asked:
        raise RuntimeError(f"{asked[0]} is not supported: leadsel runs on {SUPPORTED}. LEAD reads the "
                           "gradient and the update of every trainable parameter at each optimizer step, which "
                           "sharded training splits across processes; launch without the FSDP/DeepSpeed config "
                           "(e.g. accelerate launch --multi_gpu --num_processes N -m leadsel ...)")


def position(state) -> tuple[int, int]:
    """(this process's index, the number of processes) of ``state`` (an Accelerator or
    PartialState; None: one process)."""
    return getattr(state, "process_index", 0), getattr(state, "num_processes", 1)


def _world(state) -> int:
    return position(state)[1]


def barrier(state) -> None:
    if _world(state) > 1:
        state.wait_for_everyone()


def on_main(state, fn):
    """``fn()`` on the main process; its result (or its error) on every process."""
    if _world(state) == 1:
        return fn()
    import torch.distributed as td

    box = [None]
    if state.is_main_process:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # re-raised on every rank below
            box[0] = ("error", e)
    td.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def gather(state, obj) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if _world(state) == 1:
        return [obj]
    import torch.distributed as td

    out = [None] * _world(state)
    td.all_gather_object(out, obj)
    return out


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(b"none" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def check_same(state, value: str, what: str) -> None:
    """Raise on every process when the processes' ``value`` differ (``what`` names the point)."""
    if _world(state) == 1:
        return
    values = gather(state, value)
    if len(set(values)) > 1:
        ranks = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise RuntimeError(f"{what}: the processes disagree ({ranks}); every rank must compute the same plan "
                           "from the same data (a non-deterministic kernel or a rank-local file?)")
