"""The reconstruct job started from the page: its inputs, its command and its results.

The group is frozen when the job starts: its resolved row indices are written to a one-group
file under ``PROJECT/reconstruct/.explore/`` and ``deephemnma reconstruct`` reads that, so
editing the group while the job runs changes nothing. The command writes
``PROJECT/reconstruct/<group folder>/`` with ``map.mrc``, half maps, ``fsc.csv``,
``fsc.png``, ``slices.png`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deephemnma.groups import Group, GroupSet, folder_name, write_groups

JOB_FILES = ".explore"  # job inputs and logs, inside the reconstruct folder
RESULT_FILES = ("map.mrc", "half1.mrc", "half2.mrc", "fsc.csv", "fsc.png", "slices.png")


@dataclass(frozen=True)
class ReconstructRequest:
    """What one reconstruct job needs (absolute paths)."""

    particles: Path
    out: Path  # the reconstruct folder; results go to out / folder_name(group)
    groups: Path  # a group file holding ``group``
    group: str
    modes: Path | None = None
    size: int | None = None
    # A group the user picked is reconstructed however small; its FSC says what it is worth.
    min_particles: int = 2


CommandFactory = Callable[[ReconstructRequest], list[str]]


def reconstruct_command(request: ReconstructRequest) -> list[str]:
    """``python -m deephemnma reconstruct …`` for ``request``."""
    command = [
        sys.executable,
        "-m",
        "deephemnma",
        "reconstruct",
        str(request.particles),
        "-o",
        str(request.out),
        "--groups",
        str(request.groups),
        "--group",
        request.group,
        "--min-particles",
        str(int(request.min_particles)),
    ]
    if request.modes is not None:
        command += ["--modes", str(request.modes)]
    if request.size is not None:
        command += ["--size", str(int(request.size))]
    return command


def freeze_group(out: Path, name: str, indices: np.ndarray, n_particles: int) -> Path:
    """Write the group's current members as an index group file for the job; returns it."""
    path = out / JOB_FILES / f"{folder_name(name)}.groups.json"
    group = Group(name, indices=np.asarray(indices, dtype=np.int64), source="explore")
    write_groups(path, GroupSet((group,), n_particles=n_particles))
    return path


def log_path(out: Path, name: str) -> Path:
    return out / JOB_FILES / f"{folder_name(name)}.log"


def result_folder(out: Path, name: str) -> Path:
    return out / folder_name(name)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_fsc(path: Path, max_rows: int = 2000) -> dict | None:
    """``fsc.csv`` as {"resolution": [...], "fsc": [...]} (column names case-insensitive)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))[:max_rows]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    if not rows:
        return None
    keys = {k.strip().lower(): k for k in rows[0] if k}
    res_key = next((keys[k] for k in keys if k.startswith("resolution")), None)
    fsc_key = keys.get("fsc")
    if res_key is None or fsc_key is None:
        return None
    out = {"resolution": [], "fsc": [], "resolution_column": res_key}
    for row in rows:
        try:
            out["resolution"].append(_finite(float(row[res_key])))
            out["fsc"].append(_finite(float(row[fsc_key])))
        except (TypeError, ValueError):
            continue
    return out


def read_result(out: Path, name: str, root: Path) -> dict | None:
    """The finished reconstruction of group ``name``, or None when there is none yet.

    Paths in the result are relative to the project ``root`` (the page fetches them through
    the file endpoint).
    """
    folder = result_folder(out, name)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    files = {}
    for file in RESULT_FILES:
        if (folder / file).is_file():
            files[file] = (folder / file).relative_to(root).as_posix()
    keys = ("n_particles", "resolution_fsc0143_A", "resolution_fsc05_A")
    return {
        "folder": folder.relative_to(root).as_posix(),
        "summary": {k: _finite(summary.get(k)) for k in keys if k in summary},
        "files": files,
        "fsc": read_fsc(folder / "fsc.csv"),
    }
