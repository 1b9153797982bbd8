"""Resumable chunked work: particle stacks written chunk by chunk, and the job record that
says whose chunks an output folder holds.

Work on N images is cut into chunks of ``chunk_size``; chunk ``i`` becomes one MRCS file,
written to a temporary name and renamed when complete, so after a crash (or ``kill -9``) a
chunk file either exists whole or not at all, and a rerun computes only the missing chunks.
Each chunk's computation must depend only on its index (seeded per chunk), so a resumed run
is bit-identical to an uninterrupted one. A rerun may only take over the chunks of the same
job: :func:`claim_folder` compares its settings and its input files' contents with those the
folder was made with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.mrc import chunk_filename, write_stack
from deephemnma.progress import progress_bar


def claim_folder(path: Path, record: dict, what: str) -> None:
    """Write the job's ``record`` (JSON) to ``path``, or check that the one there is the
    same; InputError naming what changed otherwise. ``what`` the folder holds, for the
    message ("an alignment"). Input contents go in ``record["inputs_sha256"]``
    (:func:`deephemnma.io.digest.files_sha256`), so a changed file is named."""
    from deephemnma.io.atomic import atomic_write_text

    record = json.loads(json.dumps(record))  # tuples become lists, as in the file
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != record:
            changed = ", ".join(_changes(previous, record))
            raise InputError(
                f"output folder holds {what} with different settings or inputs (changed: "
                f"{changed}); choose another folder or delete it",
                path=path.parent,
            )
        return
    atomic_write_text(path, json.dumps(record, indent=2))


def _changes(previous: dict, record: dict) -> list[str]:
    """What differs between two job records; for the inputs, which files."""
    from deephemnma.io.digest import changed_files

    changed = []
    for key in dict.fromkeys([*previous, *record]):
        old, new = previous.get(key), record.get(key)
        if old == new:
            continue
        if key == "inputs_sha256" and isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{name} file" for name in changed_files(old, new)]
        else:
            changed.append(key)
    return changed


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
