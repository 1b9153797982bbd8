"""``deephemnma align`` (Stage 1) and ``deephemnma filter`` (outlier removal)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app
from deephemnma.errors import InputError

_out = Console()


def _int_tuple(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            "not a list of integers", field=name, expected="e.g. 32,64,128", found=text
        ) from None


@app.command("align")
def align(
    particles: Path = typer.Option(
        ...,
        help="RELION STAR of the particles (phase-flipped "
        "or raw; preprocessed to e.g. 128² at 0.65 Å).",
    ),
    modes: Path = typer.Option(
        ..., help="Modes file from 'deephemnma nma' (or the modes.npz that 'simulate' writes)."
    ),
    reference: Path = typer.Option(
        ..., help="Reference atomic model (PDB/mmCIF) the modes were computed on."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun to resume)."),
    mode_numbers: str = typer.Option(
        None,
        "--mode-numbers",
        help="Modes to use, e.g. 7-9 (default: every non-rigid mode in the file).",
    ),
    center: bool = typer.Option(
        True,
        "--center/--no-center",
        help="Put the reference's "
        "center of mass at the box center (as 'simulate' does). With "
        "--no-center, coordinates are taken relative to the box "
        "center as they are.",
    ),
    use_ctf: bool = typer.Option(
        True,
        "--ctf/--no-ctf",
        help="Filter projections by the "
        "CTF (|CTF| for phase-flipped data). --no-ctf for data "
        "without CTF.",
    ),
    amplitude_range: float = typer.Option(
        200.0,
        help="Largest |amplitude| expected "
        "(dimensionless; 200 ≈ 5 Å RMS for 1,656 atoms). "
        "Sets the library's conformation grid.",
    ),
    library_spacing: float = typer.Option(
        12.0, help="Orientation spacing of the global search library, degrees."
    ),
    search_size: int = typer.Option(32, help="Box of the global search, pixels."),
    library_components: int = typer.Option(
        256,
        help="Principal components the search library is compressed to (0: none, every "
        "pixel of the search box). Fewer make the search and the library file smaller.",
    ),
    candidates: int = typer.Option(6, help="Library matches refined per image."),
    max_shift: float = typer.Option(
        3.0,
        help="Origins tried by the global search, Å (whole search pixels within this "
        "radius; refinement can move further). Raise it for particles far off center.",
    ),
    candidate_steps: int = typer.Option(
        8,
        help="Steps of the first level spent on every candidate before only the best "
        "one of each image continues.",
    ),
    sizes: str = typer.Option("32,64,128", help="Refinement boxes, pixels, coarse to fine."),
    steps: str = typer.Option("20,10,10", help="Optimizer steps at each refinement box."),
    chunk_size: int = typer.Option(256, help="Particles per chunk (unit of resumption)."),
    scheduler: str = typer.Option(
        None, help="Dask scheduler address tcp://HOST:PORT; default: a local cluster."
    ),
    workers: int = typer.Option(
        None, help="Local worker processes (default: all cores; 1 runs in this process)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    batch_size: int = typer.Option(
        None,
        help="Particles processed together (default: the CPU's 16–32; 256 on a GPU, where "
        "larger batches fill the device).",
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Stage 1: estimate normal-mode amplitudes, Euler angles (°) and shifts (Å) of every
    particle by elastic and rigid alignment of the reference (global search over a
    projection library, then joint gradient refinement, coarse to fine)."""
    from deephemnma.align.figures import summary_figure
    from deephemnma.align.run import align_dataset
    from deephemnma.align.stage1 import AlignConfig
    from deephemnma.cli.options import check_device, parse_mode_list
    from deephemnma.io.star import read_particles

    size_list, step_list = _int_tuple(sizes, "--sizes"), _int_tuple(steps, "--steps")
    if len(size_list) != len(step_list) or not size_list:
        raise InputError(
            "--sizes and --steps need the same number of entries",
            field="--steps",
            expected=f"{len(size_list)} values",
            found=steps,
        )
    rates = [1.0, 0.3, 0.1, 0.1, 0.1]  # Adam peak rates per level (AlignConfig)
    lrs = tuple(rates[: len(size_list)])
    config = AlignConfig(
        search_size=search_size,
        library_spacing_deg=library_spacing,
        candidates=candidates,
        candidate_steps=candidate_steps,
        sizes=size_list,
        steps=step_list,
        lrs=lrs,
        amplitude_range=amplitude_range,
        max_shift_A=max_shift,
        library_components=library_components,
    )
    numbers = None if mode_numbers is None else tuple(parse_mode_list(mode_numbers))
    star = align_dataset(
        particles,
        modes,
        reference,
        out,
        numbers,
        config,
        chunk_size=chunk_size,
        scheduler=scheduler,
        workers=workers,
        use_ctf=use_ctf,
        center=center,
        device=check_device(device),
        progress=not quiet,
        batch_size=batch_size,
    )
    figure = summary_figure(read_particles(star), Path(out) / "summary.png")
    _out.print(f"wrote {star} and {figure}")


@app.command("filter")
def filter_particles(
    particles: Path = typer.Argument(..., help="STAR with amplitudes (e.g. 'align' output)."),
    out: Path = typer.Option(..., "--out", "-o", help="STAR of the kept particles."),
    mahalanobis: float = typer.Option(
        None,
        help="Keep particles whose amplitudes lie within "
        "this Mahalanobis distance of the mean (paper: 3.2).",
    ),
    min_score: float = typer.Option(
        None, help="Keep particles with _deephemnmaScore ≥ this (NCC, -1..1)."
    ),
) -> None:
    """Remove outliers: amplitudes far from the majority (Mahalanobis) and/or low scores.
    Writes the kept subset and a figure beside it."""
    import numpy as np

    from deephemnma.align.figures import filter_figure
    from deephemnma.align.filter import keep_mask, mahalanobis_distances
    from deephemnma.io.star import amplitudes, read_particles, select, write_particles

    if mahalanobis is None and min_score is None:
        raise InputError(
            "nothing to filter on",
            field="--mahalanobis",
            expected="--mahalanobis and/or --min-score",
        )
    table = read_particles(particles)
    _, amps = amplitudes(table)
    if mahalanobis is not None and amps.shape[1] == 0:
        raise InputError(
            "no _deephemnmaAmplitudeNN columns",
            path=particles,
            field="deephemnmaAmplitudeNN",
            expected="amplitudes from 'align'",
        )
    score = None
    if min_score is not None:
        if "deephemnmaScore" not in table.particles:
            raise InputError("no score column", path=particles, field="deephemnmaScore")
        score = table.particles["deephemnmaScore"].to_numpy()
    keep = keep_mask(amps, score, mahalanobis, min_score)
    write_particles(out, select(table, np.flatnonzero(keep)))
    distances = mahalanobis_distances(amps) if amps.shape[1] else np.zeros(len(table))
    figure = filter_figure(amps, distances, keep, mahalanobis, Path(out).with_suffix(".png"))
    _out.print(f"kept {int(keep.sum())} of {len(keep)} particles: {out} ({figure})")
