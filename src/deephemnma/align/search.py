"""Global pose search: every image against a library of projections at low resolution.

At 32² (≈ 2.6 Å pixels for the paper's 128² at 0.65 Å) a particle is ~20 pixels across, so
~8° orientation steps and whole-pixel shifts suffice to land in the right basin; the
comparison of B images with L library entries is one matrix product (B, P) × (P, L), which
runs near peak speed on CPU and GPU. Images are matched-filtered by their CTF (|CTF| for
phase-flipped data) so the dot product is the correlation with the CTF-filtered projection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from deephemnma.align.sampling import fibonacci_directions, grid_for_spacing
from deephemnma.align.similarity import Level
from deephemnma.geometry import euler_to_matrix
from deephemnma.noise import rfft_weights
from deephemnma.progress import progress_bar
from deephemnma.project import AtomModel, render_images


@dataclass(frozen=True)
class Library:
    """Normalized projections of the reference (possibly at several conformations).

    matrices: (L, 3, 3) projection matrices; amplitudes: (L, K) conformation of each entry
    (None: undeformed); vectors: (L, S·S) zero-mean projections, or (L, C) their coordinates
    in ``basis`` (S·S, C), orthonormal columns, when the library is compressed
    (:func:`compress_library`); shell_power: (L, R) their power in each ring of spatial
    frequency (R = S//2 + 1), which turns a CTF-weighted norm into one small matrix product.
    """

    matrices: torch.Tensor
    amplitudes: torch.Tensor | None
    vectors: torch.Tensor
    shell_power: torch.Tensor
    level: Level
    basis: torch.Tensor | None = None


def rotate_images(images: torch.Tensor, psi_deg: torch.Tensor) -> torch.Tensor:
    """Images (B, S, S) rotated in plane about the center pixel S//2 as a change of ``psi``
    by ``psi_deg`` (n,) would: (B, n, S, S). Bicubic interpolation."""
    size = images.shape[-1]
    # A point p₀ of the psi = 0 image moves to p = Rz(−psi) p₀, so the output at p samples
    # the input at Rz(psi) p. grid_sample works in [-1, 1] coordinates centered on the
    # middle of the box; the center pixel S//2 sits half a pixel off it for even S.
    rad = torch.deg2rad(psi_deg).to(images.dtype)
    c, s = torch.cos(rad), torch.sin(rad)
    coords = torch.arange(size, dtype=images.dtype, device=images.device) - size // 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    src_x = c[:, None, None] * xx - s[:, None, None] * yy
    src_y = s[:, None, None] * xx + c[:, None, None] * yy
    to_unit = lambda v: (v + size // 2 + 0.5) * 2 / size - 1  # noqa: E731
    grid = torch.stack([to_unit(src_x), to_unit(src_y)], -1)  # (n, S, S, 2)
    n, b = psi_deg.shape[0], images.shape[0]
    src = images[:, None].expand(b, n, size, size).reshape(b * n, 1, size, size)
    out = torch.nn.functional.grid_sample(
        src, grid.repeat(b, 1, 1, 1), mode="bicubic", padding_mode="zeros", align_corners=False
    )
    return out.reshape(b, n, size, size)


def build_library(
    model: AtomModel,
    spacing_deg: float,
    level: Level,
    conformations: torch.Tensor | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Library:
    """Project the reference over orientations ~``spacing_deg`` apart for each of the
    ``conformations`` (C, K) amplitude sets (default: the undeformed reference only).

    Only the projection directions are rendered; the in-plane angles are made by rotating
    those images, ~30× less work than rendering every orientation.
    """
    dtype, device = model.coords_A.dtype, model.coords_A.device
    n_dir, n_psi = grid_for_spacing(spacing_deg)
    directions = fibonacci_directions(n_dir).to(device=device, dtype=dtype)
    psi = torch.arange(n_psi, dtype=dtype, device=device) * (360.0 / n_psi)
    base = euler_to_matrix(torch.cat([directions, torch.zeros_like(directions[:, :1])], 1))
    all_angles = torch.cat([directions.repeat_interleave(n_psi, 0), psi.repeat(n_dir)[:, None]], 1)
    orientation_matrices = euler_to_matrix(all_angles)
    confs = (
        [None] if conformations is None or model.modes is None else list(conformations.to(dtype))
    )
    matrices, amplitudes, vectors, powers = [], [], [], []
    with progress_bar(len(confs) * n_dir, "projection library", progress) as bar:
        for conf in confs:
            for lo in range(0, n_dir, batch_size):
                a = base[lo : lo + batch_size]
                q = None if conf is None else conf.expand(a.shape[0], -1)
                with torch.no_grad():
                    images = render_images(model, a, level.size, level.pixel_size_A, q)
                    rotated = rotate_images(images, psi)
                flat = rotated.reshape(-1, level.size, level.size)
                flat = flat - flat.mean((-1, -2), keepdim=True)
                vectors.append(flat.flatten(-2))
                powers.append(shell_power(flat))
                bar.advance(a.shape[0])
            matrices.append(orientation_matrices)
            if conf is not None:
                amplitudes.append(conf.expand(orientation_matrices.shape[0], -1))
    return Library(
        matrices=torch.cat(matrices),
        amplitudes=torch.cat(amplitudes) if amplitudes else None,
        vectors=torch.cat(vectors),
        shell_power=torch.cat(powers),
        level=level,
    )


def compress_library(library: Library, components: int, sample: int = 20_000) -> Library:
    """The library's projections replaced by their coordinates in its ``components`` leading
    principal directions (without centering: the entries are zero-mean images already).

    The search's dot products ⟨F·I, P⟩ become ⟨Uᵀ F·I, Uᵀ P⟩: the part of P outside the
    basis, fine detail that noisy data barely constrain, is dropped. The directions come from
    a fixed random ``sample`` of entries (the S·S × S·S second-moment matrix, eigh in float64),
    so a rebuild gives the same basis. ``shell_power`` keeps the exact norms.
    """
    vectors = library.vectors
    pixels = vectors.shape[1]
    if library.basis is not None or components <= 0 or components >= pixels:
        return library
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(vectors.shape[0], generator=generator)[:sample].to(vectors.device)
    rows = vectors[pick]
    moment = (rows.T @ rows).to(torch.float64)
    _, eigenvectors = torch.linalg.eigh(moment)  # ascending eigenvalues
    basis = eigenvectors[:, -components:].flip(1).to(vectors.dtype).contiguous()
    return replace(library, vectors=vectors @ basis, basis=basis)


def shell_index(size: int, device=None) -> torch.Tensor:
    """Ring of each rfft2 coefficient of an S×S image: round(|k|) in cycles per box, the
    corners beyond S/2 folded into the last ring; (S, S//2 + 1) long."""
    ky = torch.fft.fftfreq(size, device=device) * size
    kx = torch.fft.rfftfreq(size, device=device) * size
    radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    return torch.round(radius).long().clamp(max=size // 2)


def shell_power(images: torch.Tensor) -> torch.Tensor:
    """Power Σ|X_k|²/(S·S) per frequency ring of images (B, S, S): (B, R); sums to ‖x‖²."""
    size = images.shape[-1]
    spectrum = torch.fft.rfft2(images).abs() ** 2 * rfft_weights(size, images.dtype, images.device)
    shells = shell_index(size, images.device).flatten()
    out = images.new_zeros(images.shape[0], size // 2 + 1)
    out.index_add_(1, shells, spectrum.flatten(-2))
    return out / size**2


def shell_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of rfft-grid values (B, S, S//2+1) over each frequency ring: (B, R)."""
    size = values.shape[-2]
    shells = shell_index(size, values.device).flatten()
    weights = rfft_weights(size, values.dtype, values.device).expand(size, -1).flatten()
    total = values.new_zeros(values.shape[0], size // 2 + 1)
    total.index_add_(1, shells, values.flatten(-2) * weights)
    count = values.new_zeros(size // 2 + 1).index_add_(0, shells, weights)
    return total / count


def shift_grid_A(max_shift_A: float, pixel_size_A: float) -> torch.Tensor:
    """Candidate origins (n, 2) in Å on the search level's pixel grid, within a disk."""
    radius = int(max(0, round(max_shift_A / pixel_size_A)))
    steps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    grid = torch.cartesian_prod(steps, steps)
    grid = grid[(grid**2).sum(1) <= (radius + 0.5) ** 2]
    return grid * pixel_size_A


def translate(spectrum: torch.Tensor, shift_A: torch.Tensor, size: int, pixel_size_A: float):
    """Spectra (B, S, S//2+1) of images translated by ``shift_A`` Å (x, y): one shift (2,)
    for all, or one per image (B, 2). ``I'(p) = I(p − t)``."""
    kw = {"dtype": torch.float64, "device": spectrum.device}
    ky = torch.fft.fftfreq(size, d=pixel_size_A, **kw)
    kx = torch.fft.rfftfreq(size, d=pixel_size_A, **kw)
    shift_A = shift_A.to(**kw)
    sx, sy = shift_A[..., 0, None, None], shift_A[..., 1, None, None]
    phase = -2 * torch.pi * (kx[None, :] * sx + ky[:, None] * sy)
    return spectrum * torch.polar(torch.ones_like(phase), phase).to(spectrum.dtype)


def search(
    library: Library,
    images: torch.Tensor,
    data_filter: torch.Tensor | None,
    top: int,
    max_shift_A: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best ``top`` (entry, origin) pairs for each image (B, S, S) by NCC with the entry as
    the data would show it (filtered by ``data_filter``, (B, S, S//2+1), e.g. |CTF|).

    NCC(I, F·P) = ⟨F·I, P⟩ / (‖F·P‖ ‖I‖): the numerator is one matrix product with the
    matched-filtered images; ‖F·P‖² = Σ_k F_k² |P_k|² is approximated ring by ring
    (F² averaged per ring × the entry's ring power), a second small product. Without the
    exact norm, entries whose power sits where the CTF is weak would be favoured. Origins
    are tried on a disk of whole search pixels up to ``max_shift_A``: the image translated
    by an origin s matches the centered projection (RELION convention).
    Returns (scores (B, top), entry index (B, top), origins_A (B, top, 2)).
    """
    level = library.level
    with torch.no_grad():
        centered = images - images.mean((-1, -2), keepdim=True)
        image_norm = centered.flatten(-2).norm(dim=-1).clamp_min(1e-30)
        spectrum = torch.fft.rfft2(centered)
        if data_filter is None:
            norms = library.shell_power.sum(1).sqrt()[None, :]
        else:
            spectrum = spectrum * data_filter
            weights = shell_mean(data_filter**2)  # (B, R)
            norms = (weights @ library.shell_power.T).clamp_min(1e-30).sqrt()
        scale = 1.0 / (norms * image_norm[:, None])
        shifts = shift_grid_A(max_shift_A, level.pixel_size_A)
        best_scores = best_index = best_shift = None
        k = min(top, library.vectors.shape[0])
        for shift in shifts:
            moved = torch.fft.irfft2(
                translate(spectrum, shift, level.size, level.pixel_size_A), s=images.shape[-2:]
            )
            flat = moved.flatten(-2)
            if library.basis is not None:
                flat = flat @ library.basis
            scores, index = torch.topk((flat @ library.vectors.T) * scale, k, dim=1)
            shift_rows = shift.to(images).expand(*index.shape, 2)
            if best_scores is None:
                best_scores, best_index, best_shift = scores, index, shift_rows
                continue
            merged = torch.cat([best_scores, scores], 1)
            order = torch.topk(merged, k, dim=1).indices
            best_scores = torch.gather(merged, 1, order)
            best_index = torch.gather(torch.cat([best_index, index], 1), 1, order)
            best_shift = torch.gather(
                torch.cat([best_shift, shift_rows], 1), 1, order[..., None].expand(-1, -1, 2)
            )
        return best_scores, best_index, best_shift
