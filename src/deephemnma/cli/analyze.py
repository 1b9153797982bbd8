"""``deephemnma analyze``: PCA of the amplitudes, groups, figures, models and trajectories."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("analyze")
def analyze_command(
    particles: Path = typer.Argument(
        ..., help="RELION STAR with deephemnmaAmplitudeNN columns (e.g. predict's output)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder: space.npz, groups.json, figures, summary.json."
    ),
    stage1: Path = typer.Option(
        None,
        "--stage1",
        help="Stage-1 (HEMNMA) STAR to analyze together with PARTICLES in one combined space "
        "(source marked; the combined table is written as OUT/particles.star).",
    ),
    truth: Path = typer.Option(
        None, "--truth", help="STAR with ground-truth amplitudes, matched by rlnImageName."
    ),
    modes: Path = typer.Option(
        None,
        "--modes",
        help="Modes file (.npz from 'deephemnma nma' or simulate) of the reference: centroid "
        "models (PDB) and trajectories (multi-model PDB + GIF).",
    ),
    n_components: int = typer.Option(
        None, "--n-components", help="Principal components kept (default: one per mode)."
    ),
    groups: int = typer.Option(
        None, "--groups", help="Number of automatic groups K (method: --method, default density)."
    ),
    method: str = typer.Option(
        None,
        "--method",
        help="kmeans | gmm (on the first --dims PCs) | density (K densest regions of the "
        "PC1-PC2 density) | bins (quasi-uniform bins along PC1, each ≥ --min-per-group).",
    ),
    min_per_group: int = typer.Option(
        1, "--min-per-group", help="Fewest particles per bin (bins); others are flagged."
    ),
    dims: int = typer.Option(2, "--dims", help="PCs used by kmeans and gmm."),
    trim: float = typer.Option(
        0.0, help="bins: fraction of particles left out at each end of PC1 (0 ≤ trim < 0.5)."
    ),
    group_file: Path = typer.Option(
        None,
        "--group-file",
        help="Groups to add: a group file (JSON, row indices or polygons in PC space, as the "
        "explorer writes) or a text file of 0-based row indices.",
    ),
    path: Path = typer.Option(
        None,
        "--path",
        help="Text file of points in PC space (one per line: PC1 PC2 [PC3 …], amplitude "
        "units) for a trajectory along that path.",
    ),
    trajectory_pcs: int = typer.Option(
        3, "--trajectory-pcs", help="Trajectories along the first N PCs."
    ),
    frames: int = typer.Option(10, "--frames", help="Frames per trajectory."),
    extent: float = typer.Option(
        2.0, "--extent", help="Trajectories span ± this many standard deviations along the PC."
    ),
    gif: bool = typer.Option(True, "--gif/--no-gif", help="Render the trajectories as GIFs."),
    gif_size: int = typer.Option(128, "--gif-size", help="GIF view size in pixels."),
    suffix: str = typer.Option(
        "", help="Amplitude column suffix of PARTICLES (deephemnmaAmplitude07 + SUFFIX)."
    ),
    truth_suffix: str = typer.Option("", help="Amplitude column suffix of the truth."),
    label: str = typer.Option(
        "predicted", help="Source name of PARTICLES in the space (the Stage-1 STAR is 'stage1')."
    ),
    seed: int = typer.Option(0, help="Random seed (subsets, clustering starts)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG figures."),
    quiet: bool = typer.Option(False, help="No progress output."),
) -> None:
    """Conformational space (paper §2.3): PCA of the normal-mode amplitudes with explained
    variance, density figures readable at millions of particles, automatic groups (k-means,
    Gaussian mixture, density peaks, bins along PC1) or groups from a file, per-group centroid
    models and trajectories along the PCs or a path (multi-model PDB and GIF)."""
    from deephemnma.analysis.run import AnalyzeSettings, analyze

    settings = AnalyzeSettings(
        n_components=n_components,
        method=method,
        n_groups=groups,
        min_per_group=min_per_group,
        n_dims=dims,
        trim=trim,
        trajectory_pcs=trajectory_pcs,
        n_frames=frames,
        extent_std=extent,
        gif=gif,
        gif_size=gif_size,
        suffix=suffix,
        truth_suffix=truth_suffix,
        label=label,
        seed=seed,
    )
    summary = analyze(
        particles,
        out,
        settings,
        stage1=stage1,
        truth=truth,
        modes=modes,
        group_file=group_file,
        path_file=path,
        figures=plots,
        progress=not quiet,
    )
    variance = ", ".join(f"{100 * r:.1f}" for r in summary["explained_variance_ratio"])
    _out.print(
        f"{summary['n_particles']:,} particles, modes "
        f"{','.join(map(str, summary['mode_numbers']))}; explained variance (%): {variance}"
    )
    for name, group in summary["groups"].items():
        _out.print(f"  {name}: {group['n']:,} particles ({group['source']})")
    for note in summary["notes"]:
        _out.print(f"[yellow]note:[/] {note}")
    _out.print(
        f"wrote {out}/space.npz, groups.json, summary.json ({summary['seconds']['total']:.1f} s)"
    )
