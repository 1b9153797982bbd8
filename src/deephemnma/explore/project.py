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


_REQUIRED = ("coords", "amplitudes", "mode_numbers", "components", "mean")


def load_space(path: str | os.PathLike) -> Space:
    """Read ``space.npz`` (module docstring); optional arrays get neutral defaults."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "reduced-space file not found", path=path, expected="space.npz written by analyze"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read as .npz: {exc}", path=path) from exc
    missing = [name for name in _REQUIRED if name not in arrays]
    if missing:
        raise InputError(
            "missing arrays", path=path, expected=", ".join(_REQUIRED), found=", ".join(missing)
        )
    coords = np.ascontiguousarray(arrays["coords"], dtype=np.float32)
    amplitudes = np.asarray(arrays["amplitudes"], dtype=np.float32)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(
            "coords must be (N, K) with K ≥ 2",
            path=path,
            field="coords",
            found=str(coords.shape),
        )
    n = len(coords)
    m = amplitudes.shape[1] if amplitudes.ndim == 2 else -1
    if amplitudes.shape != (n, m) or m < 1:
        raise InputError(
            "amplitudes must be (N, M)",
            path=path,
            field="amplitudes",
            expected=f"({n}, M)",
            found=str(amplitudes.shape),
        )
    source = np.asarray(arrays.get("source", np.zeros(n)), dtype=np.int8)
    names = arrays.get("source_names", np.array(["all"]))
    score = np.asarray(arrays.get("score", np.full(n, np.nan)), dtype=np.float32)
    truth = arrays.get("truth")
    for name, value, shape in (
        ("source", source, (n,)),
        ("score", score, (n,)),
        ("truth", truth, (n, m)),
        ("mode_numbers", arrays["mode_numbers"], (m,)),
        ("components", arrays["components"], (coords.shape[1], m)),
        ("mean", arrays["mean"], (m,)),
    ):
        if value is not None and np.shape(value) != shape:
            raise InputError(
                f"{name} has the wrong shape",
                path=path,
                field=name,
                expected=str(shape),
                found=str(np.shape(value)),
            )
    particles = arrays.get("particles")
    particles = str(particles) if particles is not None and str(particles) else None
    ratio = arrays.get("explained_variance_ratio", np.full(coords.shape[1], np.nan))
    return Space(
        coords=coords,
        amplitudes=amplitudes,
        mode_numbers=np.asarray(arrays["mode_numbers"], dtype=np.int64),
        components=np.asarray(arrays["components"], dtype=np.float64),
        mean=np.asarray(arrays["mean"], dtype=np.float64),
        explained_variance_ratio=np.asarray(ratio, dtype=np.float64),
        source=source,
        source_names=tuple(str(s) for s in np.atleast_1d(names)),
        score=score,
        truth=None if truth is None else np.asarray(truth, dtype=np.float32),
        particles=None if particles is None else (path.parent / particles).resolve(),
    )
