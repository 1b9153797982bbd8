"""Direct Fourier inversion with CTF correction: accumulate ``Σ CTF·F`` and ``Σ CTF²`` on an
oversampled 3D grid, then a Wiener-type division, inverse transform and gridding correction.

For an image with spectrum ``G = CTF · P`` (``P`` the projection's spectrum, a central slice
of the volume's), each slice point adds ``w · c · G`` to the numerator and ``w · c²`` to the
weight of its eight trilinear neighbours (``w`` the trilinear weight), with ``c = CTF``;
``c = |CTF|`` for phase-flipped images (``G = |CTF| · P``); for CTF-premultiplied images
(``G = CTF² · P``) the image itself goes to the numerator. The estimate

    V(k) = Σ w c G / (Σ w c² + τ(|k|))

is the CTF-weighted average of the slice samples near ``k``: the summed weights are the local
sampling density, so the division is the density compensation, and ``τ`` is the Wiener
regularizer (noise-to-signal power per shell, from the half-map FSC: :func:`wiener_tau`).
The local average is a convolution of the spectrum with the trilinear kernel, i.e. the map
times ``sinc²``, which :func:`wiener_map` divides out (gridding correction).

Oversampling as RELION does it: each image's spectrum is computed at its own size ``n`` (its
CTF on the same grid, exactly as the images were formed) and its samples go to a 3D grid
``pad`` times finer (``M = pad · box``); the real-space map is then ``pad`` times larger than
the box and is cropped. The finer grid makes the trilinear kernel ``pad`` times narrower than
the map's frequency step, so interpolation error and the ``sinc²`` fall-off shrink.

Map units: for images in projected potential per Å² (as :mod:`deephemnma.project` renders
them) the map is potential per Å³ (as :func:`deephemnma.project.density_map` computes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from deephemnma.ctf import CTFParams, ctf_rfft_shared
from deephemnma.reconstruct.fourier import (
    accumulator_shape,
    centered_rfft2,
    insert_central_slices,
    shift_phases,
    sinc2,
    slice_grid,
    slice_points,
    symmetrize_x0_plane_,
)

CTF_MODES = ("multiply", "phase-flipped", "premultiplied", "none")
_SLAB = 16  # grid planes per step of the final passes (bounds their temporary memory)


@dataclass(frozen=True)
class FourierAccumulator:
    """Sums of slices for ``n_sets`` independent reconstructions (e.g. two half sets).

    numerator: complex (S, M, M, M // 2 + 2), ``Σ w c G``; weight: real, same shape, ``Σ w c²``:
    half spectra with a spare x plane (:func:`deephemnma.reconstruct.fourier.accumulator_shape`),
    ``M = pad · box``. :func:`finish` completes the ``k_x = 0`` plane after the insertions.
    box: map size (voxels); pad: oversampling; voxel_size_A: the map's voxel size.
    """

    numerator: torch.Tensor
    weight: torch.Tensor
    box: int
    pad: int
    voxel_size_A: float
    finished: bool = False
    shells: torch.Tensor | None = None  # (M, M, M // 2 + 1) int16 map shell, set by finish()

    @property
    def grid_size(self) -> int:
        return self.pad * self.box

    @property
    def n_shells(self) -> int:
        """Frequency shells of the map, 0 … box / 2."""
        return self.box // 2 + 1


def new_accumulator(
    box: int, voxel_size_A: float, n_sets: int = 2, pad: int = 2, device=None
) -> FourierAccumulator:
    """Empty sums (complex64 / float32) for maps of ``box³`` voxels of ``voxel_size_A``.

    Memory: 12 bytes × n_sets × (pad·box)² × (pad·box / 2 + 2); 1.6 GB for two sets of a
    256³ map at pad 2.
    """
    if box % 2 or box < 4:
        raise ValueError(f"the map box must be even and ≥ 4, not {box}")
    shape = (n_sets, *accumulator_shape(pad * box))
    return FourierAccumulator(
        numerator=torch.zeros(shape, dtype=torch.complex64, device=device),
        weight=torch.zeros(shape, dtype=torch.float32, device=device),
        box=box,
        pad=int(pad),
        voxel_size_A=float(voxel_size_A),
    )


def check_field_of_view(acc: FourierAccumulator, image_size: int, pixel_size_A: float) -> None:
    """The map must span the images' field of view (``box · voxel = image_size · pixel``), so
    that an image frequency step is ``pad`` steps of the 3D grid."""
    fov_images, fov_map = image_size * pixel_size_A, acc.box * acc.voxel_size_A
    if not math.isclose(fov_images, fov_map, rel_tol=1e-4):
        raise ValueError(
            f"images of {image_size} px × {pixel_size_A} Å and a map of {acc.box} × "
            f"{acc.voxel_size_A} Å do not span the same field of view"
        )


def backproject(
    acc: FourierAccumulator,
    images: torch.Tensor,
    matrices: torch.Tensor,
    shifts_A: torch.Tensor,
    pixel_size_A: float,
    ctf: CTFParams | None,
    sets: torch.Tensor | np.ndarray | None = None,
    ctf_mode: str = "multiply",
    max_points: int = 1 << 20,
) -> None:
    """Insert images into the accumulator (in place).

    images: (B, n, n) real, origin at ``n // 2`` (RELION); pixel_size_A: their pixel size.
    ``n`` may differ from the map's box when the fields of view agree: the spectrum is then
    cropped to the map's Nyquist frequency (n > box) or leaves the outer shells empty.
    matrices: (B, 3, 3) projection matrices ``A`` (:func:`deephemnma.geometry.euler_to_matrix`).
    shifts_A: (B, 2) RELION origins (x, y) in Å. ctf: parameters of the B images (None only
    with ``ctf_mode="none"``). sets: (B,) the set each image goes to (default 0).
    ctf_mode: ``multiply`` (raw images), ``phase-flipped``, ``premultiplied``, ``none``.
    max_points: slice points processed at once (bounds the memory, ~150 bytes each).
    """
    if ctf_mode not in CTF_MODES:
        raise ValueError(f"ctf_mode must be one of {CTF_MODES}, not {ctf_mode!r}")
    if acc.finished:
        raise ValueError("the accumulator is finished; insert before calling finish()")
    device = acc.numerator.device
    n = images.shape[-1]
    check_field_of_view(acc, n, pixel_size_A)
    grid = slice_grid(n, min(n, acc.box) / 2, device=device)
    # Units: Σ over pixels of a projection in potential/Å² = Σ over voxels of the map in
    # potential/Å³ × voxel³ / pixel²; scale so the map comes out per Å³.
    scale = pixel_size_A**2 / acc.voxel_size_A**3
    sets_t = torch.zeros(len(images), dtype=torch.long, device=device)
    if sets is not None:
        sets_t = torch.as_tensor(np.asarray(sets), dtype=torch.long, device=device)
    step = max(1, max_points // grid.n_points)
    for lo in range(0, len(images), step):
        sl = slice(lo, lo + step)
        batch = images[sl].to(device=device, dtype=torch.float32)
        spectrum = centered_rfft2(batch)[:, grid.rows, grid.cols]
        shift_px = shifts_A[sl].to(device, torch.float32) / pixel_size_A
        spectrum = spectrum * shift_phases(grid, shift_px)
        if ctf_mode == "none":
            c = grid.weight.new_ones(len(batch), grid.n_points)
        else:
            indices = np.arange(lo, lo + len(batch))
            c = ctf_rfft_shared(ctf.index(indices), n, pixel_size_A, device=device)
            c = c[:, grid.rows, grid.cols]
        if ctf_mode == "phase-flipped":
            c = c.abs()
        to_numerator = torch.ones_like(c) if ctf_mode == "premultiplied" else c
        values = spectrum * (to_numerator * grid.weight * scale)
        value_weights = c**2 * grid.weight
        points = slice_points(matrices[sl].to(device, torch.float32), grid, acc.pad)
        batch_sets = sets_t[sl]
        for s in torch.unique(batch_sets).tolist():
            pick = batch_sets == s
            insert_central_slices(
                acc.numerator[s], acc.weight[s], values[pick], value_weights[pick], points[:, pick]
            )


def finish(acc: FourierAccumulator) -> FourierAccumulator:
    """Complete the ``k_x = 0`` planes (in place) after the last insertion; returns the
    accumulator marked finished, with its shell table, ready for :func:`wiener_map`. Calling
    it again is a no-op."""
    if acc.finished:
        return acc
    symmetrize_x0_plane_(acc.numerator)
    symmetrize_x0_plane_(acc.weight)
    return replace(acc, finished=True, shells=_shell_table(acc))


def _shell_table(acc: FourierAccumulator) -> torch.Tensor:
    """Map frequency shell ``round(|k| / pad)`` of every half-spectrum point, capped at
    ``n_shells`` (= outside the map's Nyquist sphere); (M, M, M // 2 + 1) int16."""
    size, device = acc.grid_size, acc.weight.device
    k = torch.fft.fftfreq(size, d=1.0 / size, device=device)
    k2 = k**2
    kx2 = torch.arange(size // 2 + 1, device=device, dtype=k.dtype) ** 2
    table = torch.empty((size, size, size // 2 + 1), dtype=torch.int16, device=device)
    for lo in range(0, size, _SLAB):
        r2 = k2[lo : lo + _SLAB, None, None] + k2[None, :, None] + kx2
        shell = torch.round(torch.sqrt(r2) / acc.pad).clamp_max(acc.n_shells)
        table[lo : lo + _SLAB] = shell.to(torch.int16)
    return table


def _select(tensor: torch.Tensor, sets: list[int] | None) -> torch.Tensor:
    """The given sets of an (S, …) tensor (spare x plane dropped): a view when consecutive."""
    width = tensor.shape[-2] // 2 + 1
    if sets is None:
        return tensor[..., :width]
    sets = [int(s) for s in sets]
    if sets == list(range(sets[0], sets[0] + len(sets))):
        return tensor[sets[0] : sets[0] + len(sets), ..., :width]
    return tensor[sets][..., :width]


def shell_mean_weight(acc: FourierAccumulator, sets: list[int] | None = None) -> torch.Tensor:
    """Mean over each map shell of the summed weight of ``sets`` (default all), (n_shells,).

    Interior half-spectrum points count twice (their Friedel partner), as in a full spectrum.
    """
    if not acc.finished:
        raise ValueError("call finish() on the accumulator first")
    weight = _select(acc.weight, sets)
    size, width = weight.shape[-3], weight.shape[-1]
    n = acc.n_shells
    total = torch.zeros(n + 1, dtype=torch.float64, device=weight.device)
    count = torch.zeros_like(total)
    mult = torch.full((width,), 2.0, dtype=torch.float64, device=weight.device)
    mult[0] = 1.0
    for lo in range(0, size, _SLAB):
        planes = slice(lo, lo + _SLAB)
        shell = acc.shells[planes].reshape(-1).long()
        m = mult.expand(shell.numel() // width, width).reshape(-1)
        w = weight[:, planes].sum(0).reshape(-1).double() * m
        total += torch.bincount(shell, w, minlength=n + 1)
        count += torch.bincount(shell, m, minlength=n + 1)
    return (total / count.clamp_min(1))[:n].float()


def wiener_tau(mean_weight: torch.Tensor, fsc: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """Per-shell regularizer ``τ = σ²_noise / σ²_signal`` for a map of both half sets.

    The full map's SNR is ``2 FSC / (1 − FSC)`` and, unregularized, equals
    ``(Σ c²) σ²_signal / σ²_noise``; so ``τ = mean_weight · (1 − FSC) / (2 FSC)``, with the
    FSC clipped to [1e-3, 1 − 1e-6] and ``τ`` at least ``floor × mean_weight``.
    mean_weight: (n_shells,) of the full map (:func:`shell_mean_weight`); fsc: (n_shells,).
    """
    f = torch.as_tensor(fsc, dtype=mean_weight.dtype, device=mean_weight.device)
    f = f.clamp(1e-3, 1 - 1e-6)
    return torch.maximum(mean_weight * (1 - f) / (2 * f), floor * mean_weight)


def floor_tau(mean_weight: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """The smallest regularizer, ``floor × mean_weight`` per shell: an unfiltered map whose
    empty or barely sampled voxels stay near zero instead of blowing up."""
    return floor * mean_weight


def _sum_sets(tensor: torch.Tensor) -> torch.Tensor:
    return tensor[0] if tensor.shape[0] == 1 else tensor.sum(0)


def _crop_into(out: torch.Tensor, full: torch.Tensor, box: int, dim: int, where=()) -> None:
    """Write the central ``box`` entries (origin first → origin at ``box // 2``) of ``full``
    along ``dim`` into ``out[where]``: indices ``−box/2 … box/2 − 1`` modulo the size."""
    size = full.shape[dim]
    half = box // 2
    target = out[where] if where else out
    target.narrow(dim, 0, half).copy_(full.narrow(dim, size - half, half))
    target.narrow(dim, half, box - half).copy_(full.narrow(dim, 0, box - half))


def wiener_map(
    acc: FourierAccumulator, tau: torch.Tensor, sets: list[int] | None = None
) -> torch.Tensor:
    """The (box, box, box) map of the summed ``sets`` (default all) of a finished accumulator:
    ``Σ w c G / (Σ w c² + τ)``, inverse transform cropped to the box, gridding correction
    (÷ sinc² of the trilinear kernel), and the map's sum restored (see below).

    tau: (n_shells,) per map shell; frequencies beyond the box's Nyquist sphere are zeroed.
    """
    if not acc.finished:
        raise ValueError("call finish() on the accumulator first")
    numerator, weight = _select(acc.numerator, sets), _select(acc.weight, sets)
    size, width, device = acc.grid_size, weight.shape[-1], weight.device
    box = acc.box
    tau_ext = torch.cat([tau.to(device, torch.float32), tau.new_full((1,), math.inf).to(device)])
    # Divide and inverse-transform along z slab by slab (over y), cropping z at once.
    partial = torch.empty((box, size, width), dtype=numerator.dtype, device=device)
    total = 0.0
    for lo in range(0, size, _SLAB):
        rows = slice(lo, lo + _SLAB)
        denominator = _sum_sets(weight[:, :, rows]) + tau_ext[acc.shells[:, rows].long()]
        inverse = torch.where(denominator > 0, 1 / denominator, 0.0)
        # complex × real through the real view: no promotion of the real factor to complex
        ratio = torch.view_as_complex(
            torch.view_as_real(_sum_sets(numerator[:, :, rows])) * inverse[..., None]
        )
        if lo == 0:
            total = float(ratio[0, 0, 0].real)  # the map's sum: its k = 0 term
        _crop_into(partial, torch.fft.ifft(ratio, dim=0), box, 0, (slice(None), rows))
    volume = torch.empty((box, box, width), dtype=numerator.dtype, device=device)
    _crop_into(volume, torch.fft.ifft(partial, dim=1), box, 1)
    del partial
    volume = torch.fft.irfft(volume, n=size, dim=2)
    volume = torch.cat([volume[..., size - box // 2 :], volume[..., : box - box // 2]], -1)
    # Gridding correction: the trilinear kernel's real-space profile on the padded grid.
    profile = sinc2(torch.arange(box, device=device, dtype=torch.float64) - box // 2, size)
    profile = profile.to(volume.dtype)
    volume /= profile[:, None, None] * profile[None, :, None] * profile[None, None, :]
    # Near k = 0 the oversampled grid is sampled only every `pad` steps within each slice;
    # the interpolated values there put a little mass outside the box, which the crop loses.
    # Restore the sum (the k = 0 term, known exactly; no other frequency changes).
    return volume + (total - volume.sum()) / box**3
