"""``leadsel export``: a finished run's selection as a dataset any trainer reads ("select with
leadsel, train with your stack").

    jsonl     selected.jsonl as it is: the distinct samples trained, in their input schema
    parquet   one row per selected sample: id, source, messages ([{role, content}], the
              conversational shape TRL's SFTTrainer reads), times_used, first_round
    hf        the same columns as a ``datasets`` directory (``datasets.load_from_disk``)

The rows are in pool order. ``times_used`` says how often the run trained the sample (LEAD and the
peers train some more than once) and ``first_round`` when it first did. The output appears whole
or not at all; an existing one is replaced only with ``overwrite``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .data.formats import detect_format, to_messages
from .data.load import write_records
from .data.readers import Source, read_entries
from .data.records import DataError
from .utils import atomic_open

FORMATS = ("jsonl", "parquet", "hf")


def selected_rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(the records of selected.jsonl, one row of id/source/messages/times_used/first_round each)."""
    man = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if man.get("status") != "complete":
        raise ValueError(f"{run_dir} is not a finished run (status {man.get('status')!r}): finish or resume it "
                         "first (leadsel run CONFIG --resume)")
    path = run_dir / "selected.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run directory is incomplete")
    records = []
    for _, line_no, rec in read_entries(Source(path, "jsonl", "selected")):
        if isinstance(rec, DataError):
            raise rec
        records.append((line_no, rec))
    import pyarrow.parquet as pq

    cols = pq.read_table(run_dir / "scores.parquet", columns=["id", "source", "times_used", "first_round"]).to_pydict()
    used = np.flatnonzero(np.asarray(cols["times_used"]) > 0)   # selected.jsonl holds these, in this order
    if len(used) != len(records):
        raise ValueError(f"{path} has {len(records)} records and scores.parquet {len(used)} trained samples: "
                         "the run directory is inconsistent")
    forced = man["config"]["data"]["format"]
    rows = []
    for (line_no, rec), i in zip(records, used.tolist()):
        fmt = forced if forced != "auto" else detect_format(rec, str(path), line_no)
        rows.append({"id": cols["id"][i], "source": cols["source"][i],
                     "messages": to_messages(rec, fmt, str(path), line_no),
                     "times_used": int(cols["times_used"][i]), "first_round": int(cols["first_round"][i])})
    return [r for _, r in records], rows


def export_run(run_dir: str | Path, to: str, out: str | Path, overwrite: bool = False) -> dict:
    """Write ``run_dir``'s selection to ``out`` as ``to`` (see the module docstring); returns what was written."""
    if to not in FORMATS:
        raise ValueError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: choose another path or pass --overwrite")
    records, rows = selected_rows(run_dir)
    if to == "jsonl":
        write_records(out, records, escape_line_breaks=False)
    elif to == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_open(out) as f:
            pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), f)
    else:
        import datasets

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {"run_dir": str(run_dir), "to": to, "path": str(out), "samples": len(rows),
            "samples_trained": int(sum(r["times_used"] for r in rows))}


def _schema():
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.list_(turn)),
                      ("times_used", pa.int32()), ("first_round", pa.int32())])
