"""``deephemnma preprocess``: phase flip, Fourier-crop downsampling, normalization."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("preprocess")
def preprocess(
    particles: Path = typer.Argument(..., help="RELION STAR file of the particles."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (new stacks + particles.star; a rerun resumes)."
    ),
    size: int = typer.Option(None, help="Output box in pixels (even). Paper: 128 (from 256)."),
    pixel_size: float = typer.Option(
        None, help="Output pixel size in Å instead of --size (rounded to an even box). Paper: 0.65."
    ),
    phase_flip: bool = typer.Option(
        True,
        "--phase-flip/--no-phase-flip",
        help="Multiply each image's spectrum by sign(CTF) "
        "(skipped if the STAR says the data are already flipped).",
    ),
    normalize: bool = typer.Option(
        False,
        "--normalize/--no-normalize",
        help="RELION normalization: background (outside a circle "
        "of 0.75 × half box) mean 0, std 1.",
    ),
    chunk_size: int = typer.Option(1000, help="Images per output MRCS stack."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Phase-flip and downsample particles (antialiased: Fourier cropping, so the low-pass
    cutoff is the new Nyquist, 2 × output pixel size). Shifts stay in Å."""
    from deephemnma.io.star import common_image_size_px, common_pixel_size_A, read_particles
    from deephemnma.preprocess import PreprocessConfig, preprocess_dataset, target_size

    table = read_particles(particles)
    out_size = target_size(
        common_image_size_px(table), common_pixel_size_A(table), size, pixel_size
    )
    config = PreprocessConfig(
        out_size=out_size, phase_flip=phase_flip, normalize=normalize, chunk_size=chunk_size
    )
    star = preprocess_dataset(particles, out, config, progress=not quiet)
    _out.print(f"wrote {len(table)} particles of {out_size}² px: {star}")
