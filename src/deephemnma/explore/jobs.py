"""Background subprocesses, at most one running per key (a double click starts one job).

Output (stdout and stderr together) goes to a log file; the job's progress is the last line
of that log and its state comes from the process: running, done (exit 0) or failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


@dataclass
class Job:
    key: str
    command: list[str]
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def returncode(self) -> int | None:
        code = self.process.poll()
        if code is not None and self.finished is None:
            self.finished = time.time()
        return code

    @property
    def state(self) -> str:
        code = self.returncode
        return "running" if code is None else ("done" if code == 0 else "failed")

    def tail(self, lines: int = 20, max_bytes: int = 16384) -> list[str]:
        """The last lines of the log (progress bars' carriage returns count as line ends)."""
        try:
            with open(self.log, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - max_bytes))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        parts = [p.strip() for p in re.split(r"[\r\n]+", text)]
        return [p for p in parts if p][-lines:]

    def status(self) -> dict:
        state = self.state
        end = self.finished if self.finished is not None else time.time()
        last = self.tail(1)
        record = {
            "state": state,
            "elapsed_s": round(end - self.started, 1),
            "message": last[0] if last else "",
            "progress": None,
            "returncode": self.process.returncode,
        }
        match = _PERCENT.findall(record["message"])
        if match:
            record["progress"] = min(100.0, float(match[-1]))
        if state == "failed":
            record["log_tail"] = self.tail(20)
        return record


class JobRunner:
    """Starts commands in the background; one running job per key."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(
        self, key: str, command: list[str], log: Path, cwd: Path | None = None
    ) -> tuple[Job, bool]:
        """Start ``command`` unless the job ``key`` is running; returns (job, started)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state == "running":
                return job, False
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as handle:
                process = subprocess.Popen(
                    command,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=cwd,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            job = Job(key=key, command=list(command), log=log, process=process)
            self._jobs[key] = job
            return job, True

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """Terminate running jobs (the server is shutting down)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.process.poll() is None:
                job.process.terminate()
        for job in jobs:
            try:
                job.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                job.process.kill()
