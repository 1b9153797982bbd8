"""Quasi-uniform sampling of rotations (super-Fibonacci spirals, Alexa 2022)."""

from __future__ import annotations

import math

import torch

from deephemnma.geometry import quaternion_to_matrix

_PHI = math.sqrt(2.0)
_PSI = 1.533751168755204288118041  # the real root of ψ⁴ = ψ + 4


def super_fibonacci_quaternions(n: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` unit quaternions (w, x, y, z) spread uniformly over SO(3), deterministic."""
    s = torch.arange(n, dtype=dtype) + 0.5
    r = torch.sqrt(s / n)
    big_r = torch.sqrt(1.0 - s / n)
    alpha = 2.0 * math.pi * s / _PHI
    beta = 2.0 * math.pi * s / _PSI
    return torch.stack(
        [
            r * torch.sin(alpha),
            r * torch.cos(alpha),
            big_r * torch.sin(beta),
            big_r * torch.cos(beta),
        ],
        -1,
    )


def uniform_projection_matrices(n: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` projection matrices ``A`` (n, 3, 3) quasi-uniform on SO(3).

    The mean angular spacing is about ``(8π² / n)^(1/3)`` rad (≈ 8.5° for 24,000).
    """
    return quaternion_to_matrix(super_fibonacci_quaternions(n, dtype)).transpose(-1, -2)


def spacing_deg(n: int) -> float:
    """Typical distance between neighbouring samples of :func:`uniform_projection_matrices`."""
    return math.degrees((8 * math.pi**2 / n) ** (1 / 3))


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
