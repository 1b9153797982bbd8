"""MRC volumes and particle stacks through ``mrcfile``: float32 arrays, sizes in Å.

Arrays follow ``mrcfile``'s order: volumes ``[z, y, x]``, stacks ``[n, y, x]``.

Particle images (:class:`ParticleImages`): each distinct stack's header is read and checked
once (lazily, ``permissive=False``); after that only the requested images are read, by
positional reads straight into the caller's array, so a batch costs what it reads, not the
size of the stacks, and the process maps nothing (memory maps kept open would count every
image read so far in its resident memory). Image paths come from
``rlnImageName`` (``"000123@stacks/a.mrcs"``, 1-based; or ``"single.mrc"`` for a file holding one
image) and are resolved

1. as given when absolute;
2. against ``root`` when one is given;
3. otherwise against the STAR file's folder, then its parent folders up to three levels (RELION
   writes paths relative to its project folder, e.g. ``Extract/job005/…`` inside
   ``Refine3D/job010/run_data.star``). The first folder where the file exists wins.

Pixel size check: the voxel size in a stack's header is compared with the STAR pixel size when
the stack is first opened. A header value of 0 means "not set" and is ignored. A relative
difference above 1 % raises :class:`InputError` (``pixel_size_check="error"``, default), or only
warns (``"warn"``), or is not checked (``"ignore"``). Differences up to 1 % are rounding in the
header and pass silently.

Writers go through a temporary file and a rename (:mod:`deephemnma.io.atomic`).
:class:`StackWriter` writes chunked stacks ``{prefix}_{chunk:05d}.mrcs`` of ``chunk_size`` images
each, so a chunk file either exists complete or not at all and a resumed run can skip it.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from deephemnma import __version__
from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_path
from deephemnma.io.star import (
    IMAGE_DIMENSIONALITY,
    IMAGE_NAME,
    IMAGE_PIXEL_SIZE,
    IMAGE_SIZE,
    OPTICS_GROUP,
    ParticleTable,
    format_image_name,
    optional_column,
    split_image_names,
)

PIXEL_SIZE_RTOL = 0.01  # header vs STAR pixel size: above 1 % is an error (see module docstring)
_PIXEL_SIZE_CHECKS = ("error", "warn", "ignore")
_PARENT_LEVELS = 3


# --------------------------------------------------------------------------------------------
# Volumes and whole stacks


def _open_error(path: Path, exc: Exception) -> InputError:
    return InputError(f"cannot read as MRC: {exc}", path=path, expected="a valid MRC file")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError("file not found", path=path, expected=what)


def read_volume(
    path: str | os.PathLike, voxel_size_A: float | None = None
) -> tuple[np.ndarray, float]:
    """Read a 3D map: ``(volume float32 [z, y, x], voxel_size_A)``.

    The voxel size comes from the header; pass ``voxel_size_A`` to override it (needed when
    the header has 0). InputError for a missing or invalid file, a non-3D map, an anisotropic
    or unset voxel size.
    """
    path = Path(path)
    _require_file(path, "an MRC volume")
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            volume = np.array(mrc.data, dtype=np.float32)
            size = mrc.voxel_size
            header_A = np.array([float(size.x), float(size.y), float(size.z)])
    except (ValueError, OSError) as exc:
        raise _open_error(path, exc) from exc
    if volume.ndim != 3:
        raise InputError(
            "not a 3D volume", path=path, expected="3 dimensions [z, y, x]", found=str(volume.shape)
        )
    if voxel_size_A is not None:
        return volume, float(voxel_size_A)
    if np.all(header_A == 0):
        raise InputError(
            "voxel size not set in the header; give it explicitly",
            path=path,
            field="voxel size",
            expected="> 0 Å",
            found="0",
        )
    if not np.allclose(header_A, header_A[0], rtol=1e-3):
        raise InputError(
            "anisotropic voxel size",
            path=path,
            field="voxel size",
            expected="the same size along x, y, z",
            found=" × ".join(f"{v:g}" for v in header_A),
        )
    return volume, float(header_A[0])


def read_stack(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a whole (small) stack: ``(images float32 [n, y, x], pixel_size_A)``.

    For large stacks use :class:`ParticleImages` or :func:`open_stack` instead. The pixel size
    is the header's (0 when unset).
    """
    path = Path(path)
    _require_file(path, "an MRC stack")
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            images = np.array(mrc.data, dtype=np.float32)
            pixel_A = float(mrc.voxel_size.x)
    except (ValueError, OSError) as exc:
        raise _open_error(path, exc) from exc
    return (images[None] if images.ndim == 2 else images), pixel_A


def _write_mrc(path: Path, data: np.ndarray, size_A: float, stack: bool) -> Path:
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if stack:
                mrc.set_image_stack()  # ispg 0: n images, not one volume
            else:
                mrc.set_volume()
            mrc.voxel_size = float(size_A)
            # mrcfile stamps a creation time into label 0; a fixed label keeps output of
            # the same data byte-identical (reproducible and resumable runs).
            mrc.header.label[0] = f"deephemnma {__version__}".encode()
            mrc.header.nlabl = 1
    return path


def write_volume(path: str | os.PathLike, volume: np.ndarray, voxel_size_A: float) -> Path:
    """Write a 3D map ``[z, y, x]`` as float32 MRC with its voxel size (Å). Atomic."""
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(
            "not a 3D volume", path=path, expected="[z, y, x]", found=str(volume.shape)
        )
    return _write_mrc(Path(path), volume, voxel_size_A, stack=False)


def write_stack(path: str | os.PathLike, images: np.ndarray, pixel_size_A: float) -> Path:
    """Write images ``[n, y, x]`` as a float32 MRC stack (``.mrcs``) with pixel size (Å). Atomic."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise InputError(
            "not an image stack", path=path, expected="[n, y, x]", found=str(images.shape)
        )
    return _write_mrc(Path(path), images, pixel_size_A, stack=True)


def open_stack(path: str | os.PathLike) -> mrcfile.mrcmemmap.MrcMemmap:
    """Memory-map an MRC file read-only (``permissive=False``); the caller closes it."""
    path = Path(path)
    _require_file(path, "an MRC stack")
    try:
        return mrcfile.mmap(path, mode="r", permissive=False)
    except (ValueError, OSError) as exc:
        raise _open_error(path, exc) from exc


# --------------------------------------------------------------------------------------------
# Particle images referenced by a STAR table


def resolve_stack_path(stack: str, star_folder: Path, root: Path | None = None) -> list[Path]:
    """Candidate locations of a stack named in ``rlnImageName``, in the order they are tried."""
    path = Path(stack)
    if path.is_absolute():
        return [path]
    if root is not None:
        return [Path(root) / path]
    folders = [star_folder, *list(star_folder.resolve().parents)[:_PARENT_LEVELS]]
    return [folder / path for folder in folders]


@dataclass(frozen=True)
class _Layout:
    """Where a checked stack's pixels lie in its file."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, int, int]


class ParticleImages:
    """Random access to the particle images of a :class:`ParticleTable`.

    ``images(indices)`` returns float32 ``[b, y, x]`` for 0-based table rows, in the requested
    order, across any number of stacks. The first time a stack is needed its MRC header is
    read and checked (mrcfile) and where its pixels lie is recorded. Each call then opens the
    stacks it needs (~1 µs each), reads each run of consecutive images with one positional
    read into the output array, and closes them: nothing stays mapped or open between calls,
    so random batches over thousands of stacks cost what they read, and memory stays bounded.
    The object can be pickled, e.g. for data-loader worker processes.

    Every problem is an :class:`InputError` that names the particle row (1-based, as in the
    file), its ``rlnImageName`` and the stack: missing stack file, index out of range,
    non-square images, size that disagrees with ``rlnImageSize``, pixel size that disagrees
    with the STAR (see the module docstring), NaN/Inf pixels (``check_finite``).
    """

    def __init__(
        self,
        table: ParticleTable,
        root: str | os.PathLike | None = None,
        pixel_size_check: str = "error",
        check_finite: bool = True,
    ) -> None:
        if pixel_size_check not in _PIXEL_SIZE_CHECKS:
            raise InputError(
                "unknown pixel size check",
                field="pixel_size_check",
                expected=" | ".join(_PIXEL_SIZE_CHECKS),
                found=str(pixel_size_check),
            )
        if IMAGE_NAME not in table.particles.columns:
            raise InputError("column missing", path=table.path, field=IMAGE_NAME)
        self.table = table
        self.root = Path(root) if root is not None else None
        self.pixel_size_check = pixel_size_check
        self.check_finite = check_finite
        # The names stay in the table's column (compact Arrow strings): a NumPy copy would hold
        # one Python string per particle, 80 MB at 1,000,000 particles.
        self._names = table.particles[IMAGE_NAME]
        split = split_image_names(self._names, table.path)
        self._index0, self._single = split.index - 1, ~split.has_index
        self._stack_code, self._stack_names = split.codes, split.stacks
        n_stacks = len(self._stack_names)
        self._expected_size = optional_column(table, IMAGE_SIZE)
        self._star_pixel_A = optional_column(table, IMAGE_PIXEL_SIZE)
        self._paths: dict[int, Path] = {}
        self._layouts: dict[int, _Layout] = {}  # stacks opened and checked once
        # Per stack, known once opened (-1 before): images, and their size in pixels.
        self._n_images = np.full(n_stacks, -1, dtype=np.int64)
        self._sizes = np.full(n_stacks, -1, dtype=np.int64)
        self.n_opened = 0  # stack headers read and checked (for tests and diagnostics)
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    @property
    def n_stacks(self) -> int:
        return len(self._stack_names)

    def stack_path(self, row: int) -> Path:
        """Resolved path of the stack holding particle ``row`` (0-based)."""
        return self._resolve(int(self._stack_code[row]), int(row))

    def images(self, indices: np.ndarray | list[int], out: np.ndarray | None = None) -> np.ndarray:
        """Images of table rows ``indices`` (0-based): float32 ``[b, y, x]``, same order.

        ``out``: a C-contiguous float32 ``[b, y, x]`` array to read into (e.g. the NumPy view
        of a pinned tensor), returned. Safe to call from several threads at once."""
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = int(rows[(rows < 0) | (rows >= len(self))][0])
            raise IndexError(f"particle index {bad} out of range for {len(self)} particles")
        if out is not None and (
            out.dtype != np.float32 or len(out) != len(rows) or not out.flags.c_contiguous
        ):
            raise ValueError(f"out must be C-contiguous float32 with {len(rows)} images")
        if rows.size == 0:
            return out if out is not None else np.empty((0, 0, 0), dtype=np.float32)
        codes, local = self._stack_code[rows], self._index0[rows]
        # Stack by stack, each in increasing index order (sequential I/O): one sort for all.
        order = np.lexsort((local, codes))
        ends = np.r_[np.flatnonzero(np.diff(codes[order])) + 1, len(rows)]
        starts = np.r_[0, ends[:-1]]
        with self._lock:  # first openings and the checks; the reads run outside
            stacks = [self._layout(int(codes[order[a]]), int(rows[order[a]])) for a in starts]
            self._check_rows(rows, codes, local)
        if out is None:
            out = np.empty((len(rows), *stacks[0].shape[1:]), dtype=np.float32)
        for layout, a, b in zip(stacks, starts, ends, strict=True):
            if layout.shape[1:] != out.shape[1:]:
                row = int(rows[order[a]])
                raise InputError(
                    f"particle row {row + 1} ({self._name(row)}): image size differs from "
                    "other particles in the same batch",
                    path=self._paths.get(int(codes[order[a]])),
                    expected=f"{out.shape[2]} × {out.shape[1]} px",
                    found=f"{layout.shape[2]} × {layout.shape[1]} px",
                )
            path = self._paths[int(codes[order[a]])]
            try:
                _gather(out, order[a:b], path, layout, local[order[a:b]])
            except OSError as exc:  # the file went away or shrank since its header was read
                raise _open_error(path, exc) from exc
        if self.check_finite:
            self._check_finite(rows, out)
        return out

    def __getitem__(self, row: int) -> np.ndarray:
        """One image ``[y, x]`` float32."""
        return self.images([row])[0]

    def close(self) -> None:
        """Nothing to release (no file stays open between calls); kept for ``with`` blocks."""

    def __enter__(self) -> ParticleImages:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- internals ------------------------------------------------------------------------
    def _where(self, row: int) -> str:
        return f"particle row {row + 1} ({IMAGE_NAME} '{self._name(row)}')"

    def _name(self, row: int) -> str:
        return str(self._names.iat[int(row)])

    def _resolve(self, code: int, row: int) -> Path:
        if code not in self._paths:
            name = self._stack_names[code]
            candidates = resolve_stack_path(name, self.table.folder, self.root)
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise InputError(
                    f"stack file not found for {self._where(row)}",
                    path=self.table.path,
                    field=IMAGE_NAME,
                    expected="a file at " + " or ".join(str(p) for p in candidates),
                    found="none",
                )
            self._paths[code] = found
        return self._paths[code]

    def _layout(self, code: int, row: int) -> _Layout:
        """Where stack ``code``'s pixels lie; its header is read and checked on first use."""
        if code not in self._layouts:
            path = self._resolve(code, row)
            self._layouts[code] = layout = self._first_open(path, row)
            self._n_images[code], self._sizes[code] = layout.shape[0], layout.shape[1]
            self.n_opened += 1
        return self._layouts[code]

    def _first_open(self, path: Path, row: int) -> _Layout:
        """Read and check the header of a stack; where its pixels lie."""
        mrc = open_stack(path)
        try:
            data = mrc.data
            if data.ndim == 2:  # a single image file
                data = data[None]
            if data.ndim != 3:
                raise InputError(
                    f"not an image stack, for {self._where(row)}",
                    path=path,
                    expected="[n, y, x]",
                    found=str(data.shape),
                )
            self._check_stack(path, data, mrc, row)
            offset = int(mrc.header.nbytes + mrc.extended_header.nbytes)
            return _Layout(offset, data.dtype, tuple(int(n) for n in data.shape))
        finally:
            mrc.close()

    def _check_stack(self, path: Path, data: np.ndarray, mrc, row: int) -> None:
        ny, nx = data.shape[1:]
        if ny != nx:
            raise InputError(
                f"non-square images, for {self._where(row)}",
                path=path,
                expected="square images",
                found=f"{nx} × {ny} px (x × y)",
            )
        if self.pixel_size_check == "ignore" or self._star_pixel_A is None:
            return
        header_A = float(mrc.voxel_size.x)
        star_A = float(self._star_pixel_A[row])
        if header_A == 0 or abs(header_A - star_A) <= PIXEL_SIZE_RTOL * star_A:
            return
        message = (
            f"pixel size in the stack header disagrees with the STAR file by more than "
            f"{PIXEL_SIZE_RTOL:.0%}, for {self._where(row)}"
        )
        if self.pixel_size_check == "warn":
            warnings.warn(
                f"{path}: {message} (header {header_A:g} Å, STAR {star_A:g} Å)", stacklevel=4
            )
            return
        raise InputError(
            message,
            path=path,
            field=IMAGE_PIXEL_SIZE,
            expected=f"{star_A:g} Å (STAR)",
            found=f"{header_A:g} Å (MRC header)",
        )

    def _check_rows(self, rows: np.ndarray, codes: np.ndarray, local: np.ndarray) -> None:
        """Every row's index within its (opened) stack, and its image size, at once."""
        n = self._n_images[codes]
        beyond = local >= n
        if beyond.any():
            j = int(np.flatnonzero(beyond)[0])
            row, count = int(rows[j]), int(n[j])
            raise InputError(
                f"image index out of range for {self._where(row)}",
                path=self._paths[int(codes[j])],
                field=IMAGE_NAME,
                expected=f"index 1…{count} (the stack has {count} image"
                f"{'s' if count != 1 else ''})",
                found=str(local[j] + 1),
            )
        several = self._single[rows] & (n > 1)
        if several.any():
            j = int(np.flatnonzero(several)[0])
            row = int(rows[j])
            raise InputError(
                f"a stack of {int(n[j])} images is named without an index, for {self._where(row)}",
                path=self._paths[int(codes[j])],
                field=IMAGE_NAME,
                expected="'<index>@<stack>'",
                found=self._name(row),
            )
        if self._expected_size is not None:
            expected, size = self._expected_size[rows], self._sizes[codes]
            wrong = ~np.isnan(expected) & (expected != size)  # NaN: size unknown for that group
            if wrong.any():
                j = int(np.flatnonzero(wrong)[0])
                row = int(rows[j])
                raise InputError(
                    f"image size disagrees with the STAR file, for {self._where(row)}",
                    path=self._paths[int(codes[j])],
                    field=IMAGE_SIZE,
                    expected=f"{int(expected[j])} px (rlnImageSize)",
                    found=f"{int(size[j])} px",
                )

    def _check_finite(self, rows: np.ndarray, out: np.ndarray) -> None:
        if np.isfinite(out.sum()):  # NaN and Inf propagate (an overflow checks in full)
            return
        finite = np.isfinite(out).all(axis=(1, 2))
        if not finite.all():
            j = int(np.flatnonzero(~finite)[0])
            row = int(rows[j])
            n_bad = int((~np.isfinite(out[j])).sum())
            raise InputError(
                f"{n_bad} NaN/Inf pixel(s) in {self._where(row)}",
                path=self._resolve(int(self._stack_code[row]), row),
                field=IMAGE_NAME,
                expected="finite pixel values",
                found=f"{n_bad} non-finite",
            )


def _gather(
    out: np.ndarray, dest: np.ndarray, path: Path, layout: _Layout, src: np.ndarray
) -> None:
    """``out[dest] = stack[src]`` for increasing ``src``: one positional read per run where
    both step by one (a whole in-order batch is one read), straight into ``out`` when the
    stack holds native float32."""
    breaks = np.flatnonzero((np.diff(src) != 1) | (np.diff(dest) != 1)) + 1
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(src)], strict=True):
            _read_run(fd, layout, int(src[a]), out[dest[a] : dest[a] + b - a])
    finally:
        os.close(fd)


_NATIVE_FLOAT32 = np.dtype(np.float32)


def _read_run(fd: int, layout: _Layout, first: int, out: np.ndarray) -> None:
    """Images ``first …`` of a stack into ``out`` (float32, C-contiguous)."""
    target = out if layout.dtype == _NATIVE_FLOAT32 else np.empty(out.shape, layout.dtype)
    view = memoryview(target).cast("B")
    offset = layout.offset + first * (view.nbytes // len(target))
    done = 0
    while done < view.nbytes:
        n = _pread_into(fd, view[done:], offset + done)
        if n == 0:
            raise OSError(f"the file ends before image {first + len(target)} (header: "
                          f"{layout.shape[0]} images)")  # fmt: skip
        done += n
    if target is not out:
        out[...] = target


def _preadv_into(fd: int, view: memoryview, offset: int) -> int:
    return os.preadv(fd, [view], offset)


def _seek_read_into(fd: int, view: memoryview, offset: int) -> int:
    # Where there is no preadv (macOS, Windows): the descriptor is this call's own, so
    # seeking cannot race another thread; one extra copy.
    os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, view.nbytes)
    view[: len(data)] = data
    return len(data)


_pread_into = _preadv_into if hasattr(os, "preadv") else _seek_read_into


def fill_image_size(table: ParticleTable, root: str | os.PathLike | None = None) -> ParticleTable:
    """Add ``rlnImageSize`` (and dimensionality 2) to optics groups that lack it.

    RELION 3.0 and some cryoSPARC exports do not record the box size; it is read from the
    header of the first stack of each optics group. Groups whose stack cannot be found are
    left as they are.
    """
    optics = table.optics.copy()
    if IMAGE_SIZE in optics.columns and optics[IMAGE_SIZE].notna().all():
        return table
    if IMAGE_NAME not in table.particles.columns or len(table) == 0:
        return table
    try:
        images = ParticleImages(table, root=root, pixel_size_check="ignore", check_finite=False)
    except InputError:  # malformed image names: reported when the images are read
        return table
    sizes = []
    groups = table.particles[OPTICS_GROUP].to_numpy()
    for group in optics[OPTICS_GROUP]:
        rows = np.flatnonzero(groups == group)
        size = np.nan
        if rows.size:
            try:
                size = float(
                    images._layout(int(images._stack_code[rows[0]]), int(rows[0])).shape[1]
                )
            except InputError:
                pass
        sizes.append(size)
    images.close()
    if np.isnan(sizes).all():
        return table  # nothing learned; do not add an empty column
    if IMAGE_SIZE in optics.columns:
        optics[IMAGE_SIZE] = optics[IMAGE_SIZE].fillna(pd.Series(sizes, index=optics.index))
    else:
        optics[IMAGE_SIZE] = sizes
    if optics[IMAGE_SIZE].notna().all():
        optics[IMAGE_SIZE] = optics[IMAGE_SIZE].astype(np.int64)
    if IMAGE_DIMENSIONALITY not in optics.columns:
        optics[IMAGE_DIMENSIONALITY] = 2
    return replace(table, optics=optics)


# --------------------------------------------------------------------------------------------
# Chunked stack writing


def chunk_filename(chunk_index: int, prefix: str = "particles") -> str:
    """``(3, "particles") -> "particles_00003.mrcs"``."""
    return f"{prefix}_{int(chunk_index):05d}.mrcs"


def existing_chunks(folder: str | os.PathLike, prefix: str = "particles") -> list[int]:
    """Indices of the complete chunk files in ``folder`` (temporary files are hidden, skipped)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{5,}})\.mrcs$")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))


def chunk_image_names(
    start: int,
    stop: int,
    chunk_size: int,
    prefix: str = "particles",
    subfolder: str | os.PathLike = "",
) -> list[str]:
    """``rlnImageName`` of global images ``start … stop-1`` in chunked stacks.

    Image ``i`` is number ``i % chunk_size + 1`` of ``{subfolder}/{prefix}_{i // chunk_size}``.
    Pure: lets a resumed run name images of chunks it skips.
    """
    names = []
    for i in range(int(start), int(stop)):
        stack = Path(subfolder) / chunk_filename(i // chunk_size, prefix)
        names.append(format_image_name(i % chunk_size + 1, stack))
    return names


class StackWriter:
    """Append images; write them as chunked stacks ``folder/{prefix}_{k:05d}.mrcs``.

    Each chunk of ``chunk_size`` images is written atomically as soon as it is full; the last,
    partial chunk on :meth:`close` (or leaving a ``with`` block without error).
    :meth:`append` returns the ``rlnImageName`` of each image, relative to ``relative_to``
    (the folder of the STAR file that will list them; default ``folder``).

    Resuming: pass ``start_index`` = number of images already written (a multiple of
    ``chunk_size``, e.g. ``len(existing_chunks(folder)) * chunk_size``); numbering continues
    from there.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        pixel_size_A: float,
        chunk_size: int = 1000,
        prefix: str = "particles",
        relative_to: str | os.PathLike | None = None,
        start_index: int = 0,
    ) -> None:
        if chunk_size < 1:
            raise InputError("chunk size must be ≥ 1", field="chunk_size", found=str(chunk_size))
        if start_index % chunk_size:
            raise InputError(
                "resuming must start at a chunk boundary",
                field="start_index",
                expected=f"a multiple of {chunk_size}",
                found=str(start_index),
            )
        self.folder = Path(folder)
        self.pixel_size_A = float(pixel_size_A)
        self.chunk_size = int(chunk_size)
        self.prefix = prefix
        base = Path(relative_to) if relative_to is not None else self.folder
        self._subfolder = Path(os.path.relpath(self.folder.resolve(), base.resolve()))
        self.n_images = int(start_index)  # global index of the next image
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._shape: tuple[int, int] | None = None
        self.written: list[Path] = []

    def append(self, images: np.ndarray) -> list[str]:
        """Add images ``[b, y, x]`` (or one ``[y, x]``); return their ``rlnImageName``."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or (self._shape is not None and images.shape[1:] != self._shape):
            raise InputError(
                "image shape differs from the stack's",
                path=self.folder,
                expected=f"[b, {self._shape[0]}, {self._shape[1]}]" if self._shape else "[b, y, x]",
                found=str(images.shape),
            )
        self._shape = images.shape[1:]
        names = chunk_image_names(
            self.n_images,
            self.n_images + len(images),
            self.chunk_size,
            self.prefix,
            self._subfolder,
        )
        while len(images):
            take = images[: self.chunk_size - self._buffered]
            images = images[len(take) :]
            self._buffer.append(take)
            self._buffered += len(take)
            self.n_images += len(take)
            if self._buffered == self.chunk_size:
                self._flush()
        return names

    def _flush(self) -> None:
        if not self._buffered:
            return
        # The buffer holds global images n_images - buffered … n_images - 1: one chunk.
        chunk = (self.n_images - self._buffered) // self.chunk_size
        path = self.folder / chunk_filename(chunk, self.prefix)
        write_stack(path, np.concatenate(self._buffer), self.pixel_size_A)
        self.written.append(path)
        self._buffer, self._buffered = [], 0

    def close(self) -> list[Path]:
        """Write the last, partial chunk; return the chunk files written by this writer."""
        self._flush()
        return self.written

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
