"""``analyze`` as one library call: particle STAR(s) → conformational space folder.

Writes into ``out`` (see docs/analysis.md):

- ``space.npz`` (:mod:`deephemnma.analysis.space`) and ``groups.json``
  (:mod:`deephemnma.groups`; automatic groups as index groups, file groups as given);
- ``particles.star`` — only for a combined space (predicted + Stage-1 rows);
- ``explained_variance.json``, ``summary.json``, ``config.json``;
- figures: ``explained_variance.png``, ``density.png``, ``scatter3d.png`` (≥ 3 PCs),
  ``groups.png`` (with groups), ``trajectories.png``;
- with a modes file: ``models/mean.pdb``, ``models/<group>_centroid.pdb``,
  ``trajectories/pcN.pdb`` + ``pcN.gif`` and ``trajectories/path.pdb`` + ``path.gif``
  (``.cif`` instead of ``.pdb`` when the atoms do not fit PDB).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError, check_settings
from deephemnma.io.atomic import atomic_write_text


@dataclass(frozen=True)
class AnalyzeSettings:
    """Parameters of :func:`analyze` (defaults are the CLI's).

    n_components: PCs kept (None: one per mode). method: grouping method (``kmeans``,
    ``gmm``, ``density``, ``bins``) or None for no automatic groups; n_groups: K (``bins``
    may leave it None: as many as ``min_per_group`` allows); n_dims: PCs used by k-means and
    the mixture; trim: fraction left out at each end of PC1 by ``bins``.
    trajectory_pcs: PCs (1-based count) with a trajectory; n_frames, extent_std: frames and
    ± range in standard deviations; gif: also render GIFs (gif_size pixels per view, fps).
    suffix / stage1_suffix / truth_suffix: amplitude column suffixes; label: the source name
    of the main table; seed: subsets and clustering starts.
    """

    n_components: int | None = None
    method: str | None = None
    n_groups: int | None = None
    min_per_group: int = 1
    n_dims: int = 2
    trim: float = 0.0
    trajectory_pcs: int = 3
    n_frames: int = 10
    extent_std: float = 2.0
    gif: bool = True
    gif_size: int = 128
    fps: float = 8.0
    suffix: str = ""
    stage1_suffix: str = ""
    truth_suffix: str = ""
    label: str = "predicted"
    seed: int = 0

    def __post_init__(self) -> None:
        from deephemnma.analysis.grouping import METHODS

        check_settings(
            self,
            [
                (self.n_components is None or self.n_components >= 1, "n_components", "≥ 1"),
                (self.method is None or self.method in METHODS, "method", " | ".join(METHODS)),
                (self.n_groups is None or self.n_groups >= 1, "n_groups", "≥ 1"),
                (self.min_per_group >= 1, "min_per_group", "≥ 1"),
                (self.n_dims >= 1, "n_dims", "≥ 1"),
                (0 <= self.trim < 0.5, "trim", "0 ≤ trim < 0.5"),
                (self.trajectory_pcs >= 0, "trajectory_pcs", "≥ 0"),
                (self.n_frames >= 2, "n_frames", "≥ 2"),
                (self.extent_std > 0, "extent_std", "> 0"),
                (16 <= self.gif_size <= 1024, "gif_size", "16..1024 pixels"),
                (self.fps > 0, "fps", "> 0"),
            ],
            "analyze",
        )


class _Steps:
    """Timings per step and one status line each."""

    def __init__(self, log) -> None:
        self.log, self.seconds = log, {}

    @contextmanager
    def step(self, name: str, text: str):
        self.log.line(text)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def analyze(
    particles: str | os.PathLike,
    out: str | os.PathLike,
    settings: AnalyzeSettings = AnalyzeSettings(),
    stage1: str | os.PathLike | None = None,
    truth: str | os.PathLike | None = None,
    modes: str | os.PathLike | None = None,
    group_file: str | os.PathLike | None = None,
    path_file: str | os.PathLike | None = None,
    figures: bool = True,
    progress: bool = True,
) -> dict:
    """PCA, groups, figures, centroid models and trajectories of the particles' amplitudes.

    particles: STAR with ``deephemnmaAmplitudeNN{suffix}`` (predicted, or any estimate);
    stage1: a second STAR (Stage-1 HEMNMA) to analyze in a combined space; truth: STAR with
    ground-truth amplitudes (matched by rlnImageName); modes: modes file of the reference for
    models and trajectories; group_file: groups to add (JSON group file or a text file of row
    indices; polygons resolve in the new space); path_file: points in PC space for a path
    trajectory. Returns the summary (also written as ``summary.json``).
    """
    from deephemnma import __version__
    from deephemnma.analysis import figures as figs
    from deephemnma.analysis.grouping import automatic_groups, group_sizes
    from deephemnma.analysis.pca import fit_space
    from deephemnma.analysis.space import save_space
    from deephemnma.analysis.tables import (
        combine_tables,
        common_amplitudes,
        score_column,
        truth_amplitudes,
    )
    from deephemnma.groups import GroupSet, check_table, folder_name, read_groups, write_groups
    from deephemnma.io.star import read_particles, write_particles
    from deephemnma.progress import StatusLog

    out = Path(out)
    steps = _Steps(StatusLog("analyze", progress))
    t_start = time.perf_counter()
    written: list[str] = []
    notes: list[str] = []

    with steps.step("read", "reading particles"):
        tables = [read_particles(particles)]
        names = [settings.label]
        suffixes = [settings.suffix]
        if stage1 is not None:
            tables.append(read_particles(stage1))
            names.append("stage1")
            suffixes.append(settings.stage1_suffix)
        if len(set(names)) != len(names):
            raise InputError(
                "the two sources need different names", field="label", found=settings.label
            )
        mode_numbers, values = common_amplitudes(tables, suffixes)
        amplitudes = np.concatenate(values)
        source = np.concatenate([np.full(len(t), i, np.int8) for i, t in enumerate(tables)])
        score = np.concatenate([score_column(t) for t in tables])
        truth_values = None
        if truth is not None:
            truth_values, truth_notes = truth_amplitudes(
                tables, read_particles(truth), mode_numbers, settings.truth_suffix
            )
            notes += truth_notes
        # Optional inputs are checked before the long steps.
        mode_set = None
        if modes is not None:
            from deephemnma.analysis.trajectory import modes_for
            from deephemnma.nma.modes import load_modes

            mode_set = modes_for(load_modes(modes), mode_numbers)
        file_groups = read_groups(group_file) if group_file is not None else None
        path_points = None
        if path_file is not None:
            from deephemnma.analysis.trajectory import read_path

            path_points = read_path(path_file)

    out.mkdir(parents=True, exist_ok=True)
    combined = combine_tables(tables, names, out) if len(tables) > 1 else None
    particles_rel = "particles.star" if combined else _relative(Path(particles), out)

    with steps.step("pca", f"PCA of {len(amplitudes):,} × {len(mode_numbers)} amplitudes"):
        space = fit_space(
            amplitudes,
            mode_numbers,
            settings.n_components,
            source,
            names,
            score,
            truth_values,
            particles_rel,
        )
    coords = space.coords
    if path_points is not None and path_points.shape[1] > space.n_components:
        raise InputError(
            "the path has more coordinates than PCs kept",
            path=path_file,
            expected=f"≤ {space.n_components} columns",
            found=str(path_points.shape[1]),
        )

    groups = GroupSet((), n_particles=space.n_particles, particles=particles_rel)
    if settings.method is not None or settings.n_groups is not None:
        method = settings.method or "density"
        with steps.step("groups", f"automatic groups ({method})"):
            auto = automatic_groups(
                coords,
                method,
                settings.n_groups,
                settings.min_per_group,
                settings.n_dims,
                settings.seed,
                settings.trim,
            )
            for group in auto.groups:
                groups = groups.with_group(group)
    if file_groups is not None:
        check_table(file_groups, space.n_particles, group_file)
        for group in file_groups.groups:
            groups = groups.with_group(group)
    resolved = groups.resolve(coords)
    # Written once every input has proved usable: no half-finished folder on a bad option.
    if combined is not None:
        write_particles(out / "particles.star", combined, relocate_images=False)
        written.append("particles.star")
    save_space(out / "space.npz", space)
    write_groups(out / "groups.json", groups)
    written += ["space.npz", "groups.json"]
    small = [n for n, rows in resolved.items() if len(rows) < settings.min_per_group]
    if small:
        notes.append(
            f"groups with fewer than {settings.min_per_group} particles: " + ", ".join(small)
        )

    # Trajectories in PC space (amplitudes need no modes; models and movies do).
    from deephemnma.analysis.trajectory import path_trajectory, pc_trajectory

    trajectories: dict[str, np.ndarray] = {}
    pc_points: dict[str, np.ndarray] = {}
    for pc in range(min(settings.trajectory_pcs, space.n_components)):
        t, amps = pc_trajectory(space, pc, settings.n_frames, settings.extent_std)
        trajectories[f"pc{pc + 1}"] = amps
        pc_points[f"pc{pc + 1}"] = space.to_coords(amps)
    if path_points is not None:
        sampled, amps = path_trajectory(space, path_points, max(settings.n_frames, 2))
        trajectories["path"] = amps
        pc_points["path"] = space.to_coords(amps)

    explained = {
        "mode_numbers": [int(m) for m in space.mode_numbers],
        "explained_variance_ratio": [float(r) for r in space.explained_variance_ratio],
        "cumulative": [float(c) for c in np.cumsum(space.explained_variance_ratio)],
        "pc_std": [float(s) for s in space.pc_std()],
        "components": space.components.tolist(),
        "mean": space.mean.tolist(),
    }
    atomic_write_text(out / "explained_variance.json", json.dumps(explained, indent=1))
    written.append("explained_variance.json")

    if figures:
        with steps.step("figures", "figures"):
            figs.explained_variance_figure(
                space.explained_variance_ratio, out / "explained_variance.png"
            )
            figs.density_figure(
                coords,
                out / "density.png",
                space.source,
                space.source_names,
                space.explained_variance_ratio,
            )
            written += ["explained_variance.png", "density.png"]
            if space.n_components >= 3:
                figs.scatter_3d_figure(coords, out / "scatter3d.png", seed=settings.seed)
                written.append("scatter3d.png")
            if resolved:
                figs.groups_figure(coords, resolved, out / "groups.png", seed=settings.seed)
                written.append("groups.png")
            if pc_points:
                figs.trajectory_figure(coords, pc_points, out / "trajectories.png")
                written.append("trajectories.png")

    if mode_set is not None:
        from deephemnma.analysis.trajectory import (
            group_centroids,
            render_frames,
            write_gif,
            write_trajectory_pdb,
        )
        from deephemnma.io.pdb import model_suffix_for

        # mmCIF when the atoms do not fit PDB (e.g. a ribosome's chain names).
        ext = model_suffix_for(mode_set.structure)
        with steps.step("models", "centroid models"):
            write_trajectory_pdb(out / "models" / f"mean{ext}", mode_set, space.mean[None])
            written.append(f"models/mean{ext}")
            for name, centroid in group_centroids(space.amplitudes, resolved).items():
                rel = f"models/{folder_name(name)}_centroid{ext}"
                write_trajectory_pdb(out / rel, mode_set, centroid[None])
                written.append(rel)
        with steps.step("trajectories", f"{len(trajectories)} trajectories"):
            from deephemnma.progress import progress_bar

            total = len(trajectories) * settings.n_frames if settings.gif else 0
            with progress_bar(total, "render", enabled=progress and total > 0) as bar:
                for name, amps in trajectories.items():
                    write_trajectory_pdb(out / "trajectories" / f"{name}{ext}", mode_set, amps)
                    written.append(f"trajectories/{name}{ext}")
                    if settings.gif:
                        frames = render_frames(mode_set, amps, settings.gif_size, bar.advance)
                        write_gif(out / "trajectories" / f"{name}.gif", frames, settings.fps)
                        written.append(f"trajectories/{name}.gif")

    config = {
        "command": "analyze",
        "version": __version__,
        "inputs": {
            "particles": str(particles),
            "stage1": None if stage1 is None else str(stage1),
            "truth": None if truth is None else str(truth),
            "modes": None if modes is None else str(modes),
            "group_file": None if group_file is None else str(group_file),
            "path_file": None if path_file is None else str(path_file),
        },
        "settings": asdict(settings),
    }
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    summary = {
        "n_particles": space.n_particles,
        "mode_numbers": [int(m) for m in space.mode_numbers],
        "n_components": space.n_components,
        "explained_variance_ratio": explained["explained_variance_ratio"],
        "sources": {
            name: int((space.source == i).sum()) for i, name in enumerate(space.source_names)
        },
        "particles": particles_rel,
        "has_truth": space.truth is not None,
        "groups": {
            name: {"n": size, "source": groups.get(name).source}
            for name, size in group_sizes(resolved).items()
        },
        "trajectories": list(trajectories),
        "notes": notes,
        "files": written + ["config.json", "summary.json"],
        "seconds": {**steps.seconds, "total": round(time.perf_counter() - t_start, 3)},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
