"""Particle STAR files: RELION 3.1+ (``data_optics`` + ``data_particles``), read and written.

Also read, and converted to the 3.1 layout on the fly:

- **RELION 3.0** single-table files (``data_`` or any one loop block, no optics block). Optics
  groups are synthesized from the per-particle ``rlnVoltage``, ``rlnSphericalAberration``,
  ``rlnAmplitudeContrast``, the pixel size (``rlnImagePixelSize``, else
  ``10000 · rlnDetectorPixelSize[µm] / rlnMagnification``), ``rlnImageSize`` and any
  ``rlnOpticsGroup`` column: one group per distinct combination, numbered 1, 2, … in order of
  first appearance. Those columns move to the optics table (as RELION 3.1's converter does);
  ``rlnDetectorPixelSize`` and ``rlnMagnification`` are dropped.
- **cryoSPARC exports** (pyem ``csparc2star.py``; cryoSPARC itself writes ``.cs`` files).
  Old pyem writes the RELION 3.0 layout above with ``rlnImageName`` like
  ``000001@J12/extract/…_particles.mrc`` (stacks named ``.mrc``), newer pyem the 3.1 layout;
  both read as above. Some cryoSPARC versions prefix paths with ``>``
  (``000001@>J12/…``); the prefix is kept in the table (round trips are exact) and removed when
  an image path is resolved (:func:`parse_image_name`).
- Pixel origins ``rlnOriginX/Y`` (pixels) become ``rlnOriginXAngst/YAngst`` (Å, same sign,
  same column position), as RELION 3.1 does.

Labels are named as RELION writes them without the leading underscore (``rlnImageName``,
``deephemnmaAmplitude07``), which is how ``starfile`` names DataFrame columns. Column order,
row order and unknown columns are kept; floats are written with the shortest representation
that reads back to the same float64, so a read → write → read round trip is exact.

Image paths in ``rlnImageName`` are relative to the folder of the STAR file (see
:mod:`deephemnma.io.mrc`); :func:`write_particles` rewrites relative paths when a table is
written to a different folder, so the new file still points at the same stacks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from deephemnma.ctf import CTFParams
from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_path
from deephemnma.io.star_blocks import read_star_blocks

# RELION labels (without the leading underscore, as starfile names columns).
IMAGE_NAME = "rlnImageName"
OPTICS_GROUP = "rlnOpticsGroup"
OPTICS_GROUP_NAME = "rlnOpticsGroupName"
IMAGE_PIXEL_SIZE = "rlnImagePixelSize"
IMAGE_SIZE = "rlnImageSize"
IMAGE_DIMENSIONALITY = "rlnImageDimensionality"
DETECTOR_PIXEL_SIZE = "rlnDetectorPixelSize"
MAGNIFICATION = "rlnMagnification"
VOLTAGE = "rlnVoltage"
CS = "rlnSphericalAberration"
AMPLITUDE_CONTRAST = "rlnAmplitudeContrast"
DEFOCUS_U = "rlnDefocusU"
DEFOCUS_V = "rlnDefocusV"
DEFOCUS_ANGLE = "rlnDefocusAngle"
PHASE_SHIFT = "rlnPhaseShift"
CTF_BFACTOR = "rlnCtfBfactor"
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGINS_A = ("rlnOriginXAngst", "rlnOriginYAngst")
POSE_SPREAD = "deephemnmaPoseSpreadDeg"
"""Per-particle disagreement (°) of test-time-augmented predictions (network.tta)."""
ORIGINS_PX = ("rlnOriginX", "rlnOriginY")

# Our own labels share this prefix (CONVENTIONS.md).
PREFIX = "deephemnma"
AMPLITUDE_PREFIX = f"{PREFIX}Amplitude"

# Columns that must stay strings even when every value looks like a number.
_STRING_LABELS = [
    IMAGE_NAME,
    OPTICS_GROUP_NAME,
    "rlnMicrographName",
    "rlnMicrographMovieName",
    "rlnOriginalImageName",
    "rlnReconstructImageName",
    "rlnCtfImage",
    "rlnGroupName",
]
# RELION 3.0 per-particle columns that RELION 3.1 keeps in the optics table.
_OPTICS_FROM_PARTICLES = (OPTICS_GROUP, VOLTAGE, CS, AMPLITUDE_CONTRAST, IMAGE_SIZE)
_STAR_VERSION_LINE = "# version 30001"


@dataclass(frozen=True)
class ParticleTable:
    """The two tables of a RELION 3.1 particle STAR file and where it was read from.

    optics: one row per optics group (``rlnOpticsGroup`` 1, 2, …; pixel size, voltage, …).
    particles: one row per particle image, in file order; ``rlnOpticsGroup`` links to optics.
    path: the STAR file the table came from (``None`` for a table built in memory); relative
        image paths are resolved against its folder.
    """

    optics: pd.DataFrame
    particles: pd.DataFrame
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def n_particles(self) -> int:
        return len(self.particles)

    @property
    def folder(self) -> Path:
        """Folder against which relative image paths are resolved (cwd for in-memory tables)."""
        return self.path.parent if self.path is not None else Path.cwd()


# --------------------------------------------------------------------------------------------
# Image names


def parse_image_name(name: str) -> tuple[int | None, str]:
    """Split ``"000123@stacks/a.mrcs"`` into ``(123, "stacks/a.mrcs")`` (1-based index).

    A name without ``@`` is a single-image file: ``(None, path)``. A leading ``>`` on the path
    (written by some cryoSPARC versions) is removed.
    """
    name = str(name).strip()
    index_text, at, path = name.partition("@")
    if not at:
        index, path = None, index_text
    else:
        try:
            index = int(index_text)
        except ValueError:
            raise InputError(
                "image index before '@' is not an integer",
                field=IMAGE_NAME,
                expected="'<index>@<stack>' with a 1-based index",
                found=name,
            ) from None
        if index < 1:
            raise InputError(
                "image index must be ≥ 1 (RELION counts from 1)",
                field=IMAGE_NAME,
                expected="index ≥ 1",
                found=name,
            )
    path = path.lstrip(">")
    if not path:
        raise InputError("image name has no file", field=IMAGE_NAME, found=name)
    return index, path


def format_image_name(index_1based: int, path: str | os.PathLike) -> str:
    """``(123, "a.mrcs") -> "000123@a.mrcs"`` (six digits, as RELION writes them)."""
    return f"{int(index_1based):06d}@{Path(path).as_posix()}"


# --------------------------------------------------------------------------------------------
# Reading


def read_particles(path: str | os.PathLike, fill_image_size: bool = True) -> ParticleTable:
    """Read a particle STAR file (RELION 3.1+, RELION 3.0 or a cryoSPARC export).

    Returns the RELION 3.1 layout (see the module docstring for the conversions). Files that
    do not record the box size (RELION 3.0, cryoSPARC) get ``rlnImageSize`` from the header of
    the first stack of each optics group when ``fill_image_size`` and the stack is found
    (:func:`deephemnma.io.mrc.fill_image_size`). Raises :class:`InputError` when the file is
    missing, cannot be parsed, has no particle table, or has pixel origins but no pixel size
    to convert them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, expected="a particle STAR file")
    try:
        blocks = read_star_blocks(path, _STRING_LABELS)
    except Exception as exc:  # pandas/ValueError/IndexError on malformed input
        raise InputError(f"cannot parse as a STAR file: {exc}", path=path) from exc
    loops = {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}
    if "optics" in loops:
        particles = _particle_block(loops, path, exclude="optics")
        optics = loops["optics"].reset_index(drop=True)
        particles = particles.reset_index(drop=True)
        if OPTICS_GROUP not in particles.columns and len(optics) == 1:
            # One optics group: RELION would require the link; we can infer it safely.
            particles[OPTICS_GROUP] = int(optics[OPTICS_GROUP].iloc[0])
    else:
        optics, particles = _from_relion30(_particle_block(loops, path).reset_index(drop=True))
    table = ParticleTable(optics=optics, particles=particles, path=path)
    _check_optics_links(table)
    table = _origins_px_to_A(table)
    if fill_image_size and not _has_complete(table.optics, IMAGE_SIZE):
        from deephemnma.io.mrc import fill_image_size as fill  # mrc imports this module

        table = fill(table)
    return table


def _has_complete(df: pd.DataFrame, label: str) -> bool:
    return label in df.columns and bool(df[label].notna().all())


def _particle_block(loops: dict[str, pd.DataFrame], path: Path, exclude: str | None = None):
    candidates = {k: v for k, v in loops.items() if k != exclude}
    if "particles" in candidates:
        return candidates["particles"]
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    with_images = [k for k, v in candidates.items() if IMAGE_NAME in v.columns]
    if len(with_images) == 1:
        return candidates[with_images[0]]
    raise InputError(
        "cannot tell which block holds the particles",
        path=path,
        expected="data_particles (RELION 3.1) or a single loop block (RELION 3.0)",
        found=", ".join(f"data_{k}" for k in loops) or "no loop block",
    )


def _from_relion30(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a RELION 3.0 single table into optics groups and particles."""
    keys = pd.DataFrame(index=df.index)
    for label in _OPTICS_FROM_PARTICLES:
        if label in df.columns:
            keys[label] = df[label]
    if IMAGE_PIXEL_SIZE in df.columns:
        keys[IMAGE_PIXEL_SIZE] = df[IMAGE_PIXEL_SIZE].astype(float)
    elif DETECTOR_PIXEL_SIZE in df.columns and MAGNIFICATION in df.columns:
        # RELION 3.0: pixel size [Å] = detector pixel size [µm] · 1e4 / magnification.
        keys[IMAGE_PIXEL_SIZE] = 1e4 * df[DETECTOR_PIXEL_SIZE].astype(float) / df[MAGNIFICATION]
    if keys.shape[1] and len(df):
        codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=False, use_na_sentinel=False)
        first = pd.DataFrame(list(uniques), columns=keys.columns)
    else:
        codes = np.zeros(len(df), dtype=np.int64)
        first = pd.DataFrame(index=[0], columns=[])
    groups = np.arange(1, len(first) + 1)
    optics = pd.DataFrame(
        {OPTICS_GROUP_NAME: [f"opticsGroup{g}" for g in groups], OPTICS_GROUP: groups}
    )
    for label in first.columns:
        if label != OPTICS_GROUP:
            optics[label] = first[label].to_numpy()
    if IMAGE_SIZE in optics.columns:
        optics[IMAGE_DIMENSIONALITY] = 2
    drop = [
        c
        for c in (*_OPTICS_FROM_PARTICLES, IMAGE_PIXEL_SIZE, DETECTOR_PIXEL_SIZE, MAGNIFICATION)
        if c in df.columns and c != OPTICS_GROUP
    ]
    particles = df.drop(columns=drop)
    particles[OPTICS_GROUP] = groups[codes]  # in place if the column existed, else appended
    return optics, particles


def _check_optics_links(table: ParticleTable) -> None:
    if len(table.particles) == 0:
        return
    if OPTICS_GROUP not in table.particles.columns:
        raise InputError(
            "particles have no optics group and the optics table has several",
            path=table.path,
            field=OPTICS_GROUP,
        )
    known = set(table.optics[OPTICS_GROUP].tolist())
    used = pd.unique(table.particles[OPTICS_GROUP])
    missing = [g for g in used if g not in known]
    if missing:
        row = int(np.flatnonzero(table.particles[OPTICS_GROUP].to_numpy() == missing[0])[0])
        raise InputError(
            f"particle row {row + 1} refers to an optics group that data_optics lacks",
            path=table.path,
            field=OPTICS_GROUP,
            expected="one of " + ", ".join(str(g) for g in sorted(known)),
            found=str(missing[0]),
        )


def _origins_px_to_A(table: ParticleTable) -> ParticleTable:
    """Replace rlnOriginX/Y (pixels) by rlnOriginXAngst/YAngst (Å, same sign and position)."""
    todo = [
        (px, A)
        for px, A in zip(ORIGINS_PX, ORIGINS_A, strict=True)
        if px in table.particles.columns and A not in table.particles.columns
    ]
    if not todo:
        return table
    try:
        pix_A = pixel_size_A(table)
    except InputError as exc:
        raise InputError(
            "origins in pixels (rlnOriginX/Y) need a pixel size to be converted to Å",
            path=table.path,
            field=IMAGE_PIXEL_SIZE,
            expected="rlnImagePixelSize, or rlnDetectorPixelSize and rlnMagnification",
        ) from exc
    particles = table.particles.copy()
    for px, A in todo:
        particles[px] = particles[px].astype(float) * pix_A
        particles = particles.rename(columns={px: A})
    return replace(table, particles=particles)


# --------------------------------------------------------------------------------------------
# Writing


def write_particles(
    path: str | os.PathLike, table: ParticleTable, relocate_images: bool = True
) -> Path:
    """Write ``table`` as a RELION 3.1 STAR file (``data_optics`` + ``data_particles``).

    Written to a temporary file, then renamed. Column order, row order and unknown columns
    are kept. With ``relocate_images`` (default), relative stack paths in ``rlnImageName`` are
    rewritten relative to the new file's folder when it differs from ``table.path``'s folder,
    so that the written file refers to the same stacks. Returns ``path``.
    """
    path = Path(path)
    particles = table.particles
    if relocate_images and table.path is not None and IMAGE_NAME in particles.columns:
        particles = _relocated_image_names(particles, table.folder, path.parent)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        for name, df in (("optics", table.optics), ("particles", particles)):
            handle.write(_STAR_VERSION_LINE + "\n\n")
            handle.writelines(line + "\n" for line in loop_block_lines(name, df))
    return path


_NA = "<NA>"
_ROWS_PER_WRITE = 65536
"""Rows formatted at a time: the text of 65,536 particles (~20 MB) rather than of all of them
(1.4 GB more memory at 1,000,000 particles, ``bench/star_io.py``)."""


def loop_block(name: str, df: pd.DataFrame) -> list[str]:
    """The lines of one STAR loop block, as ``starfile.writer.loop_block(name, df,
    float_format=None)`` writes them: tab-separated; floats in their shortest form that parses
    back to the same value; missing values as ``<NA>``; strings that are empty or hold a space
    in double quotes.

    Built column by column: starfile formats cell by cell, which took 3 s per 200,000
    particles, as long as predicting them on a GPU."""
    return list(loop_block_lines(name, df))


def loop_block_lines(name: str, df: pd.DataFrame) -> Iterator[str]:
    """:func:`loop_block`'s lines, formatted ``_ROWS_PER_WRITE`` rows at a time."""
    yield from (f"data_{name}", "", "loop_")
    yield from (f"_{c} #{i}" for i, c in enumerate(df.columns, 1))
    if len(df.columns):
        for lo in range(0, len(df), _ROWS_PER_WRITE):
            block = df.iloc[lo : lo + _ROWS_PER_WRITE]
            columns = [_column_text(block[c]) for c in block.columns]
            yield from map("\t".join, zip(*columns, strict=True))
    yield from ("", "")


_REPEATS_SAMPLE = 4096


def _column_text(values: pd.Series) -> list[str]:
    """The cells of one column as text. A column whose first rows repeat values (a CTF per
    micrograph, an optics group, a class) has each distinct value formatted once: formatting
    is most of the writing time (``repr`` of a float64 costs ~0.6 µs)."""
    if len(values) > _REPEATS_SAMPLE and _same_value_same_text(values.dtype):
        head = _factorize_key(values.iloc[:_REPEATS_SAMPLE])
        if len(pd.unique(head)) <= _REPEATS_SAMPLE // 4:
            codes, _ = pd.factorize(_factorize_key(values), use_na_sentinel=False)
            # First rows of each distinct value: their cells, formatted as the column's own.
            first = np.unique(codes, return_index=True)[1]
            distinct = np.array(_plain_column_text(values.iloc[first]), dtype=object)
            return distinct[codes].tolist()
    return _plain_column_text(values)


def _same_value_same_text(dtype) -> bool:
    """Whether cells that factorize as equal are always written alike: not so for objects
    (``1``, ``1.0`` and ``True`` are equal) or other floats (``-0.0 == 0.0``)."""
    if dtype == np.float64 or isinstance(dtype, pd.StringDtype):
        return True
    return isinstance(dtype, np.dtype) and dtype.kind in "iub"


def _factorize_key(values: pd.Series):
    """What makes two cells the same text: a float64's bits (``-0.0`` is not ``0.0``; every
    NaN is written alike), the value itself otherwise."""
    if values.dtype == np.float64:
        array = values.to_numpy()
        return np.where(np.isnan(array), np.nan, array).view(np.int64)
    return values


def _plain_column_text(values: pd.Series) -> list[str]:
    if values.dtype == np.float64:
        array = values.to_numpy()
        text = list(map(repr, array.tolist()))  # repr: shortest round-trip form
        for i in np.flatnonzero(np.isnan(array)):
            text[i] = _NA
        return text
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iub":
        return list(map(str, values.to_numpy().tolist()))
    return [_cell_text(x) for x in values.tolist()]


def _cell_text(x) -> str:
    if isinstance(x, str):
        return f'"{x}"' if (not x or " " in x) else x
    if x is None or x is pd.NA or (isinstance(x, float) and x != x):
        return _NA
    return str(x)


def _relocated_image_names(particles: pd.DataFrame, old: Path, new: Path) -> pd.DataFrame:
    if Path(old).resolve() == Path(new).resolve():
        return particles
    particles = particles.copy()
    particles[IMAGE_NAME] = relocated_image_names(particles[IMAGE_NAME], old, new)
    return particles


def relocated_image_names(names: pd.Series, old_folder: Path, new_folder: Path) -> pd.Series:
    """Image names whose relative stack paths (relative to ``old_folder``) are rewritten
    relative to ``new_folder``; names with absolute paths are kept as they are."""
    old, new = Path(old_folder).resolve(), Path(new_folder).resolve()
    if old == new:
        return names.astype(str)

    def moved(stack: str) -> str | None:
        return None if Path(stack).is_absolute() else os.path.relpath(old / stack, new)

    return map_stack_paths(names, moved)


def absolute_image_names(
    names: pd.Series, folder: Path, star_path: str | os.PathLike | None = None
) -> pd.Series:
    """Image names with every stack path made absolute (resolved against ``folder``);
    ``star_path`` names the file in the error about a malformed name."""
    folder = Path(folder).resolve()
    return map_stack_paths(
        names,
        lambda stack: stack if Path(stack).is_absolute() else (folder / stack).resolve(),
        star_path,
    )


def map_stack_paths(
    names: pd.Series, new_path, star_path: str | os.PathLike | None = None
) -> pd.Series:
    """``rlnImageName`` values with each stack path ``p`` replaced by ``new_path(p)`` (a path,
    written with ``/``; or None to keep the name exactly as it is), and the index written with
    six digits, as :func:`format_image_name`. ``new_path`` is called once per distinct stack,
    not per particle: a million particles name a few thousand stacks. Raises
    :class:`InputError` for the first malformed name (:func:`split_image_names`)."""
    split = split_image_names(names, star_path)
    mapped = [new_path(s) for s in split.stacks]
    keep = np.array([m is None for m in mapped], dtype=bool)[split.codes]
    paths = np.array(["" if m is None else Path(m).as_posix() for m in mapped], dtype=object)
    moved = pd.Series(paths[split.codes], dtype=str)
    indexed = pd.Series(split.index, dtype=np.int64).astype(str).str.zfill(6) + "@" + moved
    names = names.astype(str)
    rewritten = np.where(keep, names.to_numpy(), np.where(split.has_index, indexed, moved))
    return pd.Series(rewritten, index=names.index, dtype=str)


@dataclass(frozen=True)
class ImageNames:
    """``rlnImageName`` values split (:func:`split_image_names`): per row the 1-based
    ``index`` (1 for a single-image file), whether the name has one (``has_index``) and the
    stack as a code into ``stacks`` (distinct paths, ``>`` prefix removed, in order of first
    appearance)."""

    index: np.ndarray
    has_index: np.ndarray
    codes: np.ndarray
    stacks: list[str]


def split_image_names(names: pd.Series, star_path: str | os.PathLike | None = None) -> ImageNames:
    """:func:`parse_image_name` over every row, vectorized. Raises :class:`InputError` naming
    the first malformed row (1-based) and ``star_path``."""
    text = names.astype(str).reset_index(drop=True).str.strip()
    parts = text.str.partition("@")
    has_index = (parts[1] == "@").to_numpy()
    stack = parts[2].where(has_index, parts[0]).str.lstrip(">")
    index = pd.to_numeric(parts[0].where(has_index, "1"), errors="coerce")
    bad = (index.isna() | (index < 1) | (index % 1 != 0) | (stack == "")).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        try:  # the single-name parser gives the precise message
            parse_image_name(text.iat[row])
            message, expected, found = "bad image name", None, text.iat[row]
        except InputError as exc:
            message, expected, found = exc.message, exc.expected, exc.found
        raise InputError(
            f"particle row {row + 1}: {message}",
            path=star_path,
            field=IMAGE_NAME,
            expected=expected,
            found=found,
        )
    codes, stacks = pd.factorize(stack, sort=False)
    return ImageNames(
        index.to_numpy(dtype=np.int64),
        has_index,
        codes.astype(np.int64),
        [str(u) for u in stacks],
    )


# --------------------------------------------------------------------------------------------
# Building and editing tables


def make_optics(
    pixel_size_A: float,
    image_size_px: int,
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float,
    group: int = 1,
    name: str | None = None,
) -> pd.DataFrame:
    """A one-group optics table as RELION 3.1 writes it for 2D particle images."""
    return pd.DataFrame(
        {
            OPTICS_GROUP_NAME: [name or f"opticsGroup{group}"],
            OPTICS_GROUP: [int(group)],
            IMAGE_PIXEL_SIZE: [float(pixel_size_A)],
            IMAGE_SIZE: [int(image_size_px)],
            IMAGE_DIMENSIONALITY: [2],
            VOLTAGE: [float(voltage_kV)],
            CS: [float(cs_mm)],
            AMPLITUDE_CONTRAST: [float(amplitude_contrast)],
        }
    )


def with_columns(table: ParticleTable, columns: Mapping[str, np.ndarray]) -> ParticleTable:
    """A new table with particle columns set (existing ones replaced in place, new ones last).

    Each value is an array of length N or a scalar.
    """
    particles = table.particles.copy()
    for label, values in columns.items():
        values = np.asarray(values)
        if values.ndim not in (0, 1) or (values.ndim == 1 and len(values) != len(particles)):
            raise InputError(
                "column length does not match the number of particles",
                path=table.path,
                field=label,
                expected=f"({len(particles)},)",
                found=str(values.shape),
            )
        particles[label] = values
    return replace(table, particles=particles)


def select(table: ParticleTable, indices: np.ndarray | Sequence[int]) -> ParticleTable:
    """A new table with the particle rows ``indices`` (0-based, in that order); optics kept."""
    rows = table.particles.iloc[np.asarray(indices, dtype=np.int64)].reset_index(drop=True)
    return replace(table, particles=rows)


def with_poses(
    table: ParticleTable,
    angles_deg: np.ndarray | None = None,
    shifts_A: np.ndarray | None = None,
) -> ParticleTable:
    """A new table with poses set: angles (N, 3) rot, tilt, psi in degrees; shifts (N, 2) Å."""
    columns: dict[str, np.ndarray] = {}
    if angles_deg is not None:
        angles = _shaped(table, angles_deg, 3, "angles_deg")
        columns.update({label: angles[:, i] for i, label in enumerate(ANGLES)})
    if shifts_A is not None:
        shifts = _shaped(table, shifts_A, 2, "shifts_A")
        columns.update({label: shifts[:, i] for i, label in enumerate(ORIGINS_A)})
    return with_columns(table, columns)


def with_ctf(
    table: ParticleTable,
    defocus_u_A: np.ndarray,
    defocus_v_A: np.ndarray,
    defocus_angle_deg: np.ndarray,
    phase_shift_deg: np.ndarray | None = None,
    b_factor_A2: np.ndarray | None = None,
) -> ParticleTable:
    """A new table with per-particle CTF columns (Å, degrees, Å²; RELION definitions)."""
    columns = {DEFOCUS_U: defocus_u_A, DEFOCUS_V: defocus_v_A, DEFOCUS_ANGLE: defocus_angle_deg}
    if phase_shift_deg is not None:
        columns[PHASE_SHIFT] = phase_shift_deg
    if b_factor_A2 is not None:
        columns[CTF_BFACTOR] = b_factor_A2
    return with_columns(table, {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})


def amplitude_label(mode_number: int, suffix: str = "") -> str:
    """``(7, "") -> "deephemnmaAmplitude07"``; ``(7, "Predicted") -> "…07Predicted"``."""
    return f"{AMPLITUDE_PREFIX}{int(mode_number):02d}{suffix}"


def amplitude_columns(table: ParticleTable, suffix: str = "") -> dict[int, str]:
    """``{mode_number: label}`` of the amplitude columns with exactly this suffix, by mode."""
    pattern = re.compile(rf"^{AMPLITUDE_PREFIX}(\d{{2,}}){re.escape(suffix)}$")
    found = {}
    for label in table.particles.columns:
        match = pattern.match(str(label))
        if match:
            found[int(match.group(1))] = str(label)
    return dict(sorted(found.items()))


def amplitudes(table: ParticleTable, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Normal-mode amplitudes: ``(mode_numbers (K,) int, values (N, K) float64)``, by mode.

    Reads the ``deephemnmaAmplitudeNN{suffix}`` columns (dimensionless, CONVENTIONS.md).
    InputError if there is none.
    """
    labels = amplitude_columns(table, suffix)
    if not labels:
        raise InputError(
            "no amplitude columns",
            path=table.path,
            field=f"{AMPLITUDE_PREFIX}NN{suffix}",
            expected=f"columns like {amplitude_label(7, suffix)}",
        )
    modes = np.array(list(labels), dtype=np.int64)
    values = np.stack([_numeric(table, label, table.particles[label]) for label in labels.values()])
    return modes, values.T.reshape(len(table), len(modes))


def with_amplitudes(
    table: ParticleTable,
    mode_numbers: Sequence[int] | np.ndarray,
    values: np.ndarray,
    suffix: str = "",
) -> ParticleTable:
    """A new table with ``deephemnmaAmplitudeNN{suffix}`` set from ``values`` (N, K)."""
    modes = [int(m) for m in np.asarray(mode_numbers).ravel()]
    values = _shaped(table, values, len(modes), "amplitudes")
    return with_columns(
        table, {amplitude_label(m, suffix): values[:, k] for k, m in enumerate(modes)}
    )


def _shaped(table: ParticleTable, values: np.ndarray, width: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(table), width):
        raise InputError(
            f"{what} do not match the table",
            path=table.path,
            field=what,
            expected=f"({len(table)}, {width})",
            found=str(values.shape),
        )
    return values


# --------------------------------------------------------------------------------------------
# Accessors with units


def column(table: ParticleTable, label: str, default: float | None = None) -> np.ndarray:
    """Per-particle values (N,) of ``label``, from the particles or else the optics table.

    A particle column wins over an optics column of the same name. When neither has it,
    returns ``default`` for every particle, or raises :class:`InputError` naming the column.
    """
    if label in table.particles.columns:
        return table.particles[label].to_numpy()
    if label in table.optics.columns:
        return table.optics[label].to_numpy()[_optics_rows(table)]
    if default is not None:
        return np.full(len(table), default)
    raise InputError(
        "column missing", path=table.path, field=label, expected="in data_particles or data_optics"
    )


def optional_column(table: ParticleTable, label: str) -> np.ndarray | None:
    """Per-particle float values of ``label`` (as :func:`column`), or None when the table
    does not have it."""
    try:
        return np.asarray(column(table, label), dtype=np.float64)
    except InputError:
        return None


def _optics_rows(table: ParticleTable) -> np.ndarray:
    """Row of the optics table for every particle (N,)."""
    groups = table.optics[OPTICS_GROUP].to_numpy()
    lookup = pd.Index(groups).get_indexer(table.particles[OPTICS_GROUP].to_numpy())
    if (lookup < 0).any():
        _check_optics_links(table)
    return lookup


def _numeric(table: ParticleTable, label: str, values) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            "column is not numeric", path=table.path, field=label, expected="numbers"
        ) from None
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"non-finite value in particle row {row + 1}",
            path=table.path,
            field=label,
            expected="finite numbers",
            found=str(out[row]),
        )
    return out


def _numeric_column(table: ParticleTable, label: str, default: float | None = None) -> np.ndarray:
    return _numeric(table, label, column(table, label, default))


def pixel_size_A(table: ParticleTable) -> np.ndarray:
    """Pixel size of every particle image (N,), Å, from its optics group."""
    return _numeric_column(table, IMAGE_PIXEL_SIZE)


def image_size_px(table: ParticleTable) -> np.ndarray:
    """Box size of every particle image (N,), pixels, from its optics group (``rlnImageSize``)."""
    return _numeric_column(table, IMAGE_SIZE).astype(np.int64)


def _common(table: ParticleTable, values: np.ndarray, label: str, rtol: float) -> np.ndarray:
    if len(values) == 0:
        raise InputError("no particles", path=table.path, field=label)
    if not np.allclose(values, values[0], rtol=rtol, atol=0):
        distinct = ", ".join(f"{v:g}" for v in pd.unique(values)[:5])
        raise InputError(
            "optics groups disagree where a single value is required",
            path=table.path,
            field=label,
            expected="the same value for every particle",
            found=distinct,
        )
    return values[0]


def common_pixel_size_A(table: ParticleTable, rtol: float = 1e-4) -> float:
    """The one pixel size (Å) of all particles; InputError if optics groups disagree."""
    return float(_common(table, pixel_size_A(table), IMAGE_PIXEL_SIZE, rtol))


def common_image_size_px(table: ParticleTable) -> int:
    """The one box size (pixels) of all particles; InputError if optics groups disagree."""
    return int(_common(table, image_size_px(table), IMAGE_SIZE, 0.0))


def phase_flipped(table: ParticleTable) -> bool:
    """Whether the images are CTF phase-flipped (optics ``rlnCtfDataArePhaseFlipped``)."""
    optics = table.optics
    if "rlnCtfDataArePhaseFlipped" not in optics:
        return False
    return bool(int(optics["rlnCtfDataArePhaseFlipped"].iloc[0]))


def ctf_parameters(table: ParticleTable) -> CTFParams:
    """Per-particle CTF parameters with units (RELION definitions), each field an (N,) array.

    Required: rlnDefocusU, rlnDefocusV, rlnDefocusAngle, rlnVoltage, rlnSphericalAberration,
    rlnAmplitudeContrast (InputError naming the first missing one). Optional, as in RELION:
    rlnPhaseShift (default 0°) and rlnCtfBfactor (default 0 Å²).
    """
    return CTFParams(
        defocus_u_A=_numeric_column(table, DEFOCUS_U),
        defocus_v_A=_numeric_column(table, DEFOCUS_V),
        defocus_angle_deg=_numeric_column(table, DEFOCUS_ANGLE),
        voltage_kV=_numeric_column(table, VOLTAGE),
        cs_mm=_numeric_column(table, CS),
        amplitude_contrast=_numeric_column(table, AMPLITUDE_CONTRAST),
        phase_shift_deg=_numeric_column(table, PHASE_SHIFT, default=0.0),
        bfactor_A2=_numeric_column(table, CTF_BFACTOR, default=0.0),
    )


def angles_deg(table: ParticleTable) -> np.ndarray:
    """Euler angles (N, 3): rlnAngleRot, rlnAngleTilt, rlnAnglePsi in degrees (ZYZ, RELION)."""
    return np.stack([_numeric_column(table, label) for label in ANGLES], axis=-1).reshape(-1, 3)


def shifts_A(table: ParticleTable, missing_ok: bool = False) -> np.ndarray:
    """Origins (N, 2): rlnOriginXAngst, rlnOriginYAngst in Å (CONVENTIONS.md for the sign).

    With ``missing_ok``, a table without origin columns (not yet aligned) gives zeros.
    """
    default = 0.0 if missing_ok else None
    return np.stack(
        [_numeric_column(table, label, default) for label in ORIGINS_A], axis=-1
    ).reshape(-1, 2)
