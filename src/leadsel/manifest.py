"""The run manifest, ``run.json``: what ran, with what, how long each stage took, what was
skipped, and whether the run is complete. Rewritten atomically after every change."""
from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, package_versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    def __init__(self, run_dir: str | Path, config: dict, seed: int, method: str):
        self.path = Path(run_dir) / "run.json"
        self.data: dict[str, Any] = {
            "status": "incomplete", "method": method, "seed": seed, "started": _now(), "finished": None,
            "versions": package_versions(), "config": config, "stages": {}, "data": {}, "passes": {},
        }
        self.save()

    def save(self) -> None:
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
        self.data["stages"][name] = {"status": "running", "started": _now()}
        self.save()
        try:
            yield
        except BaseException as e:
            self.data["stages"][name].update(status="failed", error=f"{type(e).__name__}: {e}",
                                             seconds=round(time.perf_counter() - t0, 3))
            self.save()
            raise
        self.data["stages"][name].update(status="done", seconds=round(time.perf_counter() - t0, 3))
        self.save()

    def complete(self) -> None:
        self.data.update(status="complete", finished=_now())
        self.save()
