"""Contrast transfer function, RELION definition with its sign (CONVENTIONS.md).

``CTF(k) = √(1−Q²) sin χ(k) + Q cos χ(k)``,
``χ(k) = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + phase_shift``,
``Δf(θ) = U cos²(θ − angle) + V sin²(θ − angle)``, θ measured from the x (column) axis toward
the y (row) axis. Positive defocus is underfocus, so ``CTF(0) = +Q`` and the CTF is positive at
low frequency: positive density projects to white particles, as RELION expects.

All functions work on the half spectrum of ``torch.fft.rfft2`` (``(..., H, W//2 + 1)``), are
batched over leading dimensions, and are differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass(frozen=True)
class CTFParams:
    """Microscope and per-particle CTF parameters (RELION definitions); each field a float,
    a numpy array or a tensor of shape (...) broadcast against the others (one value per
    image). Defocus in Å (positive = underfocus), angle and phase shift in degrees, voltage
    in kV, Cs in mm, amplitude contrast as a fraction, B-factor in Å²."""

    defocus_u_A: torch.Tensor | float
    defocus_v_A: torch.Tensor | float
    defocus_angle_deg: torch.Tensor | float = 0.0
    voltage_kV: torch.Tensor | float = 300.0
    cs_mm: torch.Tensor | float = 2.7
    amplitude_contrast: torch.Tensor | float = 0.1
    phase_shift_deg: torch.Tensor | float = 0.0
    bfactor_A2: torch.Tensor | float = 0.0

    def index(self, idx) -> CTFParams:
        """The parameters of a subset of images (array fields indexed, scalars kept)."""

        def pick(value):
            return value[idx] if getattr(value, "ndim", 0) > 0 else value

        return CTFParams(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})


def electron_wavelength_A(voltage_kV: torch.Tensor | float) -> torch.Tensor:
    """Relativistic electron wavelength (Å) for an accelerating voltage in kV."""
    v = torch.as_tensor(voltage_kV, dtype=torch.float64) * 1e3
    return 12.2643247 / torch.sqrt(v * (1 + 0.978466e-6 * v))


def rfft_frequencies(
    image_size: int, pixel_size_A: float, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies ``(k_y, k_x)`` in Å⁻¹ of the rfft2 grid, each (H, W//2 + 1)."""
    ky = torch.fft.fftfreq(image_size, d=pixel_size_A, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(image_size, d=pixel_size_A, device=device, dtype=dtype)
    return torch.meshgrid(ky, kx, indexing="ij")


def _field(value, dtype, device) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = np.array(value, dtype=np.float64)  # pandas may hand out read-only views
    return torch.as_tensor(value, dtype=dtype, device=device)[..., None, None]


def ctf_rfft(
    params: CTFParams,
    image_size: int,
    pixel_size_A: float,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """CTF values on the rfft2 grid: (..., H, W//2 + 1) with ``...`` the parameters' batch
    shape. ``bfactor_A2`` applies the envelope ``exp(−B k² / 4)``."""
    ky, kx = rfft_frequencies(image_size, pixel_size_A, device=device, dtype=dtype)
    k2 = kx**2 + ky**2
    theta = torch.atan2(ky, kx)

    def f(name: str) -> torch.Tensor:
        return _field(getattr(params, name), dtype, device)

    lam = _field(electron_wavelength_A(params.voltage_kV), dtype, device)
    u, v = f("defocus_u_A"), f("defocus_v_A")
    angle = torch.deg2rad(f("defocus_angle_deg"))
    defocus = u * torch.cos(theta - angle) ** 2 + v * torch.sin(theta - angle) ** 2
    cs_A = f("cs_mm") * 1e7
    chi = (
        math.pi * lam * defocus * k2
        - 0.5 * math.pi * cs_A * lam**3 * k2**2
        + torch.deg2rad(f("phase_shift_deg"))
    )
    q = f("amplitude_contrast")
    ctf = torch.sqrt(1 - q**2) * torch.sin(chi) + q * torch.cos(chi)
    bfactor = f("bfactor_A2")
    return ctf * torch.exp(-bfactor * k2 / 4)


def ctf_rfft_shared(
    params: CTFParams,
    image_size: int,
    pixel_size_A: float,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """:func:`ctf_rfft` for a batch (B,) of parameters, computing each distinct parameter set
    once — particles of one micrograph (or a whole simulated dataset) share their CTF."""
    distinct, inverse = distinct_parameters(params)
    table = ctf_rfft(distinct, image_size, pixel_size_A, device=device, dtype=dtype)
    return table[torch.as_tensor(inverse, device=table.device)]


def distinct_parameters(params: CTFParams) -> tuple[CTFParams, np.ndarray]:
    """The distinct parameter sets (D,) of a batch (B,) and, per image, which one it has
    (``inverse`` (B,) int64): ``distinct.index(inverse)`` gives back ``params``."""
    values = [
        np.broadcast_to(np.asarray(getattr(params, f.name), dtype=np.float64), (_batch(params),))
        for f in fields(params)
    ]
    unique, inverse = np.unique(np.stack(values, 1), axis=0, return_inverse=True)
    distinct = CTFParams(*(unique[:, k] for k in range(unique.shape[1])))
    return distinct, inverse.reshape(-1).astype(np.int64)


def _batch(params: CTFParams) -> int:
    sizes = {int(np.size(getattr(params, f.name))) for f in fields(params)} - {1}
    if len(sizes) > 1:
        raise ValueError(f"CTF parameter arrays of different lengths: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def apply_filter(images: torch.Tensor, filter_rfft: torch.Tensor) -> torch.Tensor:
    """Multiply the images' spectrum by a real filter on the rfft2 grid; (..., H, W)."""
    spectrum = torch.fft.rfft2(images) * filter_rfft
    return torch.fft.irfft2(spectrum, s=images.shape[-2:])


def phase_flip(images: torch.Tensor, ctf_values: torch.Tensor) -> torch.Tensor:
    """Phase-flip images: multiply their Fourier transform by ``sign(CTF)``."""
    return apply_filter(images, torch.sign(ctf_values))
