"""One group's reconstruction: random half sets → half maps → FSC → Wiener-filtered map, an
optional map simulated from the group's centroid model, and the files ``reconstruct`` writes.

Per group, in ``OUT/<folder>/`` (layout documented in docs/reconstruct.md, read by the
explorer): ``map.mrc``, ``half1.mrc``, ``half2.mrc``, ``fsc.csv``, ``fsc.png``,
``slices.png``, ``summary.json`` (and ``model.mrc`` when a modes file gave a centroid model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deephemnma.ctf import CTFParams
from deephemnma.errors import InputError
from deephemnma.geometry import euler_to_matrix
from deephemnma.io.atomic import atomic_write_text
from deephemnma.progress import progress_bar
from deephemnma.reconstruct.backproject import (
    backproject,
    finish,
    floor_tau,
    new_accumulator,
    shell_mean_weight,
    wiener_map,
    wiener_tau,
)
from deephemnma.reconstruct.fsc import FSCCurve, fourier_shell_correlation, plot_fsc, write_fsc_csv

PHASE_FLIPPED = "rlnCtfDataArePhaseFlipped"
PREMULTIPLIED = "rlnCtfDataAreCtfPremultiplied"
FILES = ("map.mrc", "half1.mrc", "half2.mrc", "fsc.csv", "fsc.png", "slices.png", "summary.json")


@dataclass(frozen=True)
class ReconstructionSettings:
    """box: map size in voxels (None: the images' box; another even size resamples the images
    in Fourier space, voxel = pixel × image box / box); pad: oversampling of the 3D grid;
    batch_size: images read and inserted per step; seed: random half sets; device: torch
    device; tau_floor: smallest regularizer, as a fraction of the shell's mean weight."""

    box: int | None = None
    pad: int = 2
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    tau_floor: float = 1e-3

    def validate(self) -> None:
        from deephemnma.errors import check_settings

        checks = [
            (self.box is None or (self.box >= 8 and self.box % 2 == 0), "box", "an even size ≥ 8"),
            (self.pad in (1, 2, 3, 4), "pad", "1, 2, 3 or 4"),
            (self.batch_size >= 1, "batch_size", "a positive count"),
            (self.tau_floor > 0, "tau_floor", "a positive fraction"),
        ]
        check_settings(self, checks, "reconstruction")


@dataclass(frozen=True)
class ParticleData:
    """Everything a reconstruction reads, one row per particle of the table.

    images: a :class:`deephemnma.io.mrc.ParticleImages` reader (memory-mapped stacks).
    angles_deg: (N, 3) RELION rot, tilt, psi; shifts_A: (N, 2) RELION origins.
    ctf: per-particle CTF parameters; ctf_mode: how the images carry the CTF (``multiply``,
    ``phase-flipped``, ``premultiplied``). pixel_size_A, image_size: of the images.
    """

    images: object
    angles_deg: np.ndarray
    shifts_A: np.ndarray
    ctf: CTFParams
    ctf_mode: str
    pixel_size_A: float
    image_size: int

    def __len__(self) -> int:
        return len(self.angles_deg)


def particle_data(poses_table, images_table=None) -> ParticleData:
    """Poses from ``poses_table``; images, CTF and pixel size from ``images_table`` (default the
    same table), matched row by row (the paper: poses estimated on downsampled images, maps
    from the original ones; shifts in Å do not depend on the pixel size).

    InputError when a pose column is missing (naming the file and the column), when the two
    tables differ in length, or when optics groups disagree on the pixel size or box.
    """
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import (
        angles_deg,
        column,
        common_image_size_px,
        common_pixel_size_A,
        ctf_parameters,
        shifts_A,
    )

    images_table = poses_table if images_table is None else images_table
    if len(images_table) != len(poses_table):
        raise InputError(
            "the image STAR must list the same particles, in the same order, as the poses",
            path=images_table.path,
            expected=f"{len(poses_table)} particles (as {poses_table.path})",
            found=f"{len(images_table)} particles",
        )
    if len(poses_table) == 0:
        raise InputError("no particles", path=poses_table.path)
    angles = angles_deg(poses_table)
    shifts = shifts_A(poses_table)
    flipped = np.asarray(column(images_table, PHASE_FLIPPED, default=0), dtype=float)
    premultiplied = np.asarray(column(images_table, PREMULTIPLIED, default=0), dtype=float)
    if len(set(flipped.tolist())) > 1 or len(set(premultiplied.tolist())) > 1:
        raise InputError(
            "optics groups disagree on whether the images are phase-flipped/premultiplied",
            path=images_table.path,
            field=PHASE_FLIPPED,
            expected="one value for all particles",
        )
    mode = "multiply"
    if premultiplied[0]:
        mode = "premultiplied"
    elif flipped[0]:
        mode = "phase-flipped"
    return ParticleData(
        images=ParticleImages(images_table),
        angles_deg=angles,
        shifts_A=shifts,
        ctf=ctf_parameters(images_table),
        ctf_mode=mode,
        pixel_size_A=common_pixel_size_A(images_table),
        image_size=common_image_size_px(images_table),
    )


@dataclass(frozen=True)
class GroupReconstruction:
    """The maps (box³ float32 numpy) and curves of one group."""

    name: str
    indices: np.ndarray
    map: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    fsc_half: FSCCurve
    voxel_size_A: float
    timing_s: dict
    model_map: np.ndarray | None = None
    fsc_model: FSCCurve | None = None
    extra: dict = field(default_factory=dict)


def half_sets(n: int, seed: int) -> np.ndarray:
    """Random half sets: (n,) of 0 and 1, ⌈n/2⌉ zeros, from ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    sets = np.zeros(n, dtype=np.int64)
    sets[order[(n + 1) // 2 :]] = 1
    return sets


def reconstruct_group(
    data: ParticleData,
    indices: np.ndarray,
    settings: ReconstructionSettings,
    name: str = "all",
    progress: bool = True,
) -> GroupReconstruction:
    """Half maps, their FSC and the Wiener-filtered map of the particles ``indices`` (rows).

    The regularizer of the full map is per shell from the half-map FSC
    (:func:`deephemnma.reconstruct.backproject.wiener_tau`); the half maps use only the floor
    ``settings.tau_floor`` (unfiltered, for an unbiased FSC).
    """
    settings.validate()
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) < 2:
        raise InputError(
            f"group '{name}' needs at least 2 particles for two half sets",
            found=str(len(indices)),
        )
    start = time.perf_counter()
    box = settings.box or data.image_size
    voxel_A = data.pixel_size_A * data.image_size / box
    device = torch.device(settings.device)
    acc = new_accumulator(box, voxel_A, n_sets=2, pad=settings.pad, device=device)
    sets = half_sets(len(indices), settings.seed)
    read_s = 0.0
    with progress_bar(len(indices), f"reconstruct {name}", enabled=progress) as bar:
        for lo in range(0, len(indices), settings.batch_size):
            rows = indices[lo : lo + settings.batch_size]
            t = time.perf_counter()
            images = torch.from_numpy(data.images.images(rows))
            read_s += time.perf_counter() - t
            angles = torch.from_numpy(data.angles_deg[rows])
            backproject(
                acc,
                images,
                euler_to_matrix(angles).float(),
                torch.from_numpy(data.shifts_A[rows]).float(),
                data.pixel_size_A,
                data.ctf.index(rows),
                sets=sets[lo : lo + settings.batch_size],
                ctf_mode=data.ctf_mode,
            )
            bar.advance(len(rows))
    inserted = time.perf_counter()
    acc = finish(acc)
    weights = [shell_mean_weight(acc, [s]) for s in (0, 1)]
    half1 = wiener_map(acc, floor_tau(weights[0], settings.tau_floor), [0])
    half2 = wiener_map(acc, floor_tau(weights[1], settings.tau_floor), [1])
    fsc_half = fourier_shell_correlation(half1, half2, voxel_A)
    tau = wiener_tau(weights[0] + weights[1], torch.from_numpy(fsc_half.fsc), settings.tau_floor)
    full = wiener_map(acc, tau)
    del acc
    end = time.perf_counter()
    return GroupReconstruction(
        name=name,
        indices=indices,
        map=full.cpu().numpy().astype(np.float32),
        half1=half1.cpu().numpy().astype(np.float32),
        half2=half2.cpu().numpy().astype(np.float32),
        fsc_half=fsc_half,
        voxel_size_A=voxel_A,
        timing_s={
            "read": round(read_s, 3),
            "insert": round(inserted - start - read_s, 3),
            "maps_and_fsc": round(end - inserted, 3),
            "reconstruction": round(end - start, 3),
        },
    )


def model_map(
    modes, amplitudes: np.ndarray | None, box: int, voxel_size_A: float, device="cpu"
) -> np.ndarray:
    """The Peng potential (per Å³, box³ voxels) of the modes file's reference deformed by
    ``amplitudes`` (K,), one per mode of ``modes`` (None: undeformed); coordinates relative
    to the box center, as everywhere in deephemnma."""
    from deephemnma.nma.modes import deform
    from deephemnma.project import atom_model, density_map

    coords = modes.structure.coords_A if amplitudes is None else deform(modes, amplitudes)
    model = atom_model(modes.structure.with_coords(coords), device=device, dtype=torch.float64)
    volume = density_map(model.coords_A, model.weight, model.sigma_A, box, voxel_size_A)
    return volume.cpu().numpy().astype(np.float32)


def with_model(result: GroupReconstruction, model: np.ndarray, extra: dict) -> GroupReconstruction:
    """``result`` with a model map, the FSC of the full map against it, and ``extra`` facts."""
    from dataclasses import replace

    curve = fourier_shell_correlation(
        torch.from_numpy(result.map), torch.from_numpy(model), result.voxel_size_A
    )
    return replace(result, model_map=model, fsc_model=curve, extra={**result.extra, **extra})


def _resolution(curve: FSCCurve, threshold: float) -> float:
    return round(curve.resolution_A(threshold), 4)


def group_summary(result: GroupReconstruction) -> dict:
    """The facts of ``summary.json`` (resolutions in Å; ``*_at_nyquist`` is true when the
    curve never fell below the threshold, so the value is the Nyquist limit)."""
    summary = {
        "name": result.name,
        "n_particles": int(len(result.indices)),
        "box": int(result.map.shape[0]),
        "voxel_size_A": result.voxel_size_A,
        "resolution_fsc0143_A": _resolution(result.fsc_half, 0.143),
        "resolution_fsc05_A": _resolution(result.fsc_half, 0.5),
        "fsc0143_at_nyquist": result.fsc_half.crossing(0.143) is None,
        "fsc05_at_nyquist": result.fsc_half.crossing(0.5) is None,
    }
    if result.fsc_model is not None:
        summary.update(
            {
                "resolution_model_fsc0143_A": _resolution(result.fsc_model, 0.143),
                "resolution_model_fsc05_A": _resolution(result.fsc_model, 0.5),
                "model_fsc0143_at_nyquist": result.fsc_model.crossing(0.143) is None,
                "model_fsc05_at_nyquist": result.fsc_model.crossing(0.5) is None,
            }
        )
    summary.update(result.extra)
    summary["timing_s"] = result.timing_s
    return summary


def write_group(folder: str | Path, result: GroupReconstruction, summary: dict) -> Path:
    """Write the group's files (atomically, one by one) into ``folder``; returns it."""
    from deephemnma.io.mrc import write_volume

    folder = Path(folder)
    voxel = result.voxel_size_A
    write_volume(folder / "half1.mrc", result.half1, voxel)
    write_volume(folder / "half2.mrc", result.half2, voxel)
    write_volume(folder / "map.mrc", result.map, voxel)
    curves = {"half_maps": result.fsc_half}
    if result.fsc_model is not None:
        curves["model"] = result.fsc_model
        write_volume(folder / "model.mrc", result.model_map, voxel)
    write_fsc_csv(folder / "fsc.csv", curves)
    plot_fsc(folder / "fsc.png", curves, title=f"{result.name}: {len(result.indices)} particles")
    plot_slices(folder / "slices.png", result.map, voxel, title=result.name)
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))
    return folder


def plot_slices(path: str | Path, volume: np.ndarray, voxel_size_A: float, title: str = "") -> Path:
    """Central slices (z, y, x through the box center) and the projection along z (PNG)."""
    from deephemnma.plotting import plt, save_figure

    c = volume.shape[0] // 2
    panels = [
        (volume[c], "central z slice (x →, y ↓)"),
        (volume[:, c], "central y slice (x →, z ↓)"),
        (volume[:, :, c], "central x slice (y →, z ↓)"),
        (volume.sum(0) * voxel_size_A, "projection along z"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    extent_A = volume.shape[0] * voxel_size_A
    for ax, (image, label) in zip(axes, panels, strict=True):
        lo, hi = np.percentile(image, [0.5, 99.5])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(
            f"{title} — box {volume.shape[0]}, {voxel_size_A:.3g} Å/voxel ({extent_A:.0f} Å)",
            fontsize=10,
        )
    fig.tight_layout()
    return save_figure(fig, path)


def expected_memory_GB(box: int, pad: int) -> float:
    """Accumulator memory of one group: two sets of complex64 sums and float32 weights."""
    m = pad * box
    return 2 * 12 * m * m * (m // 2 + 2) / 1e9
