"""Figures of Stage 1 results: parameter and score distributions; the outlier filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deephemnma.plotting import histogram_grid, plt, save_figure


def summary_figure(table, path: str | Path) -> Path:
    """Histograms of amplitudes, Euler angles, shifts and scores of an aligned STAR."""
    from deephemnma.io.star import amplitudes, angles_deg, shifts_A

    numbers, amps = amplitudes(table)
    columns = {f"amplitude {int(m)}": amps[:, k] for k, m in enumerate(numbers)}
    angles = angles_deg(table)
    for k, name in enumerate(("rot (°)", "tilt (°)", "psi (°)")):
        columns[name] = angles[:, k]
    shifts = shifts_A(table)
    columns["shift x (Å)"], columns["shift y (Å)"] = shifts[:, 0], shifts[:, 1]
    if "deephemnmaScore" in table.particles:
        columns["score (NCC)"] = table.particles["deephemnmaScore"].to_numpy()
    return histogram_grid(columns, f"Stage 1: {len(table)} particles", path)


def filter_figure(
    amplitudes: np.ndarray,
    distances: np.ndarray,
    keep: np.ndarray,
    threshold: float | None,
    path: str | Path,
) -> Path:
    """Kept and removed particles in the plane of the first two modes, and the distances."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if amplitudes.shape[1] >= 2:
        ax1.scatter(amplitudes[keep, 0], amplitudes[keep, 1], s=3, alpha=0.5, label="kept")
        ax1.scatter(amplitudes[~keep, 0], amplitudes[~keep, 1], s=6, c="#c44e52", label="removed")
        ax1.set_xlabel("amplitude, first mode")
        ax1.set_ylabel("amplitude, second mode")
        ax1.legend(fontsize=8)
    ax2.hist(distances, bins=60, color="#4c72b0")
    if threshold is not None:
        ax2.axvline(threshold, color="#c44e52", ls="--", label=f"threshold {threshold:g}")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("Mahalanobis distance of the amplitudes")
    fig.suptitle(f"kept {int(keep.sum())} of {len(keep)}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
