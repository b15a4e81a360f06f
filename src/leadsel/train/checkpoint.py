"""Per-round checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory ``<run>/checkpoint/round-000007/`` holding

    trainable.pt   the trainable parameters only (the adapter, or the whole model when fully
                   fine-tuned), by name
    trainer.pt     optimizer and scheduler state, step counters
    rng.pt         python, numpy-global, torch (CPU and the accelerator's device) generator states,
                   one set per process (each rank restores its own)
    state.npz / state.json   the selector's state (arrays in the npz, the rest as JSON), the
                   round log so far, and the pass counts

It is written into a temporary directory, each file fsynced, then renamed into place; only then
does ``latest.json`` (written atomically) point at it, and older checkpoints are removed. A kill at
any moment leaves either the previous complete checkpoint or the new one. Under several processes
only the main process writes (the weights, optimizer and selector are the same on every rank; the
random states are gathered from all), and every rank loads onto its own device.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import dist
from ..utils import atomic_open, atomic_write_json

log = logging.getLogger(__name__)


def _split(obj, path: str, arrays: dict):
    """JSON tree with numpy arrays moved into ``arrays`` (leaves become {"__npz__": key})."""
    if isinstance(obj, np.ndarray):
        arrays[path] = obj
        return {"__npz__": path}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{path}.{k}" if path else str(k), arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__npz__"}:
            return arrays[obj["__npz__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def rng_states(device) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type != "cpu":
        states["device"] = torch.get_device_module(device.type).get_rng_state(device)
    return states


def set_rng_states(states: dict, device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "device" in states and device.type != "cpu":
        torch.get_device_module(device.type).set_rng_state(states["device"], device)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    mine = {n for n, p in params.items() if p.requires_grad}
    if set(state) != mine:
        raise ValueError(f"checkpoint holds {len(state)} trainable tensors, the model has {len(mine)}: "
                         "the model or LoRA settings changed since the checkpoint")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device))


def write_state(d: Path, tree: dict) -> None:
    """``tree`` (plain values and numpy arrays, e.g. a selector's state) as ``d/state.npz`` (the
    arrays) and ``d/state.json`` (the rest), each written atomically."""
    arrays: dict[str, np.ndarray] = {}
    plain = _split(tree, "", arrays)
    with atomic_open(d / "state.npz") as f:
        np.savez(f, **arrays)
    with atomic_open(d / "state.json") as f:
        f.write(json.dumps(plain).encode())


def read_state(d: Path) -> dict:
    """The tree :func:`write_state` wrote into ``d``."""
    with np.load(d / "state.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _join(json.loads((d / "state.json").read_text()), arrays)


class Checkpointer:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "checkpoint"

    def latest(self) -> int | None:
        """Round of the latest complete checkpoint, or None."""
        p = self.dir / "latest.json"
        if not p.is_file():
            return None
        return int(json.loads(p.read_text())["round"])

    def save(self, round_index: int, *, model, trainer, selector_state: dict, extra: dict, accelerator) -> None:
        rngs = dist.gather(accelerator, rng_states(accelerator.device))
        if not accelerator.is_main_process:
            return
        name = f"round-{round_index:06d}"
        tmp = self.dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # each file is serialised straight into its temporary file: no copy of it is built in memory
        writers = {"trainable.pt": lambda f: torch.save(trainable_state(model), f),
                   "trainer.pt": lambda f: torch.save(trainer.state_dict(), f),
                   "rng.pt": lambda f: torch.save({"ranks": rngs}, f)}
        for fname, write in writers.items():
            with atomic_open(tmp / fname) as f:
                write(f)
        write_state(tmp, {"selector": selector_state, "extra": extra})
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_json(self.dir / "latest.json", {"round": round_index, "dir": name})
        for old in self.dir.glob("round-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, *, model, trainer, accelerator) -> tuple[int, dict, dict]:
        """Restore model, trainer and RNGs; return (round, selector state, extra)."""
        meta = dist.on_main(accelerator, lambda: json.loads((self.dir / "latest.json").read_text()))
        d = self.dir / meta["dir"]
        load_trainable_state(model, torch.load(d / "trainable.pt", weights_only=True, map_location="cpu"))
        trainer.load_state_dict(torch.load(d / "trainer.pt", weights_only=False, map_location="cpu"))
        tree = read_state(d)
        rngs = torch.load(d / "rng.pt", weights_only=False, map_location="cpu")
        rngs = rngs["ranks"] if "ranks" in rngs else [rngs]  # one set per rank (older checkpoints: one)
        rank = accelerator.process_index
        if len(rngs) != accelerator.num_processes:
            log.warning("the checkpoint was written by %d processes, this run has %d: rank %d takes rank %d's "
                        "random state (a resumed run then does not repeat the uninterrupted one exactly)",
                        len(rngs), accelerator.num_processes, rank, min(rank, len(rngs) - 1))
        set_rng_states(rngs[min(rank, len(rngs) - 1)], accelerator.device)
        return int(meta["round"]), tree["selector"], tree["extra"]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
