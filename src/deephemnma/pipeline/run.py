"""Run a project's steps in order: skip what is finished and current, resume what was
interrupted, redo what is stale (a setting or input of it, or of a step before it, changed).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_text
from deephemnma.pipeline import state
from deephemnma.pipeline.config import ProjectConfig, to_toml
from deephemnma.pipeline.steps import STEP_NAMES, STEPS, Context, Step, step_settings

RUN_CONFIG = "run_config.toml"  # the configuration of the last run, input paths absolute


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fingerprints(config: ProjectConfig) -> dict[str, str | None]:
    """Each step's current fingerprint (None for a disabled step); chained through ``after``."""
    result: dict[str, str | None] = {}
    for step in STEPS:
        if not step.enabled(config):
            result[step.name] = None
            continue
        inputs = [state.file_identity(p) for p in step.inputs(config)]
        upstream = [result.get(name) or "" for name in step.after]
        result[step.name] = state.fingerprint(
            step.name, step_settings(step, config), inputs, upstream
        )
    return result


@dataclass(frozen=True)
class StepStatus:
    step: str
    state: str  # finished | stale | interrupted | pending | disabled
    seconds: float | None
    finished: float | None


def project_status(root: str | Path, config: ProjectConfig | None = None) -> list[StepStatus]:
    """What has run in ``root``; with ``config``, which finished steps are stale."""
    root = Path(root)
    if config is None:
        config = read_project_config(root)
    current = fingerprints(config)
    rows = []
    for step in STEPS:
        record = state.read_record(root / step.name)
        fp = current[step.name]
        if fp is None:
            rows.append(StepStatus(step.name, "disabled", None, None))
        elif record is None:
            rows.append(StepStatus(step.name, "pending", None, None))
        elif record.fingerprint != fp:
            rows.append(StepStatus(step.name, "stale", record.seconds, record.finished))
        elif record.status != "finished":
            rows.append(StepStatus(step.name, "interrupted", record.seconds, None))
        else:
            rows.append(StepStatus(step.name, "finished", record.seconds, record.finished))
    return rows


def read_project_config(root: Path) -> ProjectConfig:
    """The configuration the project last ran with (``ROOT/run_config.toml``)."""
    from deephemnma.pipeline.config import load_config

    path = Path(root) / RUN_CONFIG
    if not path.exists():
        raise InputError(f"not a deephemnma project (no {RUN_CONFIG})", path=root)
    config = load_config(path)
    return config


def _selected(from_step: str | None, until_step: str | None) -> list[Step]:
    for value, flag in ((from_step, "--from"), (until_step, "--until")):
        if value is not None and value not in STEP_NAMES:
            raise InputError("unknown step", field=flag, expected=" | ".join(STEP_NAMES),
                             found=value)  # fmt: skip
    lo = STEP_NAMES.index(from_step) if from_step else 0
    hi = STEP_NAMES.index(until_step) if until_step else len(STEPS) - 1
    if lo > hi:
        raise InputError("--from comes after --until", field="--from", found=from_step)
    return list(STEPS[lo : hi + 1])


def run_project(
    config: ProjectConfig,
    root: str | Path,
    from_step: str | None = None,
    until_step: str | None = None,
    log=print,
) -> list[StepStatus]:
    """Run the steps ``from_step``..``until_step`` of the project in ``root``.

    ``--from`` reruns that step even when it is finished and current (and hence the steps
    after it, whose inputs it rewrites). The configuration is saved as ``ROOT/run_config.toml``
    (never over the user's own TOML)
    with its input paths made absolute, so ``status`` and later runs see the same inputs.
    """
    from dataclasses import replace

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    absolute = replace(
        config,
        project=replace(
            config.project,
            **{
                key: str(config.path(key))
                for key in ("particles", "reference", "modes_file", "truth")
                if getattr(config.project, key)
            },
        ),
        folder=str(root),
    )
    atomic_write_text(root / RUN_CONFIG, to_toml(absolute))
    ctx = Context(absolute, root)
    current = fingerprints(absolute)
    rerun: set[str] = set()  # steps that ran now: what reads from them must run again
    for step in _selected(from_step, until_step):
        fp = current[step.name]
        folder = root / step.name
        if fp is None:
            log(f"[dim]{step.name}: disabled[/]")
            continue
        record = state.read_record(folder)
        current_record = record is not None and record.fingerprint == fp
        forced = step.name == from_step or bool(rerun.intersection(step.after))
        if current_record and record.status == "finished" and not forced:
            log(f"[dim]{step.name}: up to date ({record.seconds:.0f} s)[/]")
            continue
        resumed = current_record and record.status == "running" and not forced
        if folder.exists() and not resumed:
            # Stale, forced, or debris without a record: start from an empty folder.
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        log(f"[bold]{step.name}[/]: {'resuming' if resumed else 'running'}")
        running = state.started(folder, step.name, fp, record if resumed else None)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        extra = step.run(ctx)
        # CPU time of this process and its finished children (local Dask workers), which
        # unlike wall time × workers does not count time lost to other jobs on the machine.
        extra = {**extra, "cpu_s": cpu_seconds() - cpu0}
        done = state.finished(folder, running, time.perf_counter() - t0, extra)
        rerun.add(step.name)
        log(f"{step.name}: finished in {done.seconds:.1f} s")
    return project_status(root, absolute)
