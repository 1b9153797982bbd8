"""Timing helpers shared by the benchmarks: wall and CPU seconds, machine description,
JSON + table output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def timed(record: dict):
    """Fills ``record`` with wall_s and cpu_s (user + system, this process and children)."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    yield record
    record["wall_s"] = time.perf_counter() - wall
    record["cpu_s"] = _cpu_seconds() - cpu


def report(name: str, rows: list[dict], columns: list[str]) -> Path:
    """Write ``bench/results/NAME.json`` and print the rows as a table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    table = Table(title=f"{name} — {machine()['processor']}, {os.cpu_count()} cores")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(
            *[
                f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                for c in columns
            ]
        )
    # Logs and pipes are not 80 columns wide: do not cut the table's columns there.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return path
