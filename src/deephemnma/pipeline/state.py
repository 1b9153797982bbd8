"""What has run in a project: one ``step.json`` per step folder.

A step's *fingerprint* hashes its own settings, the identity of its input files (path, size,
modification time) and the fingerprints of the steps it reads from; so changing a setting or
an input of one step changes the fingerprint of that step and of every step after it, which
is how ``run`` knows what is stale. ``step.json`` records the fingerprint, the status
(``running`` or ``finished``), when it started and finished, and the seconds it took.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from deephemnma.io.atomic import atomic_write_text

STEP_FILE = "step.json"


def file_identity(path: str | os.PathLike | None) -> list | None:
    """(resolved path, size, mtime in ns) of a file; None for no file."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def fingerprint(step: str, settings: dict, inputs: list, upstream: list[str]) -> str:
    """A short hash of everything a step's result depends on."""
    text = json.dumps(
        {"step": step, "settings": settings, "inputs": inputs, "upstream": upstream},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StepRecord:
    step: str
    fingerprint: str
    status: str  # "running" | "finished"
    started: float
    finished: float | None = None
    seconds: float | None = None
    extra: dict | None = None


def read_record(folder: Path) -> StepRecord | None:
    path = Path(folder) / STEP_FILE
    try:
        data = json.loads(path.read_text())
        return StepRecord(
            data["step"],
            data["fingerprint"],
            data["status"],
            data["started"],
            data.get("finished"),
            data.get("seconds"),
            data.get("extra"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(folder: Path, record: StepRecord) -> None:
    data = {
        "step": record.step,
        "fingerprint": record.fingerprint,
        "status": record.status,
        "started": record.started,
        "finished": record.finished,
        "seconds": record.seconds,
        "extra": record.extra or {},
    }
    atomic_write_text(Path(folder) / STEP_FILE, json.dumps(data, indent=2) + "\n")


def started(folder: Path, step: str, fp: str, previous: StepRecord | None) -> StepRecord:
    """Mark a step running (keeping the seconds already spent when it resumes)."""
    spent = previous.seconds if previous and previous.fingerprint == fp else None
    record = StepRecord(step, fp, "running", time.time(), None, spent)
    write_record(folder, record)
    return record


def finished(folder: Path, record: StepRecord, seconds: float, extra: dict) -> StepRecord:
    total = seconds + (record.seconds or 0.0)
    done = StepRecord(record.step, record.fingerprint, "finished", record.started,
                      time.time(), total, extra)  # fmt: skip
    write_record(folder, done)
    return done
