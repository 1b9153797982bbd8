"""Figures of the conformational space that stay readable (and fast) at a million particles.

Densities are 2D histograms drawn with a logarithmic color scale (empty cells white), never
one marker per particle; the 3D view and the group overlay draw a random subset of points
(fixed seed), colored by the local density of all particles or by group. Each function takes
arrays and a path and returns the path (PNG, written atomically).
"""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import numpy as np

from deephemnma.plotting import plt, save_figure

DENSITY_BINS = 200
GROUP_COLORS = "tab10"


def _subsample(n: int, size: int, seed: int = 0) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _ranges(coords: np.ndarray, trim: float = 0.0005) -> list[tuple[float, float]]:
    """Per-axis plot range: the trim … 1 − trim quantiles plus 5 % (outliers do not squash)."""
    out = []
    for j in range(coords.shape[1]):
        lo, hi = np.quantile(coords[:, j], [trim, 1 - trim])
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        out.append((float(lo - pad), float(hi + pad)))
    return out


def _density_panel(ax, x, y, x_range, y_range, bins: int, title: str, cmap="viridis"):
    from matplotlib.colors import LogNorm

    counts, xe, ye = np.histogram2d(x, y, bins, range=[x_range, y_range])
    masked = np.ma.masked_equal(counts.T, 0)
    vmax = max(float(counts.max()), 1.0)
    image = ax.imshow(
        masked,
        origin="lower",
        aspect="auto",
        extent=(xe[0], xe[-1], ye[0], ye[-1]),
        norm=LogNorm(vmin=1, vmax=max(vmax, 1.0001)),
        cmap=cmap,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=9)
    return image


def explained_variance_figure(ratio: np.ndarray, path: str | os.PathLike) -> Path:
    """Bars: variance fraction per PC; line: cumulative fraction."""
    ratio = np.asarray(ratio, dtype=np.float64)
    pcs = np.arange(1, len(ratio) + 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(ratio) + 2.5), 3.2))
    ax.bar(pcs, 100 * ratio, color="#4c72b0", label="per PC")
    ax.plot(pcs, 100 * np.cumsum(ratio), "o-", color="#dd8452", label="cumulative")
    for p, r in zip(pcs, ratio, strict=True):
        ax.annotate(f"{100 * r:.1f}", (p, 100 * r), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pcs)
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return save_figure(fig, path)


def density_figure(
    coords: np.ndarray,
    path: str | os.PathLike,
    source: np.ndarray | None = None,
    source_names: tuple[str, ...] | None = None,
    ratio: np.ndarray | None = None,
    bins: int = DENSITY_BINS,
) -> Path:
    """Log-density of the particles in the planes of the first three PCs (one panel per
    pair); with several sources, one more row per source. One PC: a histogram."""
    coords = np.asarray(coords)
    k = coords.shape[1]
    labels = [
        f"PC{j + 1}" + (f" ({100 * ratio[j]:.1f} %)" if ratio is not None else "") for j in range(k)
    ]
    if k == 1:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(coords[:, 0], bins=bins, color="#4c72b0", log=True)
        ax.set_xlabel(labels[0])
        ax.set_ylabel("particles")
        fig.tight_layout()
        return save_figure(fig, path)
    pairs = list(combinations(range(min(k, 3)), 2))
    rows = [("all particles", np.arange(len(coords)))]
    if source is not None and source_names is not None and len(source_names) > 1:
        rows += [(name, np.flatnonzero(source == s)) for s, name in enumerate(source_names)]
    ranges = _ranges(coords[:, : min(k, 3)])
    fig, axes = plt.subplots(
        len(rows), len(pairs), figsize=(4.0 * len(pairs), 3.4 * len(rows)), squeeze=False
    )
    for r, (name, index) in enumerate(rows):
        for c, (a, b) in enumerate(pairs):
            ax = axes[r, c]
            image = _density_panel(
                ax,
                coords[index, a],
                coords[index, b],
                ranges[a],
                ranges[b],
                bins,
                f"{name} (n = {len(index):,})",
            )
            ax.set_xlabel(labels[a], fontsize=8)
            ax.set_ylabel(labels[b], fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(image, ax=ax, label="particles per cell", shrink=0.85)
    fig.tight_layout()
    return save_figure(fig, path)


def local_density(points: np.ndarray, bins: int = 40) -> np.ndarray:
    """Particles in each point's cell of a ``bins``-per-axis histogram over all points (N,)."""
    points = np.asarray(points, dtype=np.float64)
    ranges = _ranges(points)
    counts, edges = np.histogramdd(points, bins, range=ranges)
    cell = [
        np.clip(np.searchsorted(e, points[:, j], side="right") - 1, 0, bins - 1)
        for j, e in enumerate(edges)
    ]
    return counts[tuple(cell)]


def scatter_3d_figure(
    coords: np.ndarray,
    path: str | os.PathLike,
    max_points: int = 20_000,
    seed: int = 0,
) -> Path:
    """3D scatter of a random subset of particles in PC1–3, colored by the log local density
    of all particles (dense points drawn last, on top)."""
    from matplotlib.colors import LogNorm

    coords = np.asarray(coords)[:, :3]
    density = local_density(coords)
    index = _subsample(len(coords), max_points, seed)
    index = index[np.argsort(density[index], kind="stable")]
    fig = plt.figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot(projection="3d")
    points = ax.scatter(
        coords[index, 0],
        coords[index, 1],
        coords[index, 2],
        c=np.maximum(density[index], 1),
        s=2,
        cmap="viridis",
        norm=LogNorm(),
        linewidths=0,
        alpha=0.8,
    )
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_zlabel("PC3")
    shown = f"{len(index):,} of {len(coords):,}" if len(index) < len(coords) else f"{len(index):,}"
    ax.set_title(f"{shown} particles, color: local density", fontsize=9)
    fig.colorbar(points, ax=ax, label="particles per cell", shrink=0.6, pad=0.12)
    fig.subplots_adjust(left=0.0, right=0.92, bottom=0.04, top=0.94)
    return save_figure(fig, path)


def groups_figure(
    coords: np.ndarray,
    resolved: dict[str, np.ndarray],
    path: str | os.PathLike,
    axes: tuple[int, int] = (0, 1),
    max_points_per_group: int = 2_000,
    bins: int = DENSITY_BINS,
    seed: int = 0,
) -> Path:
    """Groups over the gray log-density of all particles: a random subset of each group's
    particles in the group's color, its name at the group's mean, its size in the legend."""
    coords = np.asarray(coords)
    a, b = axes
    if coords.shape[1] == 1:
        coords = np.concatenate([coords, np.zeros_like(coords)], axis=1)
        a, b = 0, 1
    ranges = _ranges(coords[:, [a, b]])
    fig, ax = plt.subplots(figsize=(7.0, 5.4))
    _density_panel(ax, coords[:, a], coords[:, b], ranges[0], ranges[1], bins, "", "Greys")
    cmap = plt.get_cmap(GROUP_COLORS)
    n_shown = sum(min(len(rows), max_points_per_group) for rows in resolved.values())
    size = 3 if n_shown > 5000 else 12  # bigger markers when few points are drawn
    for g, (name, rows) in enumerate(resolved.items()):
        if len(rows) == 0:
            continue
        color = cmap(g % cmap.N)
        shown = rows[_subsample(len(rows), max_points_per_group, seed + g)]
        ax.scatter(
            coords[shown, a],
            coords[shown, b],
            s=size,
            color=color,
            alpha=0.6,
            linewidths=0,
            label=f"{name} ({len(rows):,})",
        )
        center = coords[rows][:, [a, b]].mean(axis=0)
        ax.annotate(
            name,
            center,
            ha="center",
            va="center",
            fontsize=8,
            weight="bold",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "alpha": 0.85},
        )
    ax.set_xlim(ranges[0])
    ax.set_ylim(ranges[1])
    ax.set_xlabel(f"PC{a + 1}")
    ax.set_ylabel(f"PC{b + 1}")
    ax.set_title(
        f"{len(resolved)} groups over the density of {len(coords):,} particles", fontsize=9
    )
    legend = ax.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    fig.tight_layout()
    return save_figure(fig, path)


def trajectory_figure(
    coords: np.ndarray,
    trajectories: dict[str, np.ndarray],
    path: str | os.PathLike,
    bins: int = DENSITY_BINS,
) -> Path:
    """The PC-space points of each trajectory (name → (F, d ≥ 2)) over the density."""
    coords = np.asarray(coords)
    if coords.shape[1] < 2:
        coords = np.concatenate([coords, np.zeros_like(coords)], axis=1)
    ranges = _ranges(coords[:, :2])
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    _density_panel(ax, coords[:, 0], coords[:, 1], ranges[0], ranges[1], bins, "", "Greys")
    cmap = plt.get_cmap(GROUP_COLORS)
    for g, (name, points) in enumerate(trajectories.items()):
        points = np.asarray(points)
        y = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
        ax.plot(points[:, 0], y, "o-", ms=3, color=cmap(g % cmap.N), label=name)
        ax.annotate(
            "",
            points[-1, :2] if points.shape[1] > 1 else (points[-1, 0], 0),
            (points[-2, 0], y[-2]),
            arrowprops={"arrowstyle": "->"},
        )
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.legend(fontsize=8)
    ax.set_title("trajectories", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
