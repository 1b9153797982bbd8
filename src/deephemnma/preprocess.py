"""Particle preprocessing: CTF phase flip, antialiased downsampling, RELION normalization.

Downsampling crops the Fourier transform to the target size: an ideal low-pass at the new
Nyquist frequency (paper: 256 → 128 px, 0.325 → 0.65 Å, cutoff 1.3 Å), so nothing aliases.
The image center (index N//2) keeps its physical position, so shifts in Å carry over
unchanged. Intensities keep their scale (a mean density stays a mean density).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from deephemnma.ctf import CTFParams, ctf_rfft_shared
from deephemnma.errors import InputError


@dataclass(frozen=True)
class PreprocessConfig:
    """out_size: target box (px); phase_flip: multiply by sign(CTF) first; normalize: RELION
    normalization (background mean 0, std 1) outside a circle of ``bg_radius_fraction`` of
    the half box."""

    out_size: int = 128
    phase_flip: bool = True
    normalize: bool = False
    bg_radius_fraction: float = 0.75
    chunk_size: int = 1000
    batch_size: int = 64


def target_size(
    in_size: int, pixel_size_A: float, out_size: int | None, out_pixel_size_A: float | None
) -> int:
    """The output box from either a size or a pixel size (nearest even box); default: same."""
    if out_size is not None and out_pixel_size_A is not None:
        raise InputError("give an output size or a pixel size, not both", field="--size")
    if out_pixel_size_A is not None:
        if out_pixel_size_A <= 0:
            raise InputError(
                "pixel size must be positive", field="--pixel-size", found=str(out_pixel_size_A)
            )
        out_size = 2 * round(in_size * pixel_size_A / out_pixel_size_A / 2)
    out_size = in_size if out_size is None else out_size
    if out_size <= 0 or out_size % 2 or out_size > in_size:
        raise InputError(
            "output box must be even, positive and not larger than the input",
            field="--size",
            expected=f"an even size ≤ {in_size}",
            found=str(out_size),
        )
    return out_size


def crop_spectrum(spectrum: torch.Tensor, image_size: int, out_size: int) -> torch.Tensor:
    """Keep the frequencies of an (…, M, M) box from an rfft2 spectrum of an (…, N, N) box.

    The Nyquist row and column of the result are zeroed so the kept band is symmetric: an
    antialiasing low-pass at the new Nyquist frequency (M/2 cycles per box).
    """
    if out_size > image_size or out_size % 2:
        raise InputError(
            "target size must be even and not larger than the images",
            field="out_size",
            expected=f"an even size ≤ {image_size}",
            found=str(out_size),
        )
    half = out_size // 2
    cropped = torch.cat(
        [spectrum[..., :half, : half + 1], spectrum[..., image_size - half :, : half + 1]], dim=-2
    )
    cropped[..., half, :] = 0
    cropped[..., :, half] = 0
    return cropped


def fourier_crop(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """Downsample (..., N, N) images to (..., M, M) by cropping the spectrum; keeps the mean."""
    n = images.shape[-1]
    if out_size == n:
        return images
    cropped = crop_spectrum(torch.fft.rfft2(images), n, out_size)
    return torch.fft.irfft2(cropped, s=(out_size, out_size)) * (out_size / n) ** 2


def background_mask(size: int, radius_fraction: float, device=None) -> torch.Tensor:
    """True outside a centered circle of radius ``radius_fraction · size/2`` (pixels)."""
    coords = torch.arange(size, device=device) - size // 2
    r2 = coords[:, None] ** 2 + coords[None, :] ** 2
    return r2 > (radius_fraction * size / 2) ** 2


def normalize_background(images: torch.Tensor, radius_fraction: float = 0.75) -> torch.Tensor:
    """RELION-style normalization: background (outside the circle) mean 0 and std 1."""
    mask = background_mask(images.shape[-1], radius_fraction, images.device)
    background = images[..., mask]
    mean = background.mean(-1)[..., None, None]
    std = background.std(-1).clamp_min(1e-12)[..., None, None]
    return (images - mean) / std


def preprocess_images(
    images: torch.Tensor,
    ctf: CTFParams | None,
    pixel_size_A: float,
    config: PreprocessConfig,
) -> torch.Tensor:
    """Phase flip (if ``ctf`` is given), crop to ``config.out_size``, normalize.

    One forward and one inverse FFT per image: the flip is applied to the cropped spectrum,
    with the CTF evaluated only at the kept frequencies (the same frequencies, since the
    physical box N·p is unchanged).
    """
    n = images.shape[-1]
    out = config.out_size
    spectrum = crop_spectrum(torch.fft.rfft2(images), n, out)
    if ctf is not None:
        out_pixel_A = pixel_size_A * n / out
        values = ctf_rfft_shared(ctf, out, out_pixel_A, device=images.device, dtype=images.dtype)
        spectrum = spectrum * torch.sign(values)
    result = torch.fft.irfft2(spectrum, s=(out, out)) * (out / n) ** 2
    if config.normalize:
        result = normalize_background(result, config.bg_radius_fraction)
    return result


def preprocess_dataset(
    star_path: str | Path,
    out_dir: str | Path,
    config: PreprocessConfig,
    progress: bool = True,
) -> Path:
    """Preprocess every particle of a STAR file into chunked stacks and a new STAR.

    The new STAR keeps all columns (poses in Å, amplitudes, ground truth) and updates the
    image names, ``rlnImagePixelSize``, ``rlnImageSize`` and ``rlnCtfDataArePhaseFlipped``.
    Resumable: finished chunks are kept, by the same job only (``OUT/preprocess.json``: the
    settings and the input STAR's SHA-256; InputError if they changed).
    """
    from deephemnma import __version__
    from deephemnma.chunks import claim_folder, write_chunked_stacks
    from deephemnma.io.digest import files_sha256
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import (
        ParticleTable,
        ctf_parameters,
        phase_flipped,
        read_particles,
        write_particles,
    )

    table = read_particles(star_path)
    optics = table.optics
    if len(optics) != 1:
        # One output pixel size per optics group would need per-group sizes; keep it simple
        # and explicit rather than silently mixing pixel sizes.
        pixel_sizes = optics["rlnImagePixelSize"].unique()
        if len(pixel_sizes) > 1:
            raise InputError(
                "optics groups have different pixel sizes",
                path=star_path,
                field="rlnImagePixelSize",
                expected="one pixel size",
                found=", ".join(map(str, pixel_sizes)),
            )
    row = optics.iloc[0]
    in_size = int(row["rlnImageSize"])
    pixel_size_A = float(row["rlnImagePixelSize"])
    already_flipped = phase_flipped(table)
    do_flip = config.phase_flip and not already_flipped
    out_pixel_A = pixel_size_A * in_size / config.out_size
    reader = ParticleImages(table)
    particles = table.particles
    ctf = ctf_parameters(table) if do_flip else None

    def compute(index: int, sl: slice) -> np.ndarray:
        out = []
        for lo in range(sl.start, sl.stop, config.batch_size):
            idx = np.arange(lo, min(lo + config.batch_size, sl.stop))
            images = torch.as_tensor(reader.images(idx), dtype=torch.float32)
            out.append(
                preprocess_images(
                    images, ctf.index(idx) if do_flip else None, pixel_size_A, config
                ).numpy()
            )
        return np.concatenate(out)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in asdict(config).items() if k != "batch_size"}  # speed only
    record = {
        "deephemnma": __version__,
        "particles": str(Path(star_path).resolve()),
        "inputs_sha256": files_sha256({"particles": star_path}),
        "config": settings,
    }
    claim_folder(out / "preprocess.json", record, "preprocessed particles")
    names = write_chunked_stacks(
        len(particles),
        config.chunk_size,
        out / "stacks",
        "particles",
        config.out_size,
        out_pixel_A,
        compute,
        description="preprocess",
        progress=progress,
    )
    new_particles = particles.copy()
    new_particles["rlnImageName"] = names
    new_optics = optics.copy()
    new_optics["rlnImagePixelSize"] = out_pixel_A
    new_optics["rlnImageSize"] = config.out_size
    new_optics["rlnCtfDataArePhaseFlipped"] = int(do_flip or already_flipped)
    star = out / "particles.star"
    write_particles(star, ParticleTable(optics=new_optics, particles=new_particles))
    return star
