"""Stage 1 on a batch of images: global search, then coarse-to-fine joint refinement."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deephemnma.align.refine import Pose, refine
from deephemnma.align.search import Library, build_library, compress_library, search
from deephemnma.align.similarity import crop_images, ctf_filter, levels_for
from deephemnma.ctf import CTFParams
from deephemnma.project import AtomModel, merge_narrow_gaussians


@dataclass(frozen=True)
class AlignConfig:
    """How Stage 1 searches and refines (sizes in pixels of the cropped images).

    search_size: box of the global search; library_spacing_deg: orientation spacing of
    the projection library; candidates: best library entries refined per image at the
    first level (the best of them goes on); sizes/steps/lrs: the refinement levels
    (Adam steps and peak learning rates in scaled units; large early rates let few steps
    travel far, measured on paper-ak);
    amplitude_range: the largest |amplitude| expected (dimensionless, as the modes' unit
    vectors); the library holds conformations on a grid of ``grid_points`` values per mode
    spanning ±⅔ of it (every point of the range is then within ⅓ of it from the grid);
    max_shift_A: origins tried by the global search (whole search pixels within this
    radius); refinement can move further; library_components: principal directions the
    library is compressed to (0: the full search_size² pixels), see
    :func:`~deephemnma.align.search.compress_library`. 256 of 32² = 1,024: on 500 paper-ak
    images the same accuracy as the full library at 0.23 instead of 0.32 CPU-s per image
    (128 let one image fail grossly).
    """

    search_size: int = 32
    library_spacing_deg: float = 12.0
    candidates: int = 6
    sizes: tuple[int, ...] = (32, 64, 128)
    steps: tuple[int, ...] = (20, 10, 10)
    lrs: tuple[float, ...] = (1.0, 0.3, 0.1)
    amplitude_range: float = 200.0
    grid_points: int = 3
    max_shift_A: float = 3.0
    candidate_steps: int = 8
    batch_size: int = 16
    library_components: int = 256
    extra: dict = field(default_factory=dict)


def conformation_grid(n_modes: int, amplitude_range: float, points: int) -> torch.Tensor:
    """Amplitude sets (C, K) on a regular grid; with many modes (points^K > 27) only the
    center and the grid points along each mode axis, to bound the library size."""
    if n_modes == 0 or points <= 1:
        return torch.zeros(1, n_modes, dtype=torch.float64)
    values = torch.linspace(
        -2 * amplitude_range / 3, 2 * amplitude_range / 3, points, dtype=torch.float64
    )
    if points**n_modes <= 27:
        return torch.cartesian_prod(*[values] * n_modes).reshape(-1, n_modes)
    axes = [torch.zeros(1, n_modes, dtype=torch.float64)]
    for k in range(n_modes):
        for v in values[values != 0]:
            row = torch.zeros(1, n_modes, dtype=torch.float64)
            row[0, k] = v
            axes.append(row)
    return torch.cat(axes)


def make_library(
    model: AtomModel,
    image_size: int,
    pixel_size_A: float,
    config: AlignConfig,
    progress: bool = False,
) -> Library:
    level = levels_for(image_size, pixel_size_A, (config.search_size,))[0]
    conformations = conformation_grid(model.n_modes, config.amplitude_range, config.grid_points)
    conformations = conformations.to(model.coords_A.device)
    coarse = merge_narrow_gaussians(model, level.pixel_size_A)
    library = build_library(
        coarse, config.library_spacing_deg, level, conformations, progress=progress
    )
    return compress_library(library, config.library_components)


def align_images(
    model: AtomModel,
    library: Library,
    images: torch.Tensor,
    pixel_size_A: float,
    ctf: CTFParams | None,
    phase_flipped: bool,
    config: AlignConfig,
) -> Pose:
    """Estimate amplitudes, rotation and shift for images (B, N, N); returns the final
    :class:`Pose` (score: NCC at the finest level)."""
    dtype, device = model.coords_A.dtype, model.coords_A.device
    images = images.to(device=device, dtype=dtype)
    levels = levels_for(images.shape[-1], pixel_size_A, config.sizes)
    search_level = library.level
    batch = images.shape[0]

    # Global search on matched-filtered images.
    small = crop_images(images, search_level)
    filt = ctf_filter(ctf, search_level, phase_flipped, dtype, device)
    _, index, origins = search(library, small, filt, config.candidates, config.max_shift_A)
    n_cand = index.shape[1]
    flat = index.reshape(-1)
    n_modes = model.n_modes
    amplitudes = (
        (
            library.amplitudes[flat]
            if library.amplitudes is not None
            else torch.zeros(flat.shape[0], n_modes, dtype=dtype, device=device)
        )
        if n_modes
        else None
    )
    pose = Pose(
        library.matrices[flat],
        amplitudes,
        origins.reshape(-1, 2).to(dtype),
        torch.zeros(flat.shape[0], dtype=dtype, device=device),
    )
    rows = torch.arange(batch, device=device).repeat_interleave(n_cand)

    for k, level in enumerate(levels):
        level_images = crop_images(images, level)
        level_filter = ctf_filter(ctf, level, phase_flipped, dtype, device)
        level_model = merge_narrow_gaussians(model, level.pixel_size_A)
        steps = config.steps[k]
        if k == 0:
            # All candidates for a few steps, then only each image's best goes on.
            trial = min(config.candidate_steps, steps)
            pose = refine(
                level_model,
                level_images[rows],
                None if level_filter is None else level_filter[rows],
                pose,
                level,
                trial,
                config.lrs[k],
            )
            best = pose.score.reshape(batch, n_cand).argmax(1)
            pose = pose.take(torch.arange(batch, device=device) * n_cand + best)
            steps -= trial
        if steps > 0:
            pose = refine(
                level_model, level_images, level_filter, pose, level, steps, config.lrs[k]
            )
    return pose
