"""``deephemnma demo``: the end-to-end demonstration on embedded adenylate-kinase data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder."),
    n_images: int = typer.Option(
        64, "--n-images", "-n", help="Particles to simulate (256² at 0.325 Å, paper-ak)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Simulate paper-ak particles (4AKE, modes 7-9, SNR 0.1, CTF), phase flip and
    downsample them to 128² at 0.65 Å, and draw a montage with their ground truth."""
    from deephemnma.demo import run_demo

    paths = run_demo(out, n_images=n_images, seed=seed, progress=not quiet)
    for name, path in paths.items():
        _out.print(f"{name:>13}: {path}")
