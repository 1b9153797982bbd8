"""``deephemnma reconstruct`` as a library call: resolve the groups, reconstruct each, write
``OUT/<group folder>/…`` and ``OUT/summary.json`` (layout in docs/reconstruct.md)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deephemnma import __version__
from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_text
from deephemnma.reconstruct.group import (
    ReconstructionSettings,
    group_summary,
    model_map,
    particle_data,
    reconstruct_group,
    with_model,
    write_group,
)

FORMAT = "deephemnma-reconstruct"
VERSION = 1
ALL = "all"


def resolve_groups(
    n_particles: int,
    groups_file: str | os.PathLike | None = None,
    names: Sequence[str] = (),
    space_file: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Row indices of each group to reconstruct: every particle as ``all`` without a group
    file; else the file's groups (or only ``names``). Polygon groups need the reduced-space
    coordinates: ``space_file``, else ``space.npz`` next to the group file (key ``coords``)."""
    from deephemnma.groups import resolve_group_file

    if groups_file is None:
        if names:
            raise InputError("--group needs --groups", field="--group", found=", ".join(names))
        return {ALL: np.arange(n_particles)}
    return resolve_group_file(groups_file, n_particles, names, space_file)


def run_reconstruct(
    particles: str | os.PathLike,
    out: str | os.PathLike,
    settings: ReconstructionSettings,
    groups_file: str | os.PathLike | None = None,
    group_names: Sequence[str] = (),
    images: str | os.PathLike | None = None,
    modes: str | os.PathLike | None = None,
    space_file: str | os.PathLike | None = None,
    min_particles: int = 100,
    amplitude_suffix: str = "",
    progress: bool = True,
    warn: Callable[[str], None] = print,
) -> dict:
    """Reconstruct every group with at least ``min_particles`` particles (the others are
    skipped with a warning; InputError when none is left); returns the run summary that is
    also written to ``OUT/summary.json``."""
    from deephemnma.groups import folder_name
    from deephemnma.io.star import amplitudes, read_particles

    settings.validate()
    started = time.perf_counter()
    poses = read_particles(particles)
    data = particle_data(poses, read_particles(images) if images is not None else None)
    groups = resolve_groups(len(poses), groups_file, group_names, space_file)
    mode_set = None
    if modes is not None:
        from deephemnma.nma.modes import load_modes

        mode_set = load_modes(modes)
        mode_numbers, values = amplitudes(poses, amplitude_suffix)
        missing = [int(m) for m in mode_numbers if m not in set(mode_set.mode_numbers)]
        if missing or len(mode_numbers) == 0:
            raise InputError(
                "the modes file lacks modes that the particle STAR has amplitudes for",
                path=modes,
                field="mode_numbers",
                expected=", ".join(str(int(m)) for m in mode_numbers) or "amplitude columns",
                found=", ".join(str(int(m)) for m in mode_set.mode_numbers),
            )
        # The centroid model deforms along the STAR's modes; other modes of the file rest.
        mode_set = mode_set.select([int(m) for m in mode_numbers])
        columns = list(range(len(mode_numbers)))
        group_amplitudes = values[:, columns]
    skipped, kept = [], {}
    for name, rows in groups.items():
        if len(rows) < max(min_particles, 2):
            warn(
                f"skipping group '{name}': {len(rows)} particles, fewer than "
                f"--min-particles {min_particles}"
            )
            skipped.append({"name": name, "n_particles": int(len(rows)), "reason": "too few"})
        else:
            kept[name] = rows
    if not kept:
        raise InputError(
            "no group has enough particles to reconstruct",
            field="--min-particles",
            expected=f"at least one group with ≥ {min_particles} particles",
            found=", ".join(f"{s['name']}: {s['n_particles']}" for s in skipped),
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name, rows in kept.items():
        folder = folder_name(name)
        result = reconstruct_group(data, rows, settings, name=name, progress=progress)
        if mode_set is not None:
            t = time.perf_counter()
            mean = group_amplitudes[rows].mean(0)
            box = result.map.shape[0]
            model = model_map(mode_set, mean, box, result.voxel_size_A, device=settings.device)
            extra = {
                "mean_amplitudes": {
                    f"{int(m):02d}": round(float(v), 4)
                    for m, v in zip(mode_set.mode_numbers, mean, strict=True)
                }
            }
            result = with_model(result, model, extra)
            result.timing_s["model_map_and_fsc"] = round(time.perf_counter() - t, 3)
        summary = {"folder": folder, **group_summary(result)}
        write_group(out / folder, result, summary)
        summaries.append(summary)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "deephemnma": __version__,
        "particles": str(particles),
        "images": None if images is None else str(images),
        "groups_file": None if groups_file is None else str(groups_file),
        "modes": None if modes is None else str(modes),
        "settings": {**asdict(settings), "min_particles": min_particles},
        "ctf_mode": data.ctf_mode,
        "groups": summaries,
        "skipped": skipped,
        "total_s": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(out / "summary.json", json.dumps(record, indent=1))
    return record
