"""Outlier removal after Stage 1 (paper §3.1.3): Mahalanobis distance on the amplitudes
(threshold 3.2 kept 18,055 of 20,000 images there), optionally a minimum score."""

from __future__ import annotations

import numpy as np

from deephemnma.errors import InputError


def mahalanobis_distances(values: np.ndarray) -> np.ndarray:
    """Distance of each row of ``values`` (N, K) from the mean, in units of the sample
    covariance (pseudo-inverse, so a degenerate direction does not blow up)."""
    if values.ndim != 2 or values.shape[0] < 2:
        raise InputError(
            "need at least two particles with amplitudes to compute distances",
            field="amplitudes",
            found=str(values.shape),
        )
    centered = values - values.mean(0)
    inverse = np.linalg.pinv(np.atleast_2d(np.cov(values, rowvar=False)))
    return np.sqrt(np.einsum("ni,ij,nj->n", centered, inverse, centered))


def keep_mask(
    amplitudes: np.ndarray | None,
    score: np.ndarray | None,
    mahalanobis: float | None,
    min_score: float | None,
) -> np.ndarray:
    """Particles to keep: within ``mahalanobis`` and with score ≥ ``min_score`` (each
    criterion optional)."""
    n = len(score) if score is not None else len(amplitudes)
    keep = np.ones(n, dtype=bool)
    if mahalanobis is not None:
        keep &= mahalanobis_distances(amplitudes) <= mahalanobis
    if min_score is not None:
        keep &= score >= min_score
    return keep
