"""Principal component analysis of normal-mode amplitudes (paper §2.3).

The amplitudes of all modes are in the same dimensionless unit (CONVENTIONS.md), so the PCA
is of the raw amplitudes (centered, not scaled): distances in PC space are distances between
amplitude vectors, and a PC coordinate is an amplitude along a unit direction in mode space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deephemnma.analysis.space import ConformationalSpace
from deephemnma.errors import InputError


@dataclass(frozen=True)
class PCAFit:
    """A fitted PCA: ``coords = (amplitudes − mean) @ components.T``.

    mean: (M,); components: (K, M) orthonormal rows, sign fixed (largest-magnitude entry
    positive); explained_variance: (K,) variance along each PC (amplitude²);
    explained_variance_ratio: (K,) that variance over the total variance of the M amplitudes.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, amplitudes: np.ndarray) -> np.ndarray:
        """PC coordinates (N, K) of amplitudes (N, M)."""
        return (np.asarray(amplitudes, dtype=np.float64) - self.mean) @ self.components.T


def fit_pca(amplitudes: np.ndarray, n_components: int | None = None, seed: int = 0) -> PCAFit:
    """PCA of amplitudes (N, M) keeping ``n_components`` (default all M) axes.

    Exact (full SVD of the M × M covariance through scikit-learn); the cost is linear in N,
    a million particles take well under a second. Raises InputError for fewer than two
    particles, non-finite values or ``n_components`` outside 1..M.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(amplitudes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InputError(
            "PCA needs at least two particles with at least one amplitude",
            field="amplitudes",
            expected="(N ≥ 2, M ≥ 1)",
            found=str(x.shape),
        )
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputError(
            f"non-finite amplitude in row {row + 1}", field="amplitudes", expected="finite"
        )
    m = x.shape[1]
    k = m if n_components is None else int(n_components)
    if not 1 <= k <= min(m, x.shape[0]):
        raise InputError(
            "invalid number of principal components",
            field="n_components",
            expected=f"1..{min(m, x.shape[0])} (number of modes)",
            found=str(n_components),
        )
    pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(x)
    components = pca.components_.copy()
    # Deterministic sign: the largest-magnitude entry of each axis is positive.
    biggest = components[np.arange(k), np.abs(components).argmax(axis=1)]
    components *= np.where(biggest < 0, -1.0, 1.0)[:, None]
    total = float(x.var(axis=0, ddof=1).sum())
    variance = pca.explained_variance_.astype(np.float64)
    ratio = variance / total if total > 0 else np.zeros(k)
    return PCAFit(pca.mean_.astype(np.float64), components, variance, ratio)


def fit_space(
    amplitudes: np.ndarray,
    mode_numbers: Sequence[int] | np.ndarray,
    n_components: int | None = None,
    source: np.ndarray | None = None,
    source_names: Sequence[str] = ("predicted",),
    score: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    particles: str | None = None,
) -> ConformationalSpace:
    """The conformational space of a set of particles: PCA of their amplitudes (N, M).

    source: (N,) index into ``source_names`` (default all 0); score: (N,) (default NaN);
    truth: (N, M) ground-truth amplitudes or None; particles: the STAR path to record.
    """
    x = np.asarray(amplitudes, dtype=np.float64)
    fit = fit_pca(x, n_components)
    n = x.shape[0]
    return ConformationalSpace(
        coords=fit.transform(x).astype(np.float32),
        amplitudes=x.astype(np.float32),
        mode_numbers=np.asarray(mode_numbers, dtype=np.int32).ravel(),
        components=fit.components,
        mean=fit.mean,
        explained_variance_ratio=fit.explained_variance_ratio,
        source=np.zeros(n, np.int8) if source is None else np.asarray(source, dtype=np.int8),
        source_names=tuple(str(s) for s in source_names),
        score=np.full(n, np.nan, np.float32) if score is None else np.asarray(score, np.float32),
        truth=None if truth is None else np.asarray(truth, dtype=np.float32),
        particles=particles,
    )


def subspace_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the row spaces of a (p, M) and b (q, M)."""
    from scipy.linalg import subspace_angles

    return np.degrees(np.sort(subspace_angles(np.asarray(a).T, np.asarray(b).T)))
