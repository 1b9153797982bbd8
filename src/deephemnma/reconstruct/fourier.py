"""Central slices in 3D Fourier space: insertion (back-projection) and extraction (projection).

Conventions (CONVENTIONS.md, docs/reconstruct.md):

* Real-space images ``[y, x]`` and volumes ``[z, y, x]`` have their origin at index ``N // 2``;
  their transforms are ``rfft2`` / ``rfftn`` of the ``ifftshift``-ed arrays, so frequency index
  0 is the DC term and frequencies are integer indices ``k`` of the grid.
* With the projection matrix ``A`` of :func:`deephemnma.geometry.euler_to_matrix`, the image
  frequency ``(k_x, k_y)`` is the volume frequency ``Aᵀ (k_x, k_y, 0) = k_x A[0] + k_y A[1]``
  in model (x, y, z) coordinates (the Fourier slice theorem for ``p(x, y) = ∫ f(Aᵀ r) dz``).
* Volumes are half spectra over ``x`` (``k_x ≥ 0``); a slice point with ``k_x < 0`` is stored
  at ``−k`` with its complex conjugate (Friedel).

Insertion accumulators are half spectra with one spare x plane, ``(M, M, M // 2 + 2)``
(:func:`accumulator_shape`), so that the eight trilinear corners of any point with
``|k| ≤ M / 2`` are in range; z and y wrap around (periodic grid). ``accumulator[..., :-1]``
is the ``rfftn`` layout.

Interpolation is trilinear. Image half-spectrum points are used up to a radius (index units);
the ``k_x = 0`` and ``k_x = n / 2`` columns of a half spectrum hold each frequency pair twice,
so :class:`SliceGrid` gives them weight ½, and after all insertions
:func:`symmetrize_x0_plane_` adds the conjugate partners that a full spectrum would have put
on the ``k_x = 0`` plane. Every function is batched and device-agnostic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SliceGrid:
    """The points of an image half spectrum (rfft2 of an ``n × n`` image) that are inserted.

    rows, cols: (P,) long indices into the ``(n, n // 2 + 1)`` rfft2 array.
    k_y, k_x: (P,) float frequency in index units (``k_y`` signed, ``k_x ≥ 0``).
    weight: (P,) ½ on the ``k_x = 0`` and ``k_x = n / 2`` columns, 1 elsewhere.
    size: n, the image size.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    k_y: torch.Tensor
    k_x: torch.Tensor
    weight: torch.Tensor
    size: int

    @property
    def n_points(self) -> int:
        return int(self.rows.shape[0])


def slice_grid(size: int, max_radius: float, device=None, dtype=torch.float32) -> SliceGrid:
    """The half-spectrum points of a ``size × size`` image within ``max_radius`` (index units)."""
    k_y = torch.fft.fftfreq(size, d=1.0 / size, device=device, dtype=dtype)
    k_x = torch.fft.rfftfreq(size, d=1.0 / size, device=device, dtype=dtype)
    ky, kx = torch.meshgrid(k_y, k_x, indexing="ij")
    keep = (ky**2 + kx**2) <= max_radius**2
    rows, cols = torch.nonzero(keep, as_tuple=True)
    edge = (cols == 0) | (cols == size // 2)
    weight = torch.where(edge, 0.5, 1.0).to(dtype)
    return SliceGrid(rows, cols, ky[rows, cols], kx[rows, cols], weight, size)


def resize_center(array: torch.Tensor, size: int, ndim: int) -> torch.Tensor:
    """Zero-pad or crop the last ``ndim`` (equal) axes to ``size``, index ``N // 2`` going to
    ``size // 2``."""
    n = array.shape[-1]
    if n == size:
        return array
    if size > n:
        lo = size // 2 - n // 2
        out = array.new_zeros(*array.shape[:-ndim], *(size,) * ndim)
        out[(..., *(slice(lo, lo + n),) * ndim)] = array
        return out
    lo = n // 2 - size // 2
    return array[(..., *(slice(lo, lo + size),) * ndim)]


def centered_rfft2(images: torch.Tensor) -> torch.Tensor:
    """Half spectra (..., n, n // 2 + 1) of images (..., n, n) whose origin is pixel ``n // 2``."""
    return torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))


def centered_irfft2(spectra: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of :func:`centered_rfft2`: (..., n, n // 2 + 1) → real (..., n, n)."""
    return torch.fft.fftshift(torch.fft.irfft2(spectra, s=(size, size)), dim=(-2, -1))


def centered_rfftn(volume: torch.Tensor) -> torch.Tensor:
    """Half spectrum (M, M, M // 2 + 1) of a volume (M, M, M) whose origin is voxel ``M // 2``."""
    return torch.fft.rfftn(torch.fft.ifftshift(volume, dim=(-3, -2, -1)), dim=(-3, -2, -1))


def slice_points(matrices: torch.Tensor, grid: SliceGrid, scale: float = 1.0) -> torch.Tensor:
    """3D frequencies ``scale · Aᵀ (k_x, k_y, 0)`` of the grid points, (3, B, P): x, y, z first
    (each axis a contiguous (B, P) array, the fast layout for building indices).

    matrices: (B, 3, 3) projection matrices ``A`` (rows: where the image x and y axes point
    in the model frame). scale: 3D grid steps per image frequency step (the oversampling)."""
    kxy = torch.stack([grid.k_x, grid.k_y], -1).to(matrices.dtype) * scale  # (P, 2)
    return torch.einsum("pi,bij->jbp", kxy, matrices[:, :2, :]).contiguous()


def accumulator_shape(size: int) -> tuple[int, int, int]:
    """Accumulator layout for a grid of size M: (M, M, M // 2 + 2), one spare x plane."""
    return (size, size, size // 2 + 2)


def _trilinear(points: torch.Tensor, shape: tuple[int, int, int]):
    """Flat indices (B, 8, P) into an accumulator and trilinear weights (B, 8, P).

    points: (3, B, P) frequencies (x, y, z) with ``|k| ≤ M / 2``; those with ``k_x < 0`` are
    taken at ``−k``. Also returns which were flipped (B, P). The corner axis sits between
    images and points: each image's eight corner sweeps stay within its slice (cache-friendly
    scatter) while every elementwise step runs over contiguous points."""
    flip = points[0] < 0
    sign = 1.0 - 2.0 * flip.to(points.dtype)
    size = shape[0]
    axes = []
    for axis, stride in ((2, shape[1] * shape[2]), (1, shape[2]), (0, 1)):  # z, y, x
        k = points[axis] * sign
        lower = torch.floor(k)
        frac = k - lower
        lower = lower.to(torch.int32)
        upper = lower + 1
        if axis > 0:  # z and y wrap around the periodic grid; x ≥ 0 stays in range
            lower = torch.remainder(lower, size)
            upper = torch.remainder(upper, size)
        index = torch.stack([lower * stride, upper * stride], 1)  # (B, 2, P)
        axes.append((index, torch.stack([1 - frac, frac], 1)))
    (iz, wz), (iy, wy), (ix, wx) = axes
    b, p = flip.shape
    index = iz[:, :, None, None] + iy[:, None, :, None] + ix[:, None, None, :]
    weight = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]
    return index.reshape(b, 8, p), weight.reshape(b, 8, p), flip


def insert_central_slices(
    numerator: torch.Tensor,
    weight: torch.Tensor,
    values: torch.Tensor,
    value_weights: torch.Tensor,
    points: torch.Tensor,
) -> None:
    """Add slice values into accumulators in place, trilinearly.

    numerator: complex, weight: real, both (M, M, M // 2 + 2) (:func:`accumulator_shape`).
    The numerator gets ``Σ w · values``, the weight ``Σ w · value_weights``.
    values: complex (B, P); value_weights: real (B, P); points: (3, B, P) frequencies
    (index units, ``|k| ≤ M / 2``) from :func:`slice_points`. Points with ``k_x < 0`` go to
    ``−k`` with conjugated values.
    """
    index, w, flip = _trilinear(points, tuple(numerator.shape))
    values = torch.where(flip, values.conj(), values)
    index = index.reshape(-1)
    # complex × real through the real view (no promotion of the weights to complex)
    weighted = torch.view_as_complex(torch.view_as_real(values)[:, None] * w[..., None])
    numerator.view(-1).index_add_(0, index, weighted.reshape(-1))
    weight.view(-1).index_add_(0, index, (w * value_weights[:, None]).reshape(-1))


def extract_central_slices(accumulator: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples at slice points of a half spectrum in accumulator layout; the adjoint
    of :func:`insert_central_slices` (numerator part). points: (3, B, P); returns (B, P)."""
    index, w, flip = _trilinear(points, tuple(accumulator.shape))
    samples = (accumulator.reshape(-1)[index] * w).sum(1)
    return torch.where(flip, samples.conj(), samples)


def rfft_to_accumulator(spectrum: torch.Tensor) -> torch.Tensor:
    """rfftn layout (..., M, M, M // 2 + 1) → accumulator layout (a zero x plane appended)."""
    return torch.cat([spectrum, spectrum.new_zeros(*spectrum.shape[:-1], 1)], -1)


def symmetrize_x0_plane_(spectrum: torch.Tensor) -> torch.Tensor:
    """Add to the ``k_x = 0`` plane of a periodic half spectrum (..., M, M, W) its conjugate
    mirror, in place: ``a(0, y, z) += conj a(0, −y, −z)``; returns ``spectrum``.

    Half-spectrum insertion puts on that plane only the contributions of points with
    ``k_x ≥ 0``; a full spectrum would also put there those of their Friedel partners, which
    are exactly the conjugate mirror. For complex numerators and real weights; call it once,
    after the last insertion.
    """
    plane = spectrum[..., 0]
    mirror = torch.roll(plane.flip(-2, -1), shifts=(1, 1), dims=(-2, -1))
    if mirror.is_complex():
        mirror = mirror.conj()
    spectrum[..., 0] = plane + mirror
    return spectrum


def sinc2(positions: torch.Tensor, size: int) -> torch.Tensor:
    """``sinc²(x / size)`` (``sinc(t) = sin πt / πt``): the real-space profile of the trilinear
    kernel on a grid of ``size`` along one axis, at voxel offsets ``x`` from the origin."""
    return torch.sinc(positions / size) ** 2


def shift_phases(grid: SliceGrid, shift_px: torch.Tensor) -> torch.Tensor:
    """``exp(−2πi k·s / n)`` (B, P): multiplying an image spectrum by it undoes the RELION
    origin ``s`` (the image is the projection moved by ``−s``); shift_px: (B, 2) as (x, y)."""
    phase = (grid.k_x * shift_px[:, :1] + grid.k_y * shift_px[:, 1:2]) * (-2 * math.pi / grid.size)
    return torch.polar(torch.ones_like(phase), phase)
