"""``deephemnma export``: groups or particle ids → RELION / cryoSPARC STAR files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("export")
def export_command(
    particles: Path = typer.Argument(
        ..., help="The analyzed particle STAR (the rows the group indices refer to)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: one GROUP.star per group, export.json."
    ),
    groups: Path = typer.Option(
        None, "--groups", help="Group file (groups.json from analyze or the explorer)."
    ),
    group: list[str] = typer.Option(
        None, "--group", help="Group to export (repeat the option; default: every group)."
    ),
    indices: Path = typer.Option(
        None, "--indices", help="Text file of 0-based particle rows (one more group)."
    ),
    images: Path = typer.Option(
        None,
        "--images",
        help="Original full-size STAR, in the same row order as PARTICLES: image names, CTF "
        "and optics (pixel size in Å, box in pixels) are taken from it; poses (°, Å) and "
        "amplitudes from PARTICLES.",
    ),
    fmt: str = typer.Option(
        "relion",
        "--format",
        help="relion (RELION 3.1 STAR, origins in Å) | cryosparc (RELION 3.0 single table, "
        "absolute image paths, origins in pixels, for cryoSPARC's Import Particle Stack).",
    ),
    space: Path = typer.Option(
        None,
        "--space",
        help="space.npz to resolve polygon groups (default: space.npz next to the group file).",
    ),
    absolute_paths: bool = typer.Option(
        False, "--absolute-paths", help="relion: write absolute image paths."
    ),
) -> None:
    """Export the particles of chosen groups (or a list of particle rows) as STAR files that
    point at the particle images, with poses and normal-mode amplitudes, for RELION or
    cryoSPARC (one file per group; column deephemnmaGroup names the group)."""
    from deephemnma.analysis.export import export

    summary = export(
        particles,
        out,
        groups=groups,
        names=group or None,
        indices=indices,
        images=images,
        fmt=fmt,
        space=space,
        absolute_paths=absolute_paths,
    )
    for name, entry in summary["groups"].items():
        _out.print(f"  {name}: {entry['n']:,} particles → {out / entry['file']}")
    for note in summary["notes"]:
        _out.print(f"[yellow]note:[/] {note}")
    _out.print(f"wrote {len(summary['groups'])} {summary['format']} STAR file(s) in {out}")
