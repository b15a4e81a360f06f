"""The run manifest, ``run.json``: what ran, with what, how long each stage took, what was
skipped, and whether the run is complete. Rewritten atomically after every change."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, package_versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    def __init__(self, run_dir: str | Path, config: dict, seed: int, method: str, resume: bool = False,
                 record: bool = True):
        """``resume``: continue the manifest already in ``run_dir`` (stage seconds add up).
        ``record=False``: keep it in memory only (a job that must not touch the run's manifest)."""
        self.path = Path(run_dir) / "run.json"
        self.record = record
        self._ticking = None  # (name, seconds()) of the stage in progress
        if resume and record and self.path.is_file():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            self.data["status"] = "incomplete"
            self.data.setdefault("resumed", []).append(_now())
        else:
            self.data = {
                "status": "incomplete", "method": method, "seed": seed, "started": _now(), "finished": None,
                "versions": package_versions(), "config": config, "stages": {}, "data": {}, "passes": {},
            }
        self.save()

    def save(self) -> None:
        if self.record:
            atomic_write_json(self.path, self.data)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def update(self, key: str, **values: Any) -> None:
        self.data.setdefault(key, {}).update(values)
        self.save()

    @contextmanager
    def stage(self, name: str):
        """Times a stage; a stage that raises is recorded as failed with its error."""
        t0 = time.perf_counter()
        before = self.data["stages"].get(name, {}).get("seconds", 0.0)  # an earlier attempt's (resume)
        self.data["stages"][name] = {"status": "running", "started": _now()}
        self.save()

        def seconds() -> float:
            return round(before + time.perf_counter() - t0, 3)

        self._ticking = (name, seconds)
        try:
            yield
        except BaseException as e:
            self.data["stages"][name].update(status="failed", error=f"{type(e).__name__}: {e}", seconds=seconds())
            self.save()
            raise
        self.data["stages"][name].update(status="done", seconds=seconds())
        self._ticking = None
        self.save()

    def tick(self) -> None:
        """Record the running stage's seconds so far (so a killed run keeps the time it spent)."""
        if self._ticking:
            name, seconds = self._ticking
            self.data["stages"][name]["seconds"] = seconds()
            self.save()

    def complete(self) -> None:
        self.data.update(status="complete", finished=_now())
        self.save()
