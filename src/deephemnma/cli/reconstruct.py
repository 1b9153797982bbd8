"""``deephemnma reconstruct``: per-group 3D maps by direct Fourier inversion, half maps, FSC."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from deephemnma.cli.main import app
from deephemnma.errors import InputError

_out = Console()
_err = Console(stderr=True)


@app.command("reconstruct")
def reconstruct_command(
    particles: Path = typer.Argument(
        ..., help="RELION STAR with the poses (rlnAngleRot/Tilt/Psi in °, rlnOriginX/YAngst)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: one subfolder per group and summary.json."
    ),
    groups: Path = typer.Option(
        None, "--groups", help="Group file (groups.json from 'analyze' or the explorer)."
    ),
    group: list[str] = typer.Option(
        None, "--group", help="Reconstruct only this group (repeat for several)."
    ),
    images: Path = typer.Option(
        None,
        "--images",
        help="STAR with the same particles in the same order whose images and CTF to use "
        "(e.g. the original 256² images when the poses were estimated at 128²).",
    ),
    size: int = typer.Option(
        None,
        "--size",
        help="Map box in voxels (even). Default: the images' box. Another size resamples the "
        "images in Fourier space over the same field of view (voxel = pixel × box / size).",
    ),
    modes: Path = typer.Option(
        None,
        "--modes",
        help="Modes file (.npz): adds the FSC against the map of each group's centroid model "
        "(mean amplitudes of the group applied to the file's reference).",
    ),
    space: Path = typer.Option(
        None,
        "--space",
        help="Reduced-space coordinates (.npz, key 'coords') for polygon groups; default "
        "space.npz next to the group file.",
    ),
    min_particles: int = typer.Option(
        100, "--min-particles", help="Skip (with a warning) groups with fewer particles."
    ),
    amplitude_suffix: str = typer.Option(
        "", help="Column suffix of the amplitudes used for the centroid model."
    ),
    pad: int = typer.Option(
        2, help="Oversampling of the 3D Fourier grid (1 = fastest, 2 = RELION's default)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(0, help="Seed of the random half sets."),
    batch_size: int = typer.Option(128, help="Images read and inserted at a time."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Per group: random half sets → half maps → FSC (0.143 and 0.5 in Å) → Wiener-filtered map,
    by direct Fourier inversion with CTF correction (phase-flipped images use |CTF|). Writes
    OUT/GROUP/{map,half1,half2}.mrc, fsc.csv, fsc.png, slices.png, summary.json and
    OUT/summary.json."""
    from deephemnma.reconstruct.group import ReconstructionSettings, expected_memory_GB
    from deephemnma.reconstruct.run import run_reconstruct

    if device not in ("cpu", "cuda"):
        raise InputError("unknown device", field="--device", expected="cpu or cuda", found=device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("CUDA is not available here", field="--device", found=device)
    if size is not None and (size < 8 or size % 2):
        raise InputError(
            "the map box must be even", field="--size", expected="even ≥ 8", found=str(size)
        )
    if min_particles < 2:
        raise InputError(
            "half sets need particles",
            field="--min-particles",
            expected="≥ 2",
            found=str(min_particles),
        )
    settings = ReconstructionSettings(
        box=size, pad=pad, batch_size=batch_size, seed=seed, device=device
    )
    settings.validate()
    if size is not None and expected_memory_GB(size, pad) > 8:
        _err.print(
            f"note: a {size}³ map at pad {pad} needs "
            f"{expected_memory_GB(size, pad):.1f} GB for its sums"
        )
    record = run_reconstruct(
        particles,
        out,
        settings,
        groups_file=groups,
        group_names=group or (),
        images=images,
        modes=modes,
        space_file=space,
        min_particles=min_particles,
        amplitude_suffix=amplitude_suffix,
        progress=not quiet,
        warn=lambda text: _err.print(
            f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True
        ),
    )
    for g in record["groups"]:
        line = (
            f"{g['name']}: {g['n_particles']} particles, FSC 0.143 "
            f"{g['resolution_fsc0143_A']:.2f} Å, 0.5 {g['resolution_fsc05_A']:.2f} Å"
        )
        if "resolution_model_fsc05_A" in g:
            line += (
                f"; vs model 0.143 {g['resolution_model_fsc0143_A']:.2f} Å, "
                f"0.5 {g['resolution_model_fsc05_A']:.2f} Å"
            )
        _out.print(line + f"  ({g['timing_s']['reconstruction']:.1f} s)", highlight=False)
    _out.print(f"wrote {out / 'summary.json'}")
