"""Write files so that a reader sees either the old file, the complete new file, or nothing.

Every writer in :mod:`deephemnma.io` goes through :func:`atomic_path`: the data are written to a
hidden temporary file in the destination folder, flushed to disk, then renamed onto the final
name (``os.replace`` is atomic within one file system). An interrupted run therefore never
leaves a truncated output under its final name, which is what makes chunked steps resumable:
a chunk file either exists complete or not at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique hidden name in the folder of ``path`` (same file system, so rename is atomic).

    The suffix of ``path`` is kept last so that libraries that look at extensions still see it.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _fsync_file(path: Path) -> None:
    # Flush the data before the rename, so a crash cannot leave a complete name over empty blocks.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit rename it onto ``path``.

    The destination folder is created if needed. If the body raises, the temporary file is
    removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
