"""``deephemnma demo``: the end-to-end demonstration on the embedded adenylate-kinase data
(the paper's benchmark at its tiny scale: 'deephemnma benchmark paper-ak --scale tiny')."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Project folder."),
    seed: int = typer.Option(0, help="Seed of the simulated images."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Simulate 400 particles of the paper's benchmark (4AKE chain A, modes 7–9, helical
    trajectory, 256² at 0.325 Å, CTF, SNR 0.1) and run the whole pipeline on them: normal
    modes, preprocessing to 64², Stage 1 on 200, filter, a network trained for a few epochs
    (on CPU far too short to learn orientations: the refinement recovers them), prediction
    with refinement, evaluation against the ground truth, analysis, reconstruction of the
    groups and the HTML report (OUT/report.html). A few minutes on 2 CPU cores."""
    from deephemnma.pipeline.benchmark import format_cost, run_benchmark

    record = run_benchmark("tiny", out, None, seed, progress=not quiet, log=_out.print)
    print((Path(out) / "evaluate" / "table.txt").read_text())
    print(format_cost(record["cost"]))
    _out.print(f"report: {Path(out) / 'report.html'}")
