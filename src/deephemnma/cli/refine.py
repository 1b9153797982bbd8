"""``deephemnma refine``: refine starting estimates (network predictions, or any poses)
against the images — hybrid inference."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


def refine_config(
    sizes: str, steps: str, restarts: int, global_search: bool, min_score: float | None = None
):
    """A RefineConfig from the CLI's comma-separated sizes and steps."""
    from deephemnma.align.hybrid import RefineConfig
    from deephemnma.cli.align import _int_tuple
    from deephemnma.errors import InputError

    size_list, step_list = _int_tuple(sizes, "--sizes"), _int_tuple(steps, "--steps")
    if len(size_list) != len(step_list) or not size_list:
        raise InputError(
            "--sizes and --steps need the same number of entries",
            field="--steps",
            expected=f"{len(size_list)} values",
            found=steps,
        )
    rates = [0.3, 0.1, 0.1, 0.1]  # Adam peak rates per level, coarse to fine
    return RefineConfig(
        sizes=size_list,
        steps=step_list,
        lrs=tuple(rates[: len(size_list)]),
        restarts=restarts,
        global_search=global_search,
        min_score=min_score,
    )


def min_score_from(star: Path | None) -> float | None:
    """The failure floor from a STAR of trusted fits (Stage 1's deephemnmaScore)."""
    if star is None:
        return None
    from deephemnma.align.hybrid import score_floor
    from deephemnma.errors import InputError
    from deephemnma.io.star import read_particles

    table = read_particles(star)
    if "deephemnmaScore" not in table.particles:
        raise InputError("no scores to set the failure floor from", path=star,
                         field="deephemnmaScore", expected="a Stage-1 ('align') STAR")  # fmt: skip
    return score_floor(table.particles["deephemnmaScore"].to_numpy())


@app.command("refine")
def refine(
    particles: Path = typer.Option(
        ...,
        help="RELION STAR with the starting estimates (e.g. 'predict' output: rlnAngleRot/"
        "Tilt/Psi in °, rlnOriginX/YAngst in Å, deephemnmaAmplitudeNN; missing amplitudes "
        "start at 0) and the images (same as for 'align').",
    ),
    modes: Path = typer.Option(..., help="Modes file (.npz) from 'deephemnma nma'."),
    reference: Path = typer.Option(
        ..., help="Reference atomic model (PDB/mmCIF) the modes were computed on."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun to resume)."),
    mode_numbers: str = typer.Option(
        None, "--mode-numbers", help="Modes, e.g. 7-9 (default: every non-rigid mode)."
    ),
    sizes: str = typer.Option("64,128", help="Refinement boxes, pixels, coarse to fine."),
    steps: str = typer.Option("15,10", help="Optimizer steps at each box."),
    restarts: int = typer.Option(
        6, help="Local restarts (15° rotations about the image axes) for low-score particles."
    ),
    global_search: bool = typer.Option(
        True,
        "--global-search/--no-global-search",
        help="Last resort for particles still low after the restarts: Stage 1's search.",
    ),
    min_score: float = typer.Option(
        None,
        help="NCC below which a particle counts as failed (restarts, then global search), "
        "besides being a low outlier of its chunk. Scores are at the finest box.",
    ),
    score_reference: Path = typer.Option(
        None,
        help="Stage-1 STAR ('align' output, same boxes) whose scores set --min-score: "
        "median − 4·1.4826·MAD of its deephemnmaScore.",
    ),
    center: bool = typer.Option(
        True, "--center/--no-center", help="Center the reference as 'align' does."
    ),
    use_ctf: bool = typer.Option(True, "--ctf/--no-ctf", help="Filter projections by the CTF."),
    chunk_size: int = typer.Option(256, help="Particles per chunk (unit of resumption)."),
    scheduler: str = typer.Option(None, help="Dask scheduler address tcp://HOST:PORT."),
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
    """Refine amplitudes, orientations and shifts from starting estimates, coarse to fine,
    with Stage 1's similarity; each particle keeps the better (by NCC) of its start and the
    refinement. The starting values go to deephemnmaStart… columns, the scores to
    deephemnmaScore / deephemnmaStartScore."""
    from deephemnma.align.figures import summary_figure
    from deephemnma.align.refine_run import refine_dataset
    from deephemnma.cli.options import check_device, parse_mode_list
    from deephemnma.io.star import read_particles

    if min_score is None:
        min_score = min_score_from(score_reference)
    config = refine_config(sizes, steps, restarts, global_search, min_score)
    numbers = None if mode_numbers is None else tuple(parse_mode_list(mode_numbers))
    star = refine_dataset(
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
