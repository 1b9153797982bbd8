"""``deephemnma report``: one self-contained HTML page summarizing a project folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("report")
def report_command(
    project: Path = typer.Argument(
        ...,
        help="Project folder (nma/, stage1/, filter/, train/, predict/, analyze/, "
        "reconstruct/, evaluate/; any subset).",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="HTML file to write (default PROJECT/report.html)."
    ),
    mode_movies: int = typer.Option(
        3,
        "--mode-movies",
        min=0,
        help="Flexible modes animated in the report when nma/ holds no GIF (0: none; about "
        "2 s each on 2 CPU cores).",
    ),
    movie_rms: float = typer.Option(
        3.0, "--movie-rms", min=0.1, help="Mode movies: ± RMS displacement in Å."
    ),
    movie_size: int = typer.Option(
        96, "--movie-size", min=16, max=512, help="Mode movies: pixels per view."
    ),
) -> None:
    """Summarize every stage that has run in PROJECT as one HTML file (figures embedded,
    no network needed): normal modes, Stage-1 alignment, training curves, predictions, the
    conformational space with groups and movies, reconstructions with FSC, and the paper's
    Tables 1–4 next to our evaluation when ground truth exists. Stages without outputs are
    listed as not run; unreadable files become notes in the page."""
    from deephemnma.report import ReportOptions, collect_report, default_path, write_html

    options = ReportOptions(mode_movies=mode_movies, movie_rms_A=movie_rms, movie_size=movie_size)
    report = collect_report(project, options)
    path = write_html(report, out or default_path(project))
    ran = report.ran
    if not ran:
        _out.print(f"[yellow]nothing has run in {project} yet[/]; wrote an empty report: {path}")
        return
    n_notes = sum(len(s.notes) + sum(len(c.notes) for c in s.subsections) for s in ran)
    names = ", ".join(s.key for s in ran)
    size_mb = path.stat().st_size / 1e6
    _out.print(
        f"wrote {path} ({size_mb:.1f} MB): {names}" + (f"; {n_notes} note(s)" if n_notes else "")
    )
