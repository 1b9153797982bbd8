"""Sampling of projection directions and in-plane angles for the search library."""

from __future__ import annotations

import math

import torch


def fibonacci_directions(n: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` (rot, tilt) pairs in degrees whose projection directions cover the sphere
    uniformly (Fibonacci lattice); (n, 2)."""
    k = torch.arange(n, dtype=dtype) + 0.5
    tilt = torch.rad2deg(torch.arccos(1 - 2 * k / n))
    rot = torch.remainder(k * 360.0 * (1 - 1 / ((1 + math.sqrt(5)) / 2)), 360.0)
    return torch.stack([rot, tilt], -1)


def grid_for_spacing(spacing_deg: float) -> tuple[int, int]:
    """Numbers of projection directions and in-plane angles for a given angular spacing."""
    n_psi = max(4, int(math.ceil(360.0 / spacing_deg)))
    n_dir = max(8, int(math.ceil(4 * math.pi / math.radians(spacing_deg) ** 2)))
    return n_dir, n_psi
