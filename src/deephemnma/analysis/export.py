"""Export selected particles (groups or row ids) for RELION or cryoSPARC.

One STAR file per group, ``<group>.star`` (group name with spaces as underscores), every row
tagged with the group name in ``deephemnmaGroup``. Poses (``rlnAngleRot/Tilt/Psi`` in
degrees, origins) and amplitudes (``deephemnmaAmplitudeNN``, and every other ``deephemnma*``
column) come from the analyzed particle table.

``original`` (``--images``): the analyzed table is often the downsampled, phase-flipped copy
made by ``preprocess``, whose rows are in the order of the original full-size STAR. Then the
exported rows are the original table's (image names, CTF, micrograph and coordinate columns,
optics: pixel and box size of the full-size images) with the poses and ``deephemnma*``
columns of the analyzed table, matched by row order (the row counts must agree). Shifts are
stored in Å, so they are right for any pixel size; pixel origins are derived from the
original pixel size.

Formats:

- ``relion``: RELION 3.1+ STAR (``data_optics`` + ``data_particles``), origins in Å, image
  paths relative to the new file (rewritten so they point at the same stacks) or absolute.
- ``cryosparc``: what cryoSPARC's *Import Particle Stack* job reads best — a RELION 3.0 style
  single table (``data_``) with absolute image paths, the CTF and microscope values on every
  row (``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``), the pixel size
  as ``rlnDetectorPixelSize`` (µm) with ``rlnMagnification`` 10000 (so
  10⁴ · detector / magnification = pixel size in Å), and origins in pixels
  (``rlnOriginX/Y``, RELION sign). cryoSPARC finds the stacks under its *Particle data path*
  by file name; point it at the folder of the stacks (``export.json`` lists them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from deephemnma.errors import InputError
from deephemnma.groups import GroupSet, folder_name, read_groups, resolve_group_file
from deephemnma.io.atomic import atomic_write_text
from deephemnma.io.star import (
    AMPLITUDE_CONTRAST,
    ANGLES,
    CS,
    IMAGE_DIMENSIONALITY,
    IMAGE_NAME,
    IMAGE_PIXEL_SIZE,
    IMAGE_SIZE,
    OPTICS_GROUP,
    OPTICS_GROUP_NAME,
    ORIGINS_A,
    ORIGINS_PX,
    PREFIX,
    VOLTAGE,
    ParticleTable,
    column,
    loop_block,
    parse_image_name,
    pixel_size_A,
    select,
    with_columns,
    write_particles,
)

FORMATS = ("relion", "cryosparc")
GROUP_COLUMN = "deephemnmaGroup"
DEFOCUS_CHECK_A = 1.0  # defocus columns that differ by more than this flag a row mismatch


def with_original_images(
    table: ParticleTable, original: ParticleTable
) -> tuple[ParticleTable, list[str]]:
    """The rows of ``original`` with the poses and ``deephemnma*`` columns of ``table``.

    Rows are matched by order (equal counts required). Returns the table (``path`` of the
    original, so relative image paths still resolve) and notes (e.g. defocus mismatches).
    """
    if len(table) != len(original):
        raise InputError(
            "the original STAR has a different number of particles; rows are matched by order",
            path=original.path,
            expected=f"{len(table)} rows (as {table.path})",
            found=f"{len(original)} rows",
        )
    notes = []
    for label in ("rlnDefocusU", "rlnDefocusV"):
        if label in table.particles.columns and label in original.particles.columns:
            a = pd.to_numeric(table.particles[label], errors="coerce").to_numpy()
            b = pd.to_numeric(original.particles[label], errors="coerce").to_numpy()
            bad = np.flatnonzero(~(np.abs(a - b) <= DEFOCUS_CHECK_A))
            if len(bad):
                notes.append(
                    f"{label} differs in {len(bad)} rows (first row {bad[0] + 1}); are the "
                    "two tables in the same order?"
                )
    carried = [
        c
        for c in table.particles.columns
        if c in (*ANGLES, *ORIGINS_A) or str(c).startswith(PREFIX)
    ]
    merged = with_columns(original, {c: table.particles[c].to_numpy() for c in carried})
    return merged, notes


def _per_particle_optics(table: ParticleTable) -> pd.DataFrame:
    """Particle rows with the optics values copied onto every row (no optics link)."""
    skip = {OPTICS_GROUP, OPTICS_GROUP_NAME, IMAGE_PIXEL_SIZE, IMAGE_SIZE, IMAGE_DIMENSIONALITY}
    particles = table.particles.copy()
    for label in table.optics.columns:
        if label not in skip and label not in particles.columns:
            particles[label] = column(table, label)
    return particles


def cryosparc_star_text(table: ParticleTable, group: str | None = None) -> str:
    """RELION 3.0 single-table STAR text for cryoSPARC (module docstring)."""
    from deephemnma.io.star import absolute_image_names

    for label in (VOLTAGE, CS, AMPLITUDE_CONTRAST):
        column(table, label)  # InputError naming a missing microscope value
    pix_A = pixel_size_A(table)
    particles = _per_particle_optics(table)
    if IMAGE_NAME in particles.columns:
        particles[IMAGE_NAME] = absolute_image_names(particles[IMAGE_NAME], table.folder)
    for px, A in zip(ORIGINS_PX, ORIGINS_A, strict=True):
        if A in particles.columns:
            position = particles.columns.get_loc(A)
            values = pd.to_numeric(particles[A]).to_numpy() / pix_A
            particles = particles.drop(columns=[A])
            particles.insert(position, px, values)
    particles = particles.drop(columns=[OPTICS_GROUP], errors="ignore")
    particles["rlnMagnification"] = 10000.0
    particles["rlnDetectorPixelSize"] = pix_A  # µm at 10,000×: 1e4 · det / mag = pix_A Å
    if group is not None:
        particles[GROUP_COLUMN] = group
    lines = ["# version 30001", "", *loop_block("", particles)]
    return "\n".join(lines) + "\n"


def write_group_star(
    path: str | os.PathLike,
    table: ParticleTable,
    group: str,
    fmt: str = "relion",
    absolute_paths: bool = False,
) -> Path:
    """Write one group's rows (``table`` already selected) as RELION or cryoSPARC STAR."""
    from deephemnma.io.star import absolute_image_names

    path = Path(path)
    if fmt == "cryosparc":
        return atomic_write_text(path, cryosparc_star_text(table, group))
    if fmt != "relion":
        raise InputError(
            "unknown export format", field="format", expected=" | ".join(FORMATS), found=fmt
        )
    table = with_columns(table, {GROUP_COLUMN: np.full(len(table), group, dtype=object)})
    if absolute_paths and IMAGE_NAME in table.particles.columns:
        particles = table.particles.copy()
        particles[IMAGE_NAME] = absolute_image_names(particles[IMAGE_NAME], table.folder)
        return write_particles(path, replace(table, particles=particles), relocate_images=False)
    return write_particles(path, table)


def stack_files(table: ParticleTable) -> list[str]:
    """Distinct stack files (absolute paths) that the table's rows refer to."""
    if IMAGE_NAME not in table.particles.columns:
        return []
    parts = table.particles[IMAGE_NAME].astype(str).str.strip().str.partition("@")
    paths = parts[2].where(parts[1] == "@", parts[0])
    stacks = {parse_image_name(p)[1] for p in pd.unique(paths)}
    return sorted(
        (Path(s) if Path(s).is_absolute() else (table.folder / s).resolve()).as_posix()
        for s in stacks
    )


def export(
    particles: str | os.PathLike,
    out: str | os.PathLike,
    groups: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    indices: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    fmt: str = "relion",
    space: str | os.PathLike | None = None,
    absolute_paths: bool = False,
) -> dict:
    """Write the particles of the chosen groups (and/or an index file) as STAR files.

    particles: the analyzed STAR (the rows the group indices refer to); groups: group file
    (polygon groups need the space: ``space`` or ``space.npz`` next to the group file);
    names: groups to export (default all); indices: text file of 0-based rows (one more
    group, named after the file); images: original full-size STAR (module docstring).
    Returns the summary written as ``export.json``.
    """
    from deephemnma.io.star import read_particles

    if fmt not in FORMATS:
        raise InputError(
            "unknown export format", field="format", expected=" | ".join(FORMATS), found=fmt
        )
    if groups is None and indices is None:
        raise InputError(
            "nothing to export",
            field="groups",
            expected="a group file (--groups) or an index file (--indices)",
        )
    if names and groups is None:
        raise InputError("--group needs a group file (--groups)", field="group")
    table = read_particles(particles)
    n = len(table)
    resolved: dict[str, np.ndarray] = {}
    if groups is not None:
        resolved.update(resolve_group_file(groups, n, names or (), space))
        if not resolved:
            raise InputError("the group file holds no group", path=groups, field="groups")
    if indices is not None:
        index_set = GroupSet(read_groups(indices).groups, n_particles=n)
        for name, rows in index_set.resolve().items():
            if name in resolved:
                raise InputError("an index file has the name of a group", path=indices, found=name)
            resolved[name] = rows
    notes: list[str] = []
    source = table
    if images is not None:
        source, notes = with_original_images(table, read_particles(images))
    if not all(a in source.particles.columns for a in ANGLES):
        notes.append("the particles have no angles (rlnAngleRot/Tilt/Psi): no poses exported")
    flipped = column(source, "rlnCtfDataArePhaseFlipped", default=0.0)
    if len(flipped) and np.any(pd.to_numeric(pd.Series(flipped), errors="coerce") == 1):
        notes.append(
            "the images are CTF phase-flipped (rlnCtfDataArePhaseFlipped = 1); "
            "use --images ORIGINAL.star to export the original images"
        )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".star"
    files = {}
    for name, rows in resolved.items():
        if len(rows) == 0:
            notes.append(f"group '{name}' is empty: not written")
            continue
        path = out / f"{folder_name(name)}{suffix}"
        write_group_star(path, select(source, rows), name, fmt, absolute_paths)
        files[name] = {"file": path.name, "n": int(len(rows))}
    summary = {
        "particles": str(particles),
        "images": None if images is None else str(images),
        "format": fmt,
        "group_column": GROUP_COLUMN,
        "groups": files,
        "stacks": stack_files(source),
        "notes": notes,
    }
    atomic_write_text(out / "export.json", json.dumps(summary, indent=2))
    return summary
