"""Forward model: deform → rotate → project Peng densities (pixel-integrated) → shift.

The image of a model is its electrostatic potential projected along z after rotation by the
projection matrix ``A`` (CONVENTIONS.md): a model point ``r`` lands at column
``N//2 + (A r)[0]/pixel_size_A`` and row ``N//2 + (A r)[1]/pixel_size_A``, then the image is
translated by ``−shift`` (RELION origin). Each atom is a sum of five 3D Gaussians (Peng 1996);
a Gaussian's projection is a 2D Gaussian, separable in x and y, so its integral over a pixel
is a product of two differences of error functions. That makes the images exact at any
sub-pixel position, differentiable in every parameter, and a sum of outer products — one
batched matrix product per image, the fast path on CPU and GPU.

The CTF is applied by :mod:`deephemnma.ctf`; :func:`render_images` chains everything.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from deephemnma.formfactors import gaussian_sigma_A, peng_parameters
from deephemnma.structure import Structure

_WINDOW_SIGMAS = 4.5  # a Gaussian's mass beyond 4.5 σ is < 1e-5 of its total


@dataclass(frozen=True)
class AtomModel:
    """A reference ready for rendering, on one device and dtype.

    coords_A: (N, 3) model-frame coordinates, Å, relative to the box center.
    weight: (N, 5) Peng amplitudes ``a_i``; sigma_A: (N, 5) real-space σ of each Gaussian, Å.
    modes: (K, N, 3) unit-norm mode vectors, or None for a rigid model.
    """

    coords_A: torch.Tensor
    weight: torch.Tensor
    sigma_A: torch.Tensor
    modes: torch.Tensor | None = None

    @functools.cached_property
    def max_sigma_A(self) -> float:
        """The widest Gaussian's σ (Å), read from the device once per model."""
        return float(self.sigma_A.max())

    @property
    def n_modes(self) -> int:
        return 0 if self.modes is None else int(self.modes.shape[0])

    def to(self, device=None, dtype=None) -> AtomModel:
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return AtomModel(
            move(self.coords_A), move(self.weight), move(self.sigma_A), move(self.modes)
        )


def atom_model(
    structure: Structure,
    modes: np.ndarray | None = None,
    bfactor_A2: float = 0.0,
    device=None,
    dtype=torch.float32,
) -> AtomModel:
    """Build an :class:`AtomModel` from a structure and optional (K, N, 3) mode vectors.

    ``bfactor_A2`` blurs every atom by a temperature factor (added to Peng's ``b_i``).
    Pseudoatoms (an EM map's Gaussians) are one Gaussian each, of their own width and weight
    (:mod:`deephemnma.pseudoatoms`), not carbon atoms.
    """
    from deephemnma.nma.network import is_pseudoatomic

    if is_pseudoatomic(structure):
        from deephemnma.pseudoatoms import pseudoatom_sigma_A, pseudoatom_weights

        a = pseudoatom_weights(structure)[:, None]
        b = (8.0 * np.pi**2) * pseudoatom_sigma_A(structure)[:, None] ** 2
    else:
        source = structure.metadata.get("path", "structure")
        a, b = peng_parameters(structure.element, source=source)
    sigma = gaussian_sigma_A(b, bfactor_A2)
    t = {"device": device, "dtype": dtype}
    return AtomModel(
        coords_A=torch.as_tensor(structure.coords_A, **t),
        weight=torch.as_tensor(a, **t),
        sigma_A=torch.as_tensor(sigma, **t),
        modes=None if modes is None else torch.as_tensor(np.asarray(modes), **t),
    )


def merge_narrow_gaussians(
    model: AtomModel, pixel_size_A: float, fraction: float = 0.5
) -> AtomModel:
    """The same model with each atom's Gaussians narrower than ``fraction × pixel_size_A``
    merged into one of equal weight and weight-averaged variance.

    After integration over a pixel, Gaussians much narrower than the pixel are
    indistinguishable from their moment-matched merge, so images barely change (NCC > 0.9999
    with the default) while the work per atom shrinks: at 0.65 Å pixels a carbon keeps 3 of
    its 5 Gaussians, at 1.3 Å 2, at 2.6 Å 1. Every atom keeps the same number of terms
    (unused ones get weight 0) so the model stays a dense tensor.
    """
    narrow = model.sigma_A < fraction * pixel_size_A  # (N, G)
    weight = model.weight
    merged_w = (weight * narrow).sum(-1, keepdim=True)
    merged_var = (weight * narrow * model.sigma_A**2).sum(-1, keepdim=True)
    merged_sigma = torch.sqrt(merged_var / merged_w.clamp_min(1e-30))
    # Broad terms keep their place; the merged term takes the first narrow slot.
    n_broad = int((~narrow).sum(-1).max())
    order = torch.argsort(narrow.to(torch.int8), dim=-1, stable=True)  # broad first
    broad_w = torch.gather(weight * ~narrow, -1, order)[:, :n_broad]
    broad_sigma = torch.gather(model.sigma_A, -1, order)[:, :n_broad]
    new_w = torch.cat([merged_w, broad_w], -1)
    new_sigma = torch.cat(
        [
            torch.where(
                merged_w > 0,
                merged_sigma,
                broad_sigma[:, :1] if n_broad else torch.ones_like(merged_sigma),
            ),
            broad_sigma,
        ],
        -1,
    )
    return AtomModel(model.coords_A, new_w, new_sigma, model.modes)


def deform(coords_A: torch.Tensor, modes: torch.Tensor | None, amplitudes: torch.Tensor | None):
    """``r + Σ_k q_k v_k``: coords (N, 3), modes (K, N, 3), amplitudes (..., K) → (..., N, 3)."""
    if modes is None or amplitudes is None or modes.shape[0] == 0:
        return coords_A
    return coords_A + torch.einsum("...k,knd->...nd", amplitudes, modes)


def rotate(coords_A: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply projection matrices ``A`` (..., 3, 3) to points (..., N, 3): ``A r`` per point."""
    return coords_A @ matrix.transpose(-1, -2)


def window_half_width_px(sigma_A: torch.Tensor | float, pixel_size_A: float) -> int:
    """Half width (pixels) of the window that holds every Gaussian of the model (``sigma_A``:
    the σ tensor, or its maximum)."""
    widest = sigma_A if isinstance(sigma_A, float) else float(sigma_A.max())
    return int(math.ceil(_WINDOW_SIGMAS * widest / pixel_size_A)) + 1


def _axis_profiles(
    position_px: torch.Tensor, sigma_px: torch.Tensor, size: int, half_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel integrals of 1D unit Gaussians along one axis, on a window around each atom.

    position_px: (..., N) continuous pixel coordinate (pixel j covers [j − ½, j + ½]).
    sigma_px: (N, G). Returns profiles (..., N, G, L) with L = 2·half_width + 1, and the
    first pixel index of each window (..., N) in a frame padded by L on both sides, clamped so
    that windows of atoms far outside the image stay inside the padding (their profile is
    zeroed: they cannot reach the image).
    """
    length = 2 * half_width + 1
    center = torch.round(position_px.detach()).long()
    start = center - half_width
    clamped = start.clamp(-length, size)
    inside = (start == clamped).to(position_px.dtype)
    offsets = torch.arange(length + 1, device=position_px.device, dtype=position_px.dtype)
    edges = (start.to(position_px.dtype) - 0.5)[..., None] + offsets  # (..., N, L+1)
    scale = 1.0 / (math.sqrt(2.0) * sigma_px)  # (N, G)
    t = (edges[..., None, :] - position_px[..., None, None]) * scale[..., None]
    cdf = torch.erf(t)
    profiles = 0.5 * (cdf[..., 1:] - cdf[..., :-1]) * inside[..., None, None]
    return profiles, clamped + length


def _splat(patches: torch.Tensor, starts: tuple[torch.Tensor, ...], size: int) -> torch.Tensor:
    """Add per-atom patches into arrays.

    patches: (..., N, L, …, L) with one L per axis; starts: one (..., N) tensor per axis, the
    window starts in the padded frame of :func:`_axis_profiles`. Returns (..., size, …, size).
    """
    n_axes = len(starts)
    length = patches.shape[-1]
    padded = size + 2 * length
    lead = starts[0].shape[:-1]
    batch = math.prod(lead)
    cells = padded**n_axes
    # Row-major index of each window's first cell, then one broadcast add of the window's
    # offsets: building indices is otherwise the most expensive step on CPU.
    base = torch.zeros_like(starts[0])
    offsets = torch.zeros((), dtype=torch.long, device=patches.device)
    ar = torch.arange(length, device=patches.device)
    for start in starts:
        base = base * padded + start
        offsets = (offsets[..., None] * padded + ar).reshape(-1)
    base = base.reshape(batch, -1) + torch.arange(batch, device=base.device)[:, None] * cells
    flat = (base[..., None] + offsets).reshape(-1)
    out = patches.new_zeros(batch * cells).index_add(0, flat, patches.reshape(-1))
    inner = (slice(length, length + size),) * n_axes
    return out.reshape(*lead, *[padded] * n_axes)[(..., *inner)]


def project_atoms(
    coords_A: torch.Tensor,
    weight: torch.Tensor,
    sigma_A: torch.Tensor,
    image_size: int,
    pixel_size_A: float,
    shift_A: torch.Tensor | None = None,
    max_sigma_A: float | None = None,
) -> torch.Tensor:
    """Projected potential of atoms already in the image frame, averaged over each pixel.

    coords_A: (..., N, 3) rotated coordinates (Å; x → column, y → row, z is projected out).
    weight, sigma_A: (N, G) Gaussian amplitudes and σ (Å). shift_A: (..., 2) RELION origin
    (x, y) in Å; the image is translated by −shift. Returns (..., image_size, image_size)
    in weight units per Å².
    """
    x, y = coords_A[..., 0], coords_A[..., 1]
    if shift_A is not None:
        x = x - shift_A[..., 0:1]
        y = y - shift_A[..., 1:2]
    center = image_size // 2
    sigma_px = sigma_A / pixel_size_A
    half = window_half_width_px(sigma_A if max_sigma_A is None else max_sigma_A, pixel_size_A)
    px, sx = _axis_profiles(x / pixel_size_A + center, sigma_px, image_size, half)
    py, sy = _axis_profiles(y / pixel_size_A + center, sigma_px, image_size, half)
    # Each atom's image is Σ_g a_g · y-profile ⊗ x-profile on its window.
    patches = torch.einsum("...ngy,...ngx->...nyx", py * weight[..., None], px)
    return _splat(patches, (sy, sx), image_size) / pixel_size_A**2


def render_images(
    model: AtomModel,
    matrices: torch.Tensor,
    image_size: int,
    pixel_size_A: float,
    amplitudes: torch.Tensor | None = None,
    shift_A: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise- and CTF-free projections of the deformed, rotated, shifted model.

    matrices: (B, 3, 3) projection matrices (see :func:`deephemnma.geometry.euler_to_matrix`).
    amplitudes: (B, K) mode amplitudes; shift_A: (B, 2). Returns (B, H, W).
    """
    coords = deform(model.coords_A, model.modes, amplitudes)
    return project_atoms(
        rotate(coords, matrices),
        model.weight,
        model.sigma_A,
        image_size,
        pixel_size_A,
        shift_A,
        max_sigma_A=model.max_sigma_A,
    )


def density_map(
    coords_A: torch.Tensor,
    weight: torch.Tensor,
    sigma_A: torch.Tensor,
    box_size: int,
    voxel_size_A: float,
    atoms_per_chunk: int = 2048,
) -> torch.Tensor:
    """Peng potential of atoms averaged over each voxel, (Z, Y, X) = (box,)*3, per Å³.

    coords_A: (N, 3) relative to the box center (voxel index ``box//2`` on each axis).
    Each atom's Gaussians are integrated exactly over the voxels of a window around it and
    added in; chunks of atoms bound the memory.
    """
    center = box_size // 2
    half = window_half_width_px(sigma_A, voxel_size_A)
    volume = coords_A.new_zeros(box_size, box_size, box_size)
    sigma_px = sigma_A / voxel_size_A
    for lo in range(0, coords_A.shape[0], atoms_per_chunk):
        chunk = slice(lo, lo + atoms_per_chunk)
        pos = coords_A[chunk] / voxel_size_A + center
        (px, sx), (py, sy), (pz, sz) = (
            _axis_profiles(pos[:, axis], sigma_px[chunk], box_size, half) for axis in range(3)
        )
        patch = torch.einsum("ngz,ngy,ngx->nzyx", pz * weight[chunk, :, None], py, px)
        volume = volume + _splat(patch[None], (sz[None], sy[None], sx[None]), box_size)[0]
    return volume / voxel_size_A**3
