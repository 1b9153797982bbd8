"""What Stage 1 compares: the image against the CTF-filtered projection of the deformed,
rotated, shifted reference, by normalized cross-correlation (NCC) at one resolution level.

NCC is invariant to the unknown scale and offset of the image intensities, so neither the
simulator's units nor RELION's normalization matter. Phase-flipped images are compared with
the projection filtered by |CTF| (what phase flipping leaves of the CTF); raw images with the
full CTF.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deephemnma.ctf import CTFParams, ctf_rfft_shared
from deephemnma.preprocess import fourier_crop
from deephemnma.project import AtomModel, render_images


@dataclass(frozen=True)
class Level:
    """A resolution level: images Fourier-cropped to ``size`` px of ``pixel_size_A`` Å."""

    size: int
    pixel_size_A: float


def levels_for(image_size: int, pixel_size_A: float, sizes: tuple[int, ...]) -> list[Level]:
    """Levels of the given box sizes (each ≤ the image size, even) over the same field of view."""
    return [Level(s, pixel_size_A * image_size / s) for s in sizes if s <= image_size]


def crop_images(images: torch.Tensor, level: Level) -> torch.Tensor:
    """Images (B, N, N) low-passed and resampled to the level's box."""
    return fourier_crop(images, level.size)


def ctf_filter(
    ctf: CTFParams | None, level: Level, phase_flipped: bool, dtype=torch.float32, device=None
) -> torch.Tensor | None:
    """The filter the data carry at this level: |CTF| for phase-flipped images, CTF for raw
    images, None without CTF. (B, S, S//2 + 1)."""
    if ctf is None:
        return None
    values = ctf_rfft_shared(ctf, level.size, level.pixel_size_A, device=device, dtype=dtype)
    return values.abs() if phase_flipped else values


def rodrigues(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of rotation vectors ``omega`` (..., 3) in radians.

    Smooth at zero (uses the series of sin θ/θ and (1 − cos θ)/θ²), so gradients exist there.
    """
    theta2 = (omega**2).sum(-1, keepdim=True)[..., None]
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta**2)
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * k + b * (k @ k)


def render_filtered(
    model: AtomModel,
    matrices: torch.Tensor,
    amplitudes: torch.Tensor | None,
    shifts_A: torch.Tensor | None,
    level: Level,
    data_filter: torch.Tensor | None,
) -> torch.Tensor:
    """Projections (B, S, S) as the data would show them at this level."""
    images = render_images(model, matrices, level.size, level.pixel_size_A, amplitudes, shifts_A)
    if data_filter is None:
        return images
    return torch.fft.irfft2(torch.fft.rfft2(images) * data_filter, s=images.shape[-2:])


def ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalized cross-correlation over the last two axes; (...)."""
    a = a - a.mean((-1, -2), keepdim=True)
    b = b - b.mean((-1, -2), keepdim=True)
    num = (a * b).sum((-1, -2))
    den = torch.sqrt((a * a).sum((-1, -2)) * (b * b).sum((-1, -2))).clamp_min(1e-30)
    return num / den
