"""``deephemnma run``, ``status`` and ``benchmark``: the whole workflow in one project folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deephemnma.cli.main import app

_out = Console()
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _keys_epilog() -> str:
    from deephemnma.pipeline.config import keys_help

    return "Every configuration key is also a flag:\n\n" + "\n\n".join(keys_help().splitlines())


@app.command("run", context_settings=_EXTRA, epilog=_keys_epilog())
def run_command(
    ctx: typer.Context,
    config: Path = typer.Argument(
        None, help="Project TOML (one \\[section] per step; see --help below for every key)."
    ),
    project: Path = typer.Option(
        None, "--project", "-p", help="Project folder (default: the TOML's folder)."
    ),
    from_step: str = typer.Option(
        None, "--from", help="Rerun from this step (it and every later step)."
    ),
    until: str = typer.Option(None, "--until", help="Stop after this step."),
    write_config: Path = typer.Option(
        None, help="Write the full configuration (defaults + overrides) as TOML and exit."
    ),
) -> None:
    """NMA → preprocess → Stage 1 on a training subset → Mahalanobis filter → train →
    predict (+ refine) the rest → evaluate (with ground truth) → analyze → reconstruct
    groups → report.

    Each step writes PROJECT/STEP/ with its config.json and step.json; a rerun skips
    finished steps, resumes an interrupted one, and redoes the steps whose settings or
    inputs changed (and everything after them). Keys of the TOML can be overridden as
    --SECTION.KEY VALUE, e.g. --stage1.n_images 2000."""
    from deephemnma.io.atomic import atomic_write_text
    from deephemnma.pipeline import load_config, run_project
    from deephemnma.pipeline.config import to_toml

    settings = load_config(config, list(ctx.args))
    if write_config is not None:
        atomic_write_text(write_config, to_toml(settings))
        _out.print(f"wrote {write_config}")
        return
    root = project or (config.parent if config is not None else Path.cwd())
    statuses = run_project(settings, root, from_step, until, log=_out.print)
    _print_status(statuses, root)


def _print_status(statuses, root) -> None:
    import datetime

    table = Table(title=f"project {root}")
    for column in ("step", "state", "seconds", "finished"):
        table.add_column(column)
    colors = {"finished": "green", "stale": "yellow", "interrupted": "red", "pending": "dim"}
    for s in statuses:
        when = (
            datetime.datetime.fromtimestamp(s.finished).strftime("%Y-%m-%d %H:%M")
            if s.finished
            else ""
        )
        color = colors.get(s.state, "dim")
        seconds = f"{s.seconds:.1f}" if s.seconds is not None else ""
        table.add_row(s.step, f"[{color}]{s.state}[/]", seconds, when)
    _out.print(table)


@app.command("status", context_settings=_EXTRA)
def status_command(
    ctx: typer.Context,
    project: Path = typer.Argument(..., help="Project folder (holds run_config.toml)."),
    config: Path = typer.Option(None, help="A changed TOML: show which steps it would make stale."),
) -> None:
    """What has run in a project, how long each step took, and what is stale."""
    from deephemnma.errors import InputError
    from deephemnma.pipeline import load_config, project_status

    if not Path(project).is_dir():
        raise InputError("project folder not found", path=project)
    settings = None
    if config is not None or ctx.args:
        from deephemnma.pipeline.config import apply, parse_overrides
        from deephemnma.pipeline.run import read_project_config

        settings = load_config(config) if config else read_project_config(Path(project))
        settings = apply(settings, parse_overrides(list(ctx.args)), "command line")
    _print_status(project_status(project, settings), project)


@app.command("benchmark", context_settings=_EXTRA)
def benchmark_command(
    ctx: typer.Context,
    name: str = typer.Argument("paper-ak", help="Benchmark: paper-ak (the paper's §3.1)."),
    scale: str = typer.Option(
        "tiny",
        help="tiny (≤ 10 min on 2 CPU cores: 400 images, 64²), small (5,000 images, 128²; "
        "~1–2 h CPU), paper (70,000 images, 20,000 for Stage 1; GPU for training).",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Project folder (default: benchmark-paper-ak-SCALE)."
    ),
    seed: int = typer.Option(0, help="Seed of the simulated images."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Simulate the paper's adenylate-kinase benchmark, run the whole pipeline, and report
    the paper's Tables 1–4 metrics side by side with the paper's values, plus the compute
    extrapolated to a million images. Extra --SECTION.KEY VALUE flags override the scale's
    settings (see 'deephemnma run --help')."""
    from deephemnma.errors import InputError
    from deephemnma.pipeline.benchmark import format_cost, run_benchmark
    from deephemnma.pipeline.config import parse_overrides

    if name != "paper-ak":
        raise InputError("unknown benchmark", field="name", expected="paper-ak", found=name)
    root = out or Path(f"benchmark-{name}-{scale}")
    record = run_benchmark(
        scale, root, parse_overrides(list(ctx.args)), seed, progress=not quiet, log=_out.print
    )
    # Plain print: the table is wider than a terminal and must not be re-wrapped.
    print((Path(root) / "evaluate" / "table.txt").read_text())
    print(format_cost(record["cost"]))
    _out.print(f"report: {Path(root) / 'report.html'}")
