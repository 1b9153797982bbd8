"""The project directory as the explorer sees it: where each file is, and the reduced space.

``analyze`` writes ``PROJECT/analyze/space.npz`` with these arrays (N particles, K principal
axes, M normal modes):

- ``coords`` (N, K) float32: coordinates along the principal axes;
- ``amplitudes`` (N, M) float32: normal-mode amplitudes (dimensionless);
- ``mode_numbers`` (M,) int: 1-based mode numbers of the amplitude columns;
- ``components`` (K, M) float64, ``mean`` (M,) float64: ``amplitudes ≈ mean + coords @ components``;
- ``explained_variance_ratio`` (K,) float64;
- ``source`` (N,) int8 indexing ``source_names`` (e.g. ``["stage1", "predicted"]``);
- ``score`` (N,) float32, NaN where unknown;
- ``truth`` (N, M) float32, optional: ground-truth amplitudes (simulations);
- ``particles``: the particle STAR whose rows the coordinates follow, relative to the space file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError

SPACE = Path("analyze/space.npz")
GROUPS = Path("analyze/groups.json")
MODES = Path("nma/modes.npz")
RECONSTRUCT = Path("reconstruct")
EXPORT = Path("export")


@dataclass(frozen=True)
class ProjectPaths:
    """Every file the explorer reads or writes, as absolute paths.

    root: the project directory; nothing outside it is served or written through the API
        (the paths below may lie elsewhere only when given on the command line).
    """

    root: Path
    space: Path
    groups: Path
    modes: Path
    reconstruct: Path
    export: Path


def project_paths(
    root: str | os.PathLike,
    space: str | os.PathLike | None = None,
    groups: str | os.PathLike | None = None,
    modes: str | os.PathLike | None = None,
) -> ProjectPaths:
    """Paths of a project; relative overrides are taken relative to the current directory."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError("project directory not found", path=root)

    def pick(given, default: Path) -> Path:
        return Path(given).resolve() if given is not None else root / default

    return ProjectPaths(
        root=root,
        space=pick(space, SPACE),
        groups=pick(groups, GROUPS),
        modes=pick(modes, MODES),
        reconstruct=root / RECONSTRUCT,
        export=root / EXPORT,
    )


@dataclass(frozen=True)
class Space:
    """The reduced conformational space (see the module docstring for shapes and units)."""

    coords: np.ndarray
    amplitudes: np.ndarray
    mode_numbers: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray
    source: np.ndarray
    source_names: tuple[str, ...]
    score: np.ndarray
    truth: np.ndarray | None
    particles: Path | None  # absolute path of the particle STAR

    @property
    def n_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_axes(self) -> int:
        return int(self.coords.shape[1])

    def amplitudes_at(self, pc_coords: np.ndarray) -> np.ndarray:
        """Amplitudes (..., M) of points given by their coordinates (..., K) in the space."""
        return self.mean + np.asarray(pc_coords, dtype=np.float64) @ self.components


def load_space(path: str | os.PathLike) -> Space:
    """Read ``space.npz`` with :func:`deephemnma.analysis.space.load_space` (the one reader
    of the format), the particle STAR resolved to an absolute path."""
    from deephemnma.analysis.space import load_space as read_space
    from deephemnma.analysis.space import particles_path

    space = read_space(path)
    if space.coords.ndim != 2 or space.coords.shape[1] < 2:
        raise InputError(
            "the explorer needs at least 2 principal axes",
            path=path,
            field="coords",
            found=str(space.coords.shape),
        )
    particles = particles_path(path, space)
    return Space(
        coords=np.ascontiguousarray(space.coords, dtype=np.float32),
        amplitudes=np.asarray(space.amplitudes, dtype=np.float32),
        mode_numbers=np.asarray(space.mode_numbers, dtype=np.int64),
        components=np.asarray(space.components, dtype=np.float64),
        mean=np.asarray(space.mean, dtype=np.float64),
        explained_variance_ratio=np.asarray(space.explained_variance_ratio, dtype=np.float64),
        source=np.asarray(space.source, dtype=np.int8),
        source_names=tuple(space.source_names),
        score=np.asarray(space.score, dtype=np.float32),
        truth=None if space.truth is None else np.asarray(space.truth, dtype=np.float32),
        particles=None if particles is None else particles.resolve(),
    )
