"""Resumable chunked writing of particle stacks.

Work on N images is cut into chunks of ``chunk_size``; chunk ``i`` becomes one MRCS file,
written to a temporary name and renamed when complete, so after a crash (or ``kill -9``) a
chunk file either exists whole or not at all, and a rerun computes only the missing chunks.
Each chunk's computation must depend only on its index (seeded per chunk), so a resumed run
is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np

from deephemnma.io.mrc import chunk_filename, write_stack
from deephemnma.progress import progress_bar


def chunk_slices(n_items: int, chunk_size: int) -> list[slice]:
    return [slice(lo, min(lo + chunk_size, n_items)) for lo in range(0, n_items, chunk_size)]


def _complete(path: Path, n_images: int, image_size: int) -> bool:
    if not path.exists():
        return False
    try:
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            shape = mrc.data.shape
    except (ValueError, OSError):
        return False
    return len(shape) == 3 and shape[0] == n_images and shape[1:] == (image_size, image_size)


def write_chunked_stacks(
    n_items: int,
    chunk_size: int,
    stack_dir: Path,
    prefix: str,
    image_size: int,
    pixel_size_A: float,
    compute: Callable[[int, slice], np.ndarray],
    description: str = "images",
    progress: bool = True,
) -> list[str]:
    """Compute and write every missing chunk; return each image's ``rlnImageName`` path
    part, relative to ``stack_dir``'s parent (``000001@stacks/prefix_00000.mrcs``)."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    slices = chunk_slices(n_items, chunk_size)
    with progress_bar(n_items, description, enabled=progress) as bar:
        for index, sl in enumerate(slices):
            path = stack_dir / chunk_filename(index, prefix)
            n = sl.stop - sl.start
            if not _complete(path, n, image_size):
                images = compute(index, sl)
                write_stack(path, np.asarray(images, dtype=np.float32), pixel_size_A)
            names.extend(f"{k + 1:06d}@{stack_dir.name}/{path.name}" for k in range(n))
            bar.advance(n)
    return names
