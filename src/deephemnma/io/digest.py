"""Content fingerprints of input files, for resumable jobs.

A rerun into the same output folder reuses finished chunks only if its inputs hold the same
bytes: a path alone does not say that (particles re-extracted, or modes recomputed with
another cut-off, under the same name). SHA-256 reads ~1 GB/s on one core: 0.27 s for the STAR
of 1,000,000 particles.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the bytes of the file ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
