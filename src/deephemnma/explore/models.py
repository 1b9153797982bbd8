"""Atomic models for the page: a group's centroid, and the reference along a drawn path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.pdb import short_chain_ids, write_models
from deephemnma.nma.modes import Modes, deform


def modes_for(modes: Modes, mode_numbers: np.ndarray) -> Modes:
    """The modes the space's amplitude columns refer to, in the space's order."""
    return modes.select([int(m) for m in mode_numbers])


def models_pdb(modes: Modes, amplitudes: np.ndarray) -> str:
    """PDB text of the reference deformed by each row of ``amplitudes`` (F, K): F models."""
    coords = deform(modes, np.atleast_2d(np.asarray(amplitudes, dtype=np.float64)))
    with tempfile.TemporaryDirectory(prefix="deephemnma-explore-") as folder:
        # Display only: long chain names (large complexes) shortened so PDB can hold them.
        structure = short_chain_ids(modes.structure)
        path = write_models(Path(folder) / "models.pdb", structure, coords)
        return path.read_text()


def resample_path(points: np.ndarray, n_frames: int) -> np.ndarray:
    """``n_frames`` points evenly spaced by arc length along the polyline ``points`` (V, 2)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 2 or n_frames < 2:
        raise InputError(
            "a path needs at least 2 points and 2 frames",
            field="points",
            found=f"{len(points)} points, {n_frames} frames",
        )
    step = np.linalg.norm(np.diff(points, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(step)])
    if along[-1] == 0:
        return np.repeat(points[:1], n_frames, axis=0)
    targets = np.linspace(0.0, along[-1], n_frames)
    return np.stack([np.interp(targets, along, points[:, d]) for d in range(2)], axis=1)


def path_coords(points: np.ndarray, axes: tuple[int, int], n_axes: int) -> np.ndarray:
    """Full (F, K) space coordinates of path points drawn in the plane of ``axes``.

    The other principal axes are at 0, i.e. at the mean of the data along them.
    """
    coords = np.zeros((len(points), n_axes))
    coords[:, axes[0]] = points[:, 0]
    coords[:, axes[1]] = points[:, 1]
    return coords
