"""Content fingerprints of input files, for resumable jobs.

A rerun into the same output folder reuses finished chunks only if its inputs hold the same
bytes: a path alone does not say that (particles re-extracted, or modes recomputed with
another cut-off, under the same name). SHA-256 reads ~1 GB/s on one core: 0.27 s for the STAR
of 1,000,000 particles.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["changed_files", "file_sha256", "files_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the bytes of the file ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(files: dict[str, str | os.PathLike | None]) -> dict[str, str]:
    """:func:`file_sha256` of each named file that is given (None: skipped); InputError
    naming the file that cannot be read."""
    from deephemnma.errors import InputError

    digests = {}
    for name, path in files.items():
        if path is None:
            continue
        try:
            digests[name] = file_sha256(path)
        except OSError as exc:
            raise InputError(f"cannot read the {name} file: {exc.strerror}", path=path) from None
    return digests


def changed_files(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Names whose fingerprints differ between two :func:`files_sha256` results."""
    return [name for name in dict.fromkeys([*old, *new]) if old.get(name) != new.get(name)]
