"""``deephemnma predict``: a trained network's amplitudes, angles and shifts for every particle."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("predict")
def predict_command(
    particles: Path = typer.Option(
        ...,
        "--particles",
        help="RELION STAR of the particles (same box in pixels and pixel size in Å as the "
        "training images).",
    ),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Checkpoint file, or a training folder (uses its best.pt)."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output STAR: the input with rlnAngleRot/Tilt/Psi (°), rlnOriginX/YAngst (Å) "
        "and deephemnmaAmplitudeNN replaced by the predictions.",
    ),
    device: str = typer.Option("auto", help="cpu | cuda | cuda:N | auto."),
    batch_size: int = typer.Option(256, help="Images per forward pass."),
    chunk_size: int = typer.Option(
        16384, help="Particles per resumable chunk (bounds the memory; a rerun skips done chunks)."
    ),
    precision: str = typer.Option(
        "auto", help="auto (bf16 on CPUs with AMX/AVX-512 BF16 and on CUDA) | bf16 | fp32."
    ),
    threads: int = typer.Option(None, help="CPU threads for torch (default: torch's choice)."),
    workers: int = typer.Option(-1, help="Image-reading processes (-1: auto, 0 on CPU)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Predict normal-mode amplitudes, orientations and shifts of particles with a network
    from 'deephemnma train'; memory stays bounded for any number of particles."""
    from deephemnma.network.predict import predict

    result = predict(
        particles,
        checkpoint,
        out,
        device=device,
        batch_size=batch_size,
        chunk_size=chunk_size,
        precision=precision,
        threads=threads,
        workers=workers,
        progress=not quiet,
    )
    _out.print(
        f"predicted {result['n']} particles in {result['seconds']:.1f} s "
        f"({result['images_per_s']:.0f} images/s, {result['device']}"
        f"{', bf16' if result['bf16'] else ''}): {result['out']}"
    )
