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
        help="RELION STAR of the particles: as the training images, or the raw full-size "
        "particles (same box in Å, larger in pixels; phase flip and Fourier crop are "
        "then applied on the fly, as 'preprocess' did for training).",
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
    workers: int = typer.Option(
        -1, help="Image readers working ahead (-1: 4 on a GPU, none on the CPU)."
    ),
    reader: str = typer.Option(
        "threads",
        help="How the readers work: 'threads' copy each batch once, straight into pinned "
        "memory; 'processes' are a torch DataLoader's worker processes (three copies).",
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
    tta: bool = typer.Option(
        False,
        "--tta/--no-tta",
        help="Test-time augmentation: predict each particle from its 8 copies rotated by "
        "multiples of 90° and mirrored, map the answers back exactly and take their robust "
        "consensus (8× the work). Also writes deephemnmaPoseSpreadDeg, the median angle (°) "
        "between the copies' orientations and the consensus: a per-particle confidence.",
    ),
    tta_turns: int = typer.Option(
        1,
        help="With --tta: also turn each of the 8 copies in-plane by multiples of 90°/N "
        "(2: 16 copies, at 0° and 45°; sinc-interpolated), N× the TTA work.",
    ),
    refine: bool = typer.Option(
        False,
        "--refine/--no-refine",
        help="Hybrid inference: refine each prediction against its image (needs --modes and "
        "--reference; see 'deephemnma refine'). Predictions go to OUT_network.star, the "
        "refinement's chunks to OUT.refine/, the refined estimates to OUT.",
    ),
    modes: Path = typer.Option(None, help="Modes file (.npz), for --refine."),
    reference: Path = typer.Option(None, help="Reference atomic model, for --refine."),
    refine_sizes: str = typer.Option("64,128", help="Refinement boxes, pixels (--refine)."),
    refine_steps: str = typer.Option("15,10", help="Optimizer steps per box (--refine)."),
    refine_workers: int = typer.Option(
        None, help="Refinement worker processes (default: all cores; 1: this process)."
    ),
) -> None:
    """Predict normal-mode amplitudes, orientations and shifts of particles with a network
    from 'deephemnma train'; memory stays bounded for any number of particles. With
    --refine, each prediction is then refined against its image (hybrid inference)."""
    from deephemnma.network.predict import predict

    options = {
        "device": device,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "precision": precision,
        "threads": threads,
        "workers": workers,
        "reader": reader,
        "progress": not quiet,
        "tta": tta,
        "tta_turns": tta_turns,
    }
    if refine:
        _predict_refined(particles, checkpoint, out, modes, reference, options,
                         refine_sizes, refine_steps, refine_workers)  # fmt: skip
        return
    result = predict(particles, checkpoint, out, **options)
    tta_note = f", {result['tta_copies']}-fold TTA" if result["tta"] else ""
    _out.print(
        f"predicted {result['n']} particles in {result['seconds']:.1f} s "
        f"({result['images_per_s']:.0f} images/s, {result['device']}"
        f"{', bf16' if result['bf16'] else ''}{tta_note}; "
        f"set-up {result['setup_seconds']:.1f} s, images {result['compute_seconds']:.1f} s, "
        f"STAR {result['write_seconds']:.1f} s): {result['out']}"
    )


def _predict_refined(
    particles, checkpoint, out, modes, reference, options, sizes, steps, workers
) -> None:
    from deephemnma.align.refine_run import predict_and_refine
    from deephemnma.cli.options import check_device
    from deephemnma.cli.refine import refine_config
    from deephemnma.errors import InputError

    for value, flag in ((modes, "--modes"), (reference, "--reference")):
        if value is None:
            raise InputError("--refine needs the modes and the reference", field=flag)
    import torch

    device = str(options["device"])
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    refine_device = "cuda" if on_gpu else "cpu"
    result = predict_and_refine(
        particles,
        checkpoint,
        out,
        modes,
        reference,
        refine_config(sizes, steps, restarts=6, global_search=True),
        predict_options=options,
        refine_options={
            "workers": workers,
            "device": check_device(refine_device),
            "progress": options["progress"],
        },
    )
    methods = ", ".join(f"{k}: {v}" for k, v in result["refine"]["methods"].items())
    _out.print(
        f"refined {result['refine']['particles']} predictions ({methods}); mean NCC "
        f"{result['refine']['start_score_mean']:.3f} → {result['refine']['score_mean']:.3f}: "
        f"{result['out']}"
    )
