"""Automatic groups of particles in the reduced (PC) space.

Four methods, each returning a :class:`~deephemnma.groups.GroupSet` of index groups (the
group-file format of :mod:`deephemnma.groups`), with each group's center in PC units in the
group's ``center`` field:

- :func:`kmeans_groups` — k-means on the first ``n_dims`` PCs (``kmeans1``, … ordered along
  PC1). Every particle is in exactly one group.
- :func:`gmm_groups` — Gaussian mixture (full covariances) on the same PCs, each particle in
  its most probable component (``gmm1``, … ordered along PC1).
- :func:`density_peak_groups` — the K densest, well-separated regions of the 2D density
  (the paper's "ten dense regions", §3.1.3): peaks of a smoothed 2D histogram picked in order
  of density with a minimum separation; a group is the particles within a radius of its peak
  (default: half the distance to the nearest other peak, so groups never overlap). Particles
  between dense regions belong to no group. Names ``peak1`` (densest), ``peak2``, …
- :func:`axis_bins` — contiguous bins along one PC, as wide as equal as the data allow, each
  with at least ``min_per_group`` particles (the paper's ribosome analysis, §3.2.5: seven
  groups of ≥ 900 along PC1). Names ``pc1_bin1``, … from low to high PC values.

k-means and the mixture are fitted on at most ``max_fit`` particles (a random subset, fixed by
``seed``) and then assign every particle, so a million particles take a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deephemnma.errors import InputError
from deephemnma.groups import Group, GroupSet

METHODS = ("kmeans", "gmm", "density", "bins")
MAX_FIT = 100_000


def _check(coords: np.ndarray, n_groups: int, n_dims: int | Sequence[int]) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or len(coords) == 0:
        raise InputError("no particle coordinates", field="coords", found=str(coords.shape))
    if int(n_groups) < 1 or int(n_groups) > len(coords):
        raise InputError(
            "invalid number of groups",
            field="n_groups",
            expected=f"1..{len(coords)} (number of particles)",
            found=str(n_groups),
        )
    dims = list(range(n_dims)) if isinstance(n_dims, int) else list(n_dims)
    if not dims or max(dims) >= coords.shape[1] or min(dims) < 0:
        raise InputError(
            "the reduced space has fewer PCs than requested",
            field="n_dims",
            expected=f"PCs within 1..{coords.shape[1]}",
            found=str([d + 1 for d in dims]),
        )
    return np.asarray(coords[:, dims], dtype=np.float64)


def _fit_subset(x: np.ndarray, max_fit: int, seed: int) -> np.ndarray:
    if len(x) <= max_fit:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=max_fit, replace=False))]


def _labelled_groups(
    labels: np.ndarray, centers: np.ndarray, prefix: str, source: str, n_total: int
) -> GroupSet:
    """Groups from labels 0..K−1 with centers (K, d), renumbered along the first axis."""
    order = np.argsort(centers[:, 0], kind="stable")
    groups = []
    for rank, label in enumerate(order, start=1):
        groups.append(
            Group(
                f"{prefix}{rank}",
                indices=np.flatnonzero(labels == label),
                source=source,
                extra={"center": [round(float(c), 6) for c in centers[label]]},
            )
        )
    return GroupSet(tuple(groups), n_particles=n_total)


def kmeans_groups(
    coords: np.ndarray,
    n_groups: int,
    n_dims: int = 2,
    seed: int = 0,
    max_fit: int = MAX_FIT,
) -> GroupSet:
    """k-means (k-means++ start, 2 restarts) on the first ``n_dims`` PCs of coords (N, K)."""
    from sklearn.cluster import KMeans

    x = _check(coords, n_groups, n_dims)
    model = KMeans(n_clusters=int(n_groups), n_init=2, random_state=seed)
    model.fit(_fit_subset(x, max_fit, seed))
    labels = model.predict(x)
    return _labelled_groups(labels, model.cluster_centers_, "kmeans", "kmeans", len(x))


def gmm_groups(
    coords: np.ndarray,
    n_groups: int,
    n_dims: int = 2,
    seed: int = 0,
    max_fit: int = MAX_FIT,
) -> GroupSet:
    """Gaussian mixture (full covariances, k-means start) on the first ``n_dims`` PCs."""
    from sklearn.mixture import GaussianMixture

    x = _check(coords, n_groups, n_dims)
    model = GaussianMixture(
        n_components=int(n_groups), covariance_type="full", n_init=1, random_state=seed
    )
    model.fit(_fit_subset(x, max_fit, seed))
    labels = model.predict(x)
    return _labelled_groups(labels, model.means_, "gmm", "gmm", len(x))


def smoothed_histogram(
    points: np.ndarray, bins: int = 128, smooth_bins: float = 1.5, trim: float = 0.001
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed 2D histogram of points (N, 2): ``(counts (bins, bins), x_edges, y_edges)``.

    The range spans the ``trim`` … 1 − ``trim`` quantiles of each axis plus 5 % on each side
    (so a few far outliers do not squeeze the bulk into a few cells); counts[i, j] is the
    (Gaussian-smoothed, σ = ``smooth_bins`` cells) number of points in x bin i, y bin j.
    """
    from scipy.ndimage import gaussian_filter

    ranges = []
    for axis in range(2):
        lo, hi = np.quantile(points[:, axis], [trim, 1 - trim])
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ranges.append((lo - pad, hi + pad))
    counts, x_edges, y_edges = np.histogram2d(points[:, 0], points[:, 1], bins, range=ranges)
    if smooth_bins > 0:
        counts = gaussian_filter(counts, smooth_bins, mode="constant")
    return counts, x_edges, y_edges


def _pick_peaks(
    counts: np.ndarray, centers_xy: np.ndarray, n_peaks: int, min_separation: float
) -> np.ndarray:
    """Cells (flat indices) of up to n_peaks peaks ≥ min_separation apart: local maxima first
    (densest first), then other cells by density (ridges without separate maxima)."""
    from scipy.ndimage import maximum_filter

    flat = counts.ravel()
    is_max = (counts == maximum_filter(counts, size=3, mode="constant")) & (counts > 0)
    maxima = np.flatnonzero(is_max.ravel())
    maxima = maxima[np.argsort(-flat[maxima], kind="stable")]
    others = np.flatnonzero(~is_max.ravel() & (flat > 0))
    others = others[np.argsort(-flat[others], kind="stable")]
    chosen: list[int] = []
    for candidates in (maxima, others):
        for cell in candidates:
            if len(chosen) == n_peaks:
                return np.array(chosen)
            if chosen:
                d = np.linalg.norm(centers_xy[chosen] - centers_xy[cell], axis=1)
                if d.min() < min_separation:
                    continue
            chosen.append(int(cell))
    return np.array(chosen)


def density_peak_groups(
    coords: np.ndarray,
    n_groups: int,
    axes: tuple[int, int] = (0, 1),
    min_separation: float | None = None,
    radius: float | None = None,
    bins: int = 128,
    smooth_bins: float = 1.5,
) -> GroupSet:
    """The ``n_groups`` densest well-separated regions of the plane of two PCs (module doc).

    min_separation: smallest distance between two peaks, PC units. Default: the side of a
        square of area A / K, A the area of the densest cells that hold 90 % of the particles
        (peaks on a uniform ridge then sit about one ridge width apart), lowered step by step
        until K peaks fit; a given value that does not fit K peaks is an InputError.
    radius: group radius around each peak, PC units; default half the distance from each
        peak to its nearest other peak. A particle in no group's disk is left out.
    """
    x = _check(coords, n_groups, list(axes))
    counts, x_edges, y_edges = smoothed_histogram(x, bins, smooth_bins)
    xc = 0.5 * (x_edges[1:] + x_edges[:-1])
    yc = 0.5 * (y_edges[1:] + y_edges[:-1])
    centers_xy = np.stack(np.meshgrid(xc, yc, indexing="ij"), axis=-1).reshape(-1, 2)
    k = int(n_groups)
    if min_separation is None:
        cell_area = (xc[1] - xc[0]) * (yc[1] - yc[0])
        ordered = np.sort(counts.ravel())[::-1]
        n_cells = int(np.searchsorted(np.cumsum(ordered), 0.9 * ordered.sum())) + 1
        separation = float(np.sqrt(n_cells * cell_area / k))
        peaks = _pick_peaks(counts, centers_xy, k, separation)
        while len(peaks) < k and separation > 1e-9:
            separation *= 0.8
            peaks = _pick_peaks(counts, centers_xy, k, separation)
    else:
        peaks = _pick_peaks(counts, centers_xy, k, float(min_separation))
    if len(peaks) < k:
        raise InputError(
            f"only {len(peaks)} dense regions are at least {min_separation:g} apart",
            field="min_separation",
            expected=f"a smaller separation for {k} groups",
            found=str(min_separation),
        )
    centers = centers_xy[peaks]
    # A peak is a histogram cell center: within half a cell of the density maximum.
    if k > 1:
        d = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
    else:
        nearest = np.array([np.inf])
    radii = 0.5 * nearest if radius is None else np.full(k, float(radius))
    if not np.isfinite(radii).all():  # one group, no radius: all particles
        radii = np.full(k, np.inf)
    labels = np.full(len(x), -1, dtype=np.int64)
    best = np.full(len(x), np.inf)
    for g in range(k):
        dist = np.hypot(x[:, 0] - centers[g, 0], x[:, 1] - centers[g, 1])
        take = (dist <= radii[g]) & (dist < best)
        labels[take], best[take] = g, dist[take]
    groups = tuple(
        Group(
            f"peak{g + 1}",
            indices=np.flatnonzero(labels == g),
            source="density",
            extra={
                "center": [round(float(c), 6) for c in centers[g]],
                "center_axes": [int(a) for a in axes],
                "radius": round(float(radii[g]), 6) if np.isfinite(radii[g]) else None,
            },
        )
        for g in range(k)
    )
    return GroupSet(groups, n_particles=len(x))


def axis_bins(
    coords: np.ndarray,
    n_groups: int | None = None,
    min_per_group: int = 1,
    axis: int = 0,
    trim: float = 0.0,
) -> GroupSet:
    """Contiguous bins along PC ``axis`` (0-based), each with ≥ ``min_per_group`` particles.

    The bin edges aim at equal widths over the range of the particles (after leaving out the
    fraction ``trim`` at each end); where an equal-width bin would hold fewer than
    ``min_per_group`` particles, its edge moves just far enough to take them (each edge is
    clamped so the remaining bins can still be filled). n_groups: number of bins; default the
    largest number whose plain equal-width bins all hold ≥ ``min_per_group``.
    """
    min_per_group = max(int(min_per_group), 1)
    values = _check(coords, 1, [axis])[:, 0]
    lo, hi = np.quantile(values, [trim, 1 - trim]) if trim > 0 else (values.min(), values.max())
    inside = np.flatnonzero((values >= lo) & (values <= hi))
    order = inside[np.argsort(values[inside], kind="stable")]
    sorted_values = values[order]
    n = len(order)
    if n_groups is None:
        n_groups = 1
        for k in range(n // min_per_group, 1, -1):
            edges = np.linspace(lo, hi, k + 1)
            counts = np.histogram(sorted_values, edges)[0]
            if counts.min() >= min_per_group:
                n_groups = k
                break
    k = int(n_groups)
    if k < 1 or n < k * min_per_group:
        raise InputError(
            f"{n} particles cannot make {k} bins of at least {min_per_group}",
            field="min_per_group",
            expected=f"n_groups × min_per_group ≤ {n}",
            found=f"{k} × {min_per_group}",
        )
    cuts = [0]
    for j in range(1, k):
        target = int(np.searchsorted(sorted_values, lo + j * (hi - lo) / k))
        cuts.append(int(np.clip(target, cuts[-1] + min_per_group, n - (k - j) * min_per_group)))
    cuts.append(n)
    groups = []
    for j in range(k):
        rows = order[cuts[j] : cuts[j + 1]]
        groups.append(
            Group(
                f"pc{axis + 1}_bin{j + 1}",
                indices=np.sort(rows),
                source="bins",
                extra={
                    "axis": int(axis),
                    "range": [float(values[rows].min()), float(values[rows].max())],
                    "center": [round(float(np.mean(values[rows])), 6)],
                },
            )
        )
    return GroupSet(tuple(groups), n_particles=len(values))


def automatic_groups(
    coords: np.ndarray,
    method: str,
    n_groups: int | None,
    min_per_group: int = 1,
    n_dims: int = 2,
    seed: int = 0,
    trim: float = 0.0,
) -> GroupSet:
    """Dispatch to one of :data:`METHODS` (``bins`` is along PC1; n_groups may be None)."""
    if method not in METHODS:
        raise InputError(
            "unknown grouping method", field="method", expected=" | ".join(METHODS), found=method
        )
    if method == "bins":
        return axis_bins(coords, n_groups, min_per_group, axis=0, trim=trim)
    n_dims = min(int(n_dims), np.asarray(coords).shape[1])
    if n_groups is None:
        raise InputError(f"--method {method} needs --groups K", field="n_groups")
    if method == "kmeans":
        return kmeans_groups(coords, n_groups, n_dims, seed)
    if method == "gmm":
        return gmm_groups(coords, n_groups, n_dims, seed)
    return density_peak_groups(coords, n_groups)


def group_sizes(resolved: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: int(len(rows)) for name, rows in resolved.items()}
