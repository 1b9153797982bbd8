"""Noise before and after the CTF (structural and shot noise, Sorzano et al. 2007).

Definition used everywhere in this project (per image, over the whole box):

    SNR = var(S) / var(N),   S = CTF ⊛ P (the noise-free particle image),
                             N = CTF ⊛ n₁ + n₂ (everything else in the final image),

with ``n₁`` white Gaussian "structural" noise added to the projection ``P`` before the CTF and
``n₂`` white Gaussian "shot" noise added after it. ``before_fraction`` is the share of var(N)
that comes from ``n₁`` *as it appears in the final image* (after CTF filtering), so
``var(CTF ⊛ n₁) = f·var(S)/SNR`` and ``var(n₂) = (1 − f)·var(S)/SNR``. The paper does not state
its split; 0.5 is the default and any split gives the same total SNR.
"""

from __future__ import annotations

import torch

from deephemnma.ctf import apply_filter


def rfft_weights(width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """How many columns of the full 2D spectrum each rfft2 column stands for (1 for column 0
    and, for even widths, the last; 2 otherwise): Parseval on the half grid."""
    weight = torch.full((width // 2 + 1,), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    return weight


def rfft_mean(values: torch.Tensor, width: int) -> torch.Tensor:
    """Mean over the *full* 2D spectrum of a quantity given on the rfft2 half grid.

    values: (..., H, W//2 + 1); columns other than 0 and (for even W) W/2 stand for two
    columns of the full spectrum. Returns (...).
    """
    weight = rfft_weights(width, values.dtype, values.device)
    return (values * weight).sum((-1, -2)) / (values.shape[-2] * width)


def noise_sigmas(
    signal_variance: torch.Tensor,
    ctf_values: torch.Tensor,
    width: int,
    snr: float,
    before_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard deviations (σ₁ before, σ₂ after the CTF) that give the requested SNR."""
    noise_variance = signal_variance / snr
    ctf_power = rfft_mean(ctf_values**2, width)
    sigma_before = torch.sqrt(before_fraction * noise_variance / ctf_power)
    sigma_after = torch.sqrt((1.0 - before_fraction) * noise_variance)
    return sigma_before, sigma_after


def add_noise_before_after_ctf(
    projections: torch.Tensor,
    ctf_values: torch.Tensor,
    snr: float,
    before_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CTF-modulated, noisy particle images and their noise-free counterparts.

    projections: (B, H, W) noise-free projections; ctf_values: (B, H, W//2 + 1).
    ``snr = inf`` gives noise-free images. Returns ``(noisy, clean)``, each (B, H, W).
    """
    clean = apply_filter(projections, ctf_values)
    if snr == float("inf"):
        return clean, clean
    width = projections.shape[-1]
    sigma_before, sigma_after = noise_sigmas(
        clean.var(dim=(-1, -2)), ctf_values, width, snr, before_fraction
    )
    shape = projections.shape
    kw = {"dtype": projections.dtype, "generator": generator, "device": projections.device}
    n_before = torch.randn(shape, **kw) * sigma_before[:, None, None]
    n_after = torch.randn(shape, **kw) * sigma_after[:, None, None]
    return clean + apply_filter(n_before, ctf_values) + n_after, clean
