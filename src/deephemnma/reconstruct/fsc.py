"""Fourier shell correlation between two maps, resolution at a threshold, CSV and figure.

``FSC(s) = Re Σ F₁ F₂* / √(Σ |F₁|² Σ |F₂|²)`` over the voxels whose frequency index rounds to
shell ``s`` (0 … box/2, in units of ``1 / (box · voxel_size_A)`` Å⁻¹). No mask is applied.
The resolution at a threshold is ``1 / f`` at the first crossing below it (shell ≥ 1), with
``f`` interpolated linearly between the two shells around the crossing; a curve that never
drops below the threshold reports the Nyquist limit ``2 · voxel_size_A`` and says so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deephemnma.io.atomic import atomic_write_text


@dataclass(frozen=True)
class FSCCurve:
    """One FSC curve: shell (S,) int, frequency_invA (S,), fsc (S,), n_voxels (S,) (full-spectrum
    voxels per shell), with the map's box and voxel size."""

    shell: np.ndarray
    frequency_invA: np.ndarray
    fsc: np.ndarray
    n_voxels: np.ndarray
    box: int
    voxel_size_A: float

    def resolution_A(self, threshold: float) -> float:
        """Resolution (Å) where the curve first drops below ``threshold`` (interpolated);
        ``2 · voxel_size_A`` when it never does."""
        crossing = self.crossing(threshold)
        return 2 * self.voxel_size_A if crossing is None else 1.0 / crossing

    def crossing(self, threshold: float) -> float | None:
        """Frequency (Å⁻¹) of the first crossing below ``threshold`` after the DC shell, or
        None when the curve stays above it up to Nyquist."""
        below = np.flatnonzero(self.fsc[1:] < threshold)
        if below.size == 0:
            return None
        s = int(below[0]) + 1
        f0, f1 = self.frequency_invA[s - 1], self.frequency_invA[s]
        c0, c1 = self.fsc[s - 1], self.fsc[s]
        t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
        return float(f0 + np.clip(t, 0.0, 1.0) * (f1 - f0))


def fourier_shell_correlation(
    map1: torch.Tensor, map2: torch.Tensor, voxel_size_A: float
) -> FSCCurve:
    """FSC of two (N, N, N) real maps on the same grid (torch, any device)."""
    if map1.shape != map2.shape or map1.ndim != 3 or len(set(map1.shape)) != 1:
        raise ValueError(f"FSC needs two cubic maps of one shape, got {map1.shape}, {map2.shape}")
    box = map1.shape[-1]
    f1 = torch.fft.rfftn(map1.double())
    f2 = torch.fft.rfftn(map2.to(map1.device).double())
    k = torch.fft.fftfreq(box, d=1.0 / box, device=f1.device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(box, d=1.0 / box, device=f1.device, dtype=torch.float64)
    radius = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx**2)
    shell = torch.round(radius).long()
    # Interior half-spectrum voxels stand for themselves and their Friedel partner.
    mult = torch.full((kx.shape[0],), 2.0, dtype=torch.float64, device=f1.device)
    mult[0] = 1.0
    if box % 2 == 0:
        mult[-1] = 1.0
    mult = mult.expand_as(radius)
    n_shells = box // 2 + 1
    keep = shell < n_shells
    shell, mult = shell[keep], mult[keep]
    a, b = f1[keep], f2[keep]

    def sums(values):
        return torch.bincount(shell, values * mult, minlength=n_shells)[:n_shells]

    cross = sums((a * b.conj()).real)
    p1, p2 = sums(a.abs() ** 2), sums(b.abs() ** 2)
    count = sums(torch.ones_like(mult))
    denominator = torch.sqrt(p1 * p2)
    fsc = torch.where(denominator > 0, cross / denominator.clamp_min(1e-300), 0.0)
    shells = np.arange(n_shells)
    return FSCCurve(
        shell=shells,
        frequency_invA=shells / (box * voxel_size_A),
        fsc=fsc.cpu().numpy(),
        n_voxels=count.cpu().numpy().round().astype(np.int64),
        box=box,
        voxel_size_A=float(voxel_size_A),
    )


def fsc_csv_text(curves: dict[str, FSCCurve]) -> str:
    """CSV: shell, frequency (Å⁻¹), resolution (Å), n_voxels, then one ``fsc_<name>`` column
    per curve (all curves on the same grid)."""
    first = next(iter(curves.values()))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["shell", "frequency_invA", "resolution_A", "n_voxels", *(f"fsc_{n}" for n in curves)]
    )
    for i, s in enumerate(first.shell):
        f = first.frequency_invA[i]
        writer.writerow(
            [
                int(s),
                f"{f:.6g}",
                f"{1 / f:.6g}" if f > 0 else "inf",
                int(first.n_voxels[i]),
                *(f"{c.fsc[i]:.6f}" for c in curves.values()),
            ]
        )
    return out.getvalue()


def write_fsc_csv(path: str | Path, curves: dict[str, FSCCurve]) -> Path:
    """Write :func:`fsc_csv_text` atomically."""
    return atomic_write_text(path, fsc_csv_text(curves))


def plot_fsc(path: str | Path, curves: dict[str, FSCCurve], title: str = "") -> Path:
    """FSC curves against spatial frequency with the 0.143 and 0.5 thresholds (PNG)."""
    from deephemnma.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for (name, curve), color in zip(curves.items(), colors * 4, strict=False):
        label = (
            f"{name}: {curve.resolution_A(0.143):.2f} Å @0.143, "
            f"{curve.resolution_A(0.5):.2f} Å @0.5"
        )
        ax.plot(curve.frequency_invA, curve.fsc, color=color, lw=1.6, label=label)
    for threshold, style in ((0.143, ":"), (0.5, "--")):
        ax.axhline(threshold, color="0.4", lw=0.8, ls=style)
    ax.axhline(0.0, color="0.7", lw=0.6)
    first = next(iter(curves.values()))
    ax.set_xlim(0, first.frequency_invA[-1])
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    top = ax.secondary_xaxis(
        "top", functions=(lambda f: 1 / np.maximum(f, 1e-9), lambda r: 1 / np.maximum(r, 1e-9))
    )
    top.set_xlabel("resolution (Å)")
    ticks = [r for r in (50, 20, 10, 6, 4, 3, 2, 1.5, 1) if 1 / r <= first.frequency_invA[-1]]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{r:g}" for r in ticks])
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
