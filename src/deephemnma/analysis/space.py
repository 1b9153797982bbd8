"""The conformational space file (``space.npz``): what ``analyze`` writes and others read.

A plain ``.npz`` (no pickles; ``numpy.load(path)`` reads it) with these arrays, N particles,
M normal modes, K principal components kept (K ≤ M):

==========================  ============  =====================================================
key                         dtype, shape  meaning
==========================  ============  =====================================================
coords                      f4 (N, K)     PC coordinates of every particle (amplitude units)
amplitudes                  f4 (N, M)     normal-mode amplitudes (dimensionless, CONVENTIONS)
mode_numbers                i4 (M,)       1-based mode numbers of the amplitude columns
components                  f8 (K, M)     unit principal axes in amplitude space (rows)
mean                        f8 (M,)       mean amplitude vector (the PCA center)
explained_variance_ratio    f8 (K,)       variance along each PC / total amplitude variance
source                      i1 (N,)       index into ``source_names`` of each particle's origin
source_names                str (S,)      e.g. ``["predicted", "stage1"]``
score                       f4 (N,)       ``deephemnmaScore`` (Stage-1 cost); NaN where absent
truth                       f4 (N, M)     ground-truth amplitudes, NaN where unmatched
                                          (only present when a truth table was given)
particles                   str ()        particle STAR whose rows the coords follow, relative
                                          to the folder of the space file
==========================  ============  =====================================================

``coords = (amplitudes − mean) @ components.T``; each component's sign is fixed so that its
largest-magnitude entry is positive (a recomputation gives the same axes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_path

REQUIRED_KEYS = (
    "coords",
    "amplitudes",
    "mode_numbers",
    "components",
    "mean",
    "explained_variance_ratio",
    "source",
    "source_names",
    "score",
    "particles",
)


@dataclass(frozen=True)
class ConformationalSpace:
    """Every particle's amplitudes and PC coordinates, and the PCA that links them.

    Shapes as in the module docstring; ``truth`` is None when no ground truth was given and
    ``particles`` is None for a space built in memory from bare arrays.
    """

    coords: np.ndarray
    amplitudes: np.ndarray
    mode_numbers: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray
    source: np.ndarray
    source_names: tuple[str, ...]
    score: np.ndarray
    truth: np.ndarray | None = None
    particles: str | None = None

    def __post_init__(self) -> None:
        n, m = self.amplitudes.shape
        k = self.components.shape[0]
        checks = {
            "coords": (self.coords.shape, (n, k)),
            "components": (self.components.shape, (k, m)),
            "mode_numbers": (self.mode_numbers.shape, (m,)),
            "mean": (self.mean.shape, (m,)),
            "explained_variance_ratio": (self.explained_variance_ratio.shape, (k,)),
            "source": (self.source.shape, (n,)),
            "score": (self.score.shape, (n,)),
        }
        if self.truth is not None:
            checks["truth"] = (self.truth.shape, (n, m))
        for name, (found, expected) in checks.items():
            if tuple(found) != expected:
                raise InputError(
                    "conformational space arrays do not agree",
                    field=name,
                    expected=str(expected),
                    found=str(tuple(found)),
                )
        if n and (self.source.min() < 0 or self.source.max() >= len(self.source_names)):
            raise InputError(
                "source index out of range",
                field="source",
                expected=f"0..{len(self.source_names) - 1}",
                found=f"{self.source.min()}..{self.source.max()}",
            )

    @property
    def n_particles(self) -> int:
        return int(self.amplitudes.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def pc_std(self) -> np.ndarray:
        """Standard deviation of the particles along each PC (K,), amplitude units."""
        return self.coords.astype(np.float64).std(axis=0)

    def to_coords(self, amplitudes: np.ndarray) -> np.ndarray:
        """PC coordinates (..., K) of amplitude vectors (..., M)."""
        return (np.asarray(amplitudes, dtype=np.float64) - self.mean) @ self.components.T

    def to_amplitudes(self, coords: np.ndarray) -> np.ndarray:
        """Amplitudes (..., M) of points (..., d ≤ K) in PC space (missing PCs at 0)."""
        coords = np.asarray(coords, dtype=np.float64)
        d = coords.shape[-1]
        if d > self.n_components:
            raise InputError(
                "more PC coordinates than components kept",
                field="coords",
                expected=f"≤ {self.n_components} columns",
                found=str(d),
            )
        return self.mean + coords @ self.components[:d]


def save_space(path: str | os.PathLike, space: ConformationalSpace) -> Path:
    """Write ``space`` as ``space.npz`` (module docstring); temporary file, then rename."""
    path = Path(path)
    arrays = {
        "coords": np.asarray(space.coords, dtype=np.float32),
        "amplitudes": np.asarray(space.amplitudes, dtype=np.float32),
        "mode_numbers": np.asarray(space.mode_numbers, dtype=np.int32),
        "components": np.asarray(space.components, dtype=np.float64),
        "mean": np.asarray(space.mean, dtype=np.float64),
        "explained_variance_ratio": np.asarray(space.explained_variance_ratio, dtype=np.float64),
        "source": np.asarray(space.source, dtype=np.int8),
        "source_names": np.asarray(list(space.source_names), dtype=str),
        "score": np.asarray(space.score, dtype=np.float32),
        "particles": np.array("" if space.particles is None else str(space.particles)),
    }
    if space.truth is not None:
        arrays["truth"] = np.asarray(space.truth, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # a handle: numpy would append ".npz" to a bare name
    return path


def _read_npz(path: Path, keys=None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (only ``keys`` when given); InputError when unreadable."""
    if not path.is_file():
        raise InputError("space file not found", path=path, expected="space.npz from analyze")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files if keys is None or name in keys}
    except Exception as exc:  # zip / npy errors: not our file
        raise InputError(f"not a readable .npz ({exc})", path=path) from None


def load_coords(path: str | os.PathLike, n_particles: int) -> np.ndarray:
    """Only the reduced-space coordinates (N, K) of a space file: any .npz with ``coords``
    for ``n_particles`` rows (what polygon groups need)."""
    path = Path(path)
    arrays = _read_npz(path, ("coords",))
    if "coords" not in arrays:
        raise InputError("no reduced-space coordinates", path=path, field="coords")
    coords = np.asarray(arrays["coords"])
    if coords.ndim != 2 or len(coords) != n_particles:
        raise InputError(
            "reduced-space coordinates do not match the particle table",
            path=path,
            field="coords",
            expected=f"({n_particles}, K)",
            found=str(coords.shape),
        )
    return coords


def load_space(path: str | os.PathLike) -> ConformationalSpace:
    """Read a file written by :func:`save_space`; InputError naming what is wrong."""
    path = Path(path)
    arrays = _read_npz(path)
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise InputError(
            "not a conformational space file",
            path=path,
            expected="arrays " + ", ".join(REQUIRED_KEYS),
            found="missing " + ", ".join(missing),
        )
    particles = str(arrays["particles"]) or None
    try:
        return ConformationalSpace(
            coords=arrays["coords"],
            amplitudes=arrays["amplitudes"],
            mode_numbers=arrays["mode_numbers"],
            components=arrays["components"],
            mean=arrays["mean"],
            explained_variance_ratio=arrays["explained_variance_ratio"],
            source=arrays["source"],
            source_names=tuple(str(s) for s in arrays["source_names"]),
            score=arrays["score"],
            truth=arrays.get("truth"),
            particles=particles,
        )
    except InputError as exc:
        raise InputError(
            exc.message, path=path, field=exc.field, expected=exc.expected, found=exc.found
        ) from None


def particles_path(space_path: str | os.PathLike, space: ConformationalSpace) -> Path | None:
    """The particle STAR of a space file, resolved against the space file's folder."""
    if not space.particles:
        return None
    return Path(space_path).parent / space.particles
