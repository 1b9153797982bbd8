"""Flexible fitting of a reference into a target EM map with normal modes (HEMNMA-3D).

The paper chose its modes for real data this way (§3.2.4; Harastani et al. 2021): fit the
reference into a map of another conformation by optimizing the amplitudes of chosen modes
together with a rigid-body pose, then rank the modes by their contribution.

Model. The fitted coordinates are ``x_i = A (r_i + Σ_k q_k v_k,i) + shift_A`` — the reference
deformed along unit-norm modes (CONVENTIONS.md), then rotated by ``A`` (``A r`` per point, as
:func:`deephemnma.project.rotate`; ``A = euler_to_matrix(angles_deg)``, RELION ZYZ) and moved
by ``shift_A`` (x, y, z Å). Coordinates are in the target map's frame: Å relative to its
center voxel (index ``n // 2`` on each axis).

Score. The Pearson correlation over the (cubic, zero-padded) box between the target and a map
simulated from the fitted model, both low-pass filtered by a Gaussian of σ = resolution/(π√2)
(UCSF ChimeraX ``molmap``'s σ: the filter falls to 1/e at 1/resolution). Each atom is one
Gaussian with its Peng 1996 scattering factor's integral and second moment (pseudoatoms: their
own weight and width), widened by the filter's σ, integrated exactly over voxels
(:func:`deephemnma.pseudoatoms.gaussian_map`, differentiable).

Optimization. Coarse to fine: ``levels`` resolutions ``resolution_A · 2^j`` (j = levels−1 … 0);
each level resamples the filtered target by Fourier cropping to voxels of ≈ σ/1.5 (≥ the
map's) and runs L-BFGS (strong-Wolfe line search, autograd) on ``1 − correlation`` from the
previous level's solution. Parameters are scaled to Å of RMS motion so that one step means the
same for all: amplitudes as ``q_k/√N`` (a unit-norm mode with amplitude q moves the N atoms by
``|q|/√N`` Å RMS), the rotation vector (axis × angle, about the reference centroid) times the
radius of gyration, the shift in Å.

Ranking. Modes are ranked by ``|q_k|``: since the modes are orthonormal, ``|q_k|`` is the norm
of the displacement that mode k contributes, ``contribution_k = q_k² / Σ q²`` its share of the
total squared displacement and ``|q_k|/√N`` its RMS displacement (Å). Also reported: the
correlation with mode k's amplitude set to 0 (the rest of the fit kept), whose drop from the
fitted correlation measures how much the map needs that mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from deephemnma.errors import InputError
from deephemnma.geometry import matrix_to_euler
from deephemnma.nma.modes import N_RIGID, Modes
from deephemnma.nma.network import is_pseudoatomic
from deephemnma.progress import StatusLog
from deephemnma.pseudoatoms import (
    auto_threshold,
    gaussian_map,
    pseudoatom_sigma_A,
    pseudoatom_weights,
)
from deephemnma.structure import Structure

DEFAULT_LEVELS = 3
DEFAULT_STEPS = 50
DEFAULT_RESOLUTION_VOXELS = 4.0  # default final resolution: twice the Nyquist limit
SIGMA_PER_RESOLUTION = 1.0 / (math.pi * math.sqrt(2.0))  # ChimeraX molmap's sigmaFactor
VOXELS_PER_SIGMA = 1.5  # coarse levels are resampled to voxels of σ/1.5
MIN_LEVEL_BOX = 16


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`fit_to_map`.

    mode_numbers, amplitudes: (K,) the fitted modes (1-based) and their amplitudes q_k.
    matrix: (3, 3) rotation ``A`` (``A r`` per point); angles_deg: (3,) RELION (rot, tilt,
    psi) with ``euler_to_matrix(angles_deg) = A``; shift_A: (3,) x, y, z.
    coords_A: (N, 3) fitted coordinates ``A (r + Σ q v) + shift`` in the target's frame.
    correlation_before / _after: at the final resolution, reference as placed initially
    (no deformation, identity rotation, ``initial_shift_A``) / fitted.
    ranking: (K,) mode numbers by decreasing |q|; contribution: (K,) q²/Σq² per mode (in
    ``mode_numbers`` order); rms_displacement_A: (K,) |q|/√N; correlation_without: (K,)
    correlation with that mode's amplitude set to 0.
    levels: per level, resolution_A, voxel_size_A, box, correlation, iterations, seconds.
    """

    mode_numbers: np.ndarray
    amplitudes: np.ndarray
    matrix: np.ndarray
    angles_deg: np.ndarray
    shift_A: np.ndarray
    coords_A: np.ndarray = field(repr=False)
    correlation_before: float
    correlation_after: float
    resolution_A: float
    ranking: np.ndarray
    contribution: np.ndarray
    rms_displacement_A: np.ndarray
    correlation_without: np.ndarray
    levels: tuple[dict, ...] = ()
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (no coordinates)."""
        modes = [
            {
                "mode": int(m),
                "amplitude": float(q),
                "contribution": float(c),
                "rms_displacement_A": float(r),
                "correlation_without": float(w),
                "rank": int(np.flatnonzero(self.ranking == m)[0]) + 1,
            }
            for m, q, c, r, w in zip(
                self.mode_numbers,
                self.amplitudes,
                self.contribution,
                self.rms_displacement_A,
                self.correlation_without,
                strict=True,
            )
        ]
        return {
            "modes": modes,
            "ranking": [int(m) for m in self.ranking],
            "matrix": np.asarray(self.matrix).tolist(),
            "angles_deg": [float(a) for a in self.angles_deg],
            "shift_A": [float(s) for s in self.shift_A],
            "correlation_before": float(self.correlation_before),
            "correlation_after": float(self.correlation_after),
            "resolution_A": float(self.resolution_A),
            "levels": list(self.levels),
            "timings_s": self.timings_s,
            "definitions": {
                "fitted coordinates": "A (r + Σ_k q_k v_k) + shift_A, Å from the target "
                "map's center voxel (n//2 per axis)",
                "matrix": "A, applied as A r; euler_to_matrix(angles_deg) = A (RELION ZYZ)",
                "contribution": "q_k² / Σ q² (modes are orthonormal: share of the squared "
                "displacement)",
                "rms_displacement_A": "|q_k| / √N",
                "correlation": "Pearson correlation of target and simulated maps, both "
                "low-pass filtered by a Gaussian of σ = resolution/(π√2)",
                "correlation_without": "correlation with q_k set to 0, all else fitted",
            },
        }


def resolution_sigma_A(resolution_A: float) -> float:
    """σ (Å) of the Gaussian low-pass filter for a resolution (ChimeraX molmap)."""
    return float(resolution_A) * SIGMA_PER_RESOLUTION


def reference_gaussians(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian per node: (weight (N,), sigma_A (N,)).

    Atoms: the integral of Peng's five Gaussians and the σ with the same second moment
    (``σ² = Σ a_i σ_i² / Σ a_i``); pseudoatoms: their weights (ones if unknown) and widths.
    """
    if is_pseudoatomic(structure):
        return pseudoatom_weights(structure), pseudoatom_sigma_A(structure)
    from deephemnma.formfactors import gaussian_sigma_A, peng_parameters

    a, b = peng_parameters(structure.element, source=structure.metadata.get("source", "model"))
    sigma = gaussian_sigma_A(b)
    weight = a.sum(1)
    return weight, np.sqrt((a * sigma**2).sum(1) / weight)


def map_center_of_mass_A(
    volume: np.ndarray, voxel_size_A: float, threshold: float | None = None
) -> np.ndarray:
    """(x, y, z) Å from the center voxel of the density above ``threshold`` (None → auto)."""
    volume = np.asarray(volume, dtype=np.float64)
    threshold = auto_threshold(volume) if threshold is None else float(threshold)
    mass = np.where(volume > threshold, volume - threshold, 0.0)
    if mass.sum() <= 0:
        raise InputError(
            "the target map has nothing above the threshold",
            field="threshold",
            found=f"{threshold:.4g}",
        )
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in volume.shape], indexing="ij")
    zyx = np.array([(g * mass).sum() / mass.sum() for g in grids])
    return zyx[::-1] * voxel_size_A


def fit_to_map(
    modes: Modes,
    target_volume: np.ndarray,
    voxel_size_A: float,
    mode_numbers=None,
    resolution_A: float | None = None,
    levels: int = DEFAULT_LEVELS,
    steps: int = DEFAULT_STEPS,
    fit_pose: bool = True,
    initial_shift_A=None,
    progress: bool = True,
) -> FitResult:
    """Fit ``modes.structure`` into ``target_volume`` with mode amplitudes and a rigid pose.

    modes: the reference's modes (its structure is the reference; coordinates relative to
        the target's center voxel after adding ``initial_shift_A``).
    target_volume: [z, y, x] map, any shape; voxel_size_A: Å per voxel.
    mode_numbers: the modes to fit (1-based, each ≥ 7); None → every flexible mode in
        ``modes``; an empty list fits the pose only.
    resolution_A: final low-pass resolution; None → 4 voxels (twice Nyquist). Give the
        target's resolution when it is coarser.
    levels: coarse-to-fine resolutions ``resolution_A × 2^j``, j = levels−1 … 0.
    steps: L-BFGS iterations per level. fit_pose: also fit rotation and shift.
    initial_shift_A: (3,) x, y, z translation applied to the reference first (e.g. the map's
        center of mass minus the model's), included in the reported ``shift_A``.
    Returns a :class:`FitResult` (see the module docstring for every definition).
    """
    start_time = time.perf_counter()
    if mode_numbers is None:
        mode_numbers = [int(m) for m in modes.mode_numbers if m > N_RIGID]
    mode_numbers = [int(m) for m in mode_numbers]
    rigid = [m for m in mode_numbers if m <= N_RIGID]
    if rigid:
        raise InputError(
            "modes 1–6 are rigid-body motions; the pose is fitted separately",
            field="modes",
            expected="flexible modes ≥ 7 for fitting",
            found=",".join(str(m) for m in rigid),
        )
    chosen = modes.select(mode_numbers)
    voxel_size_A = _check_voxel(voxel_size_A)
    resolution_A = (
        DEFAULT_RESOLUTION_VOXELS * voxel_size_A if resolution_A is None else resolution_A
    )
    if not np.isfinite(resolution_A) or resolution_A <= 0:
        raise InputError("the fitting resolution must be positive", found=str(resolution_A))
    if int(levels) < 1 or int(steps) < 1:
        raise InputError("levels and steps must be at least 1", found=f"{levels}, {steps}")
    target = _target_cube(target_volume)
    log = StatusLog("fit", progress)

    dtype = torch.float32
    structure = chosen.structure
    n = structure.n_atoms
    coords = torch.as_tensor(structure.coords_A, dtype=dtype)
    vectors = torch.as_tensor(chosen.vectors, dtype=dtype)
    weight_np, sigma_np = reference_gaussians(structure)
    weight = torch.as_tensor(weight_np, dtype=dtype)
    sigma_ref = torch.as_tensor(sigma_np, dtype=dtype)
    pivot = coords.mean(0)
    radius_A = max(float((coords - pivot).square().sum(1).mean().sqrt()), 1.0)
    shift0 = torch.as_tensor(
        np.zeros(3) if initial_shift_A is None else np.asarray(initial_shift_A, float), dtype=dtype
    )
    k = chosen.n_modes
    amplitude_scale = math.sqrt(n)

    def place(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fitted coordinates, rotation and total shift from the scaled parameters."""
        q = params[:k] * amplitude_scale
        deformed = coords + torch.einsum("k,knd->nd", q, vectors)
        rotation = _rotation(params[k : k + 3] / radius_A)
        shift = params[k + 3 :] + shift0 + pivot - rotation @ pivot
        return deformed @ rotation.T + shift, rotation, shift

    def correlation(params, level) -> torch.Tensor:
        fitted, _, _ = place(params)
        sigma = torch.sqrt(sigma_ref.square() + level.model_variance_A2)
        simulated = gaussian_map(fitted, weight, sigma, level.box, level.voxel_size_A)
        return _pearson(simulated, level.target)

    params = torch.zeros(k + 6, dtype=dtype)
    free = torch.ones(k + 6, dtype=torch.bool)
    if not fit_pose:
        free[k:] = False
    level_records = []
    resolutions = [resolution_A * 2.0**j for j in range(int(levels) - 1, -1, -1)]
    for number, res in enumerate(resolutions, start=1):
        level = target.level(resolution_sigma_A(res), voxel_size_A)
        t0 = time.perf_counter()
        with torch.no_grad():
            before = float(correlation(params, level))
        params, iterations = _lbfgs(
            lambda p, lv=level: 1.0 - correlation(p, lv), params, free, steps
        )
        with torch.no_grad():
            after = float(correlation(params, level))
        seconds = time.perf_counter() - t0
        level_records.append(
            {
                "resolution_A": round(res, 4),
                "voxel_size_A": round(level.voxel_size_A, 4),
                "box": level.box,
                "correlation_start": before,
                "correlation": after,
                "iterations": iterations,
                "seconds": round(seconds, 3),
            }
        )
        log.line(
            f"level {number}/{len(resolutions)}: {res:.3g} Å, {level.box}³ voxels of "
            f"{level.voxel_size_A:.3g} Å, correlation {before:.4f} → {after:.4f} "
            f"({iterations} iterations, {seconds:.1f} s)"
        )

    with torch.no_grad():
        final = level
        cc_before = float(correlation(torch.zeros_like(params), final))
        cc_after = float(correlation(params, final))
        without = []
        for j in range(k):
            reduced = params.clone()
            reduced[j] = 0.0
            without.append(float(correlation(reduced, final)))
        fitted, rotation, shift = place(params)
    amplitudes = params[:k].double().numpy() * amplitude_scale
    squared = amplitudes**2
    contribution = squared / squared.sum() if squared.sum() > 0 else np.zeros(k)
    order = np.argsort(-np.abs(amplitudes), kind="stable")
    matrix = rotation.double()
    return FitResult(
        mode_numbers=chosen.mode_numbers.copy(),
        amplitudes=amplitudes,
        matrix=matrix.numpy(),
        angles_deg=matrix_to_euler(matrix).numpy(),
        shift_A=shift.double().numpy(),
        coords_A=fitted.double().numpy(),
        correlation_before=cc_before,
        correlation_after=cc_after,
        resolution_A=float(resolution_A),
        ranking=chosen.mode_numbers[order].copy(),
        contribution=contribution,
        rms_displacement_A=np.abs(amplitudes) / amplitude_scale,
        correlation_without=np.array(without),
        levels=tuple(level_records),
        timings_s={"total": round(time.perf_counter() - start_time, 3)},
    )


# --------------------------------------------------------------------------- pieces


def _check_voxel(voxel_size_A) -> float:
    if voxel_size_A is None or not np.isfinite(voxel_size_A) or float(voxel_size_A) <= 0:
        raise InputError(
            "the target map's voxel size is unknown",
            field="voxel size",
            expected="> 0 Å (set it in the MRC header or give it explicitly)",
            found=str(voxel_size_A),
        )
    return float(voxel_size_A)


def _rotation(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrix exp([ω]×) of a rotation vector ω (3,) (radians), differentiable."""
    zero = omega.new_zeros(())
    skew = torch.stack(
        [
            torch.stack([zero, -omega[2], omega[1]]),
            torch.stack([omega[2], zero, -omega[0]]),
            torch.stack([-omega[1], omega[0], zero]),
        ]
    )
    return torch.linalg.matrix_exp(skew)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / torch.sqrt(a.square().sum() * b.square().sum()).clamp_min(1e-30)


def _lbfgs(loss_fn, params: torch.Tensor, free: torch.Tensor, steps: int):
    """Minimize ``loss_fn(params)`` over the ``free`` entries; returns (params, iterations)."""
    fixed = params.detach().clone()
    x = params.detach()[free].clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=int(steps),
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def full(values):
        out = fixed.clone()
        out[free] = values
        return out

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(full(x))
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[x].get("n_iter", 0))
    return full(x.detach()), iterations


@dataclass(frozen=True)
class _Level:
    """One resolution level: the filtered, resampled target and the variance (Å²) to add to
    each model Gaussian so that the simulated map has the same blur."""

    target: torch.Tensor  # (box,)*3
    box: int
    voxel_size_A: float
    sigma_A: float
    model_variance_A2: float


class _TargetCube:
    """The target in an even cube (zero-padded, center voxel kept) and its spectrum."""

    def __init__(self, volume: np.ndarray) -> None:
        shape = np.array(volume.shape)
        size = int(shape.max())
        size += size % 2
        cube = np.zeros((size,) * 3, dtype=np.float32)
        before = size // 2 - shape // 2
        cube[tuple(slice(b, b + s) for b, s in zip(before, shape, strict=True))] = volume
        self.size = size
        # Origin (center voxel) moved to index 0 for the DFT.
        cube_t = torch.as_tensor(cube, dtype=torch.float32)  # complex64 spectrum: half memory
        self.spectrum = torch.fft.fftn(torch.fft.ifftshift(cube_t))

    def level(self, sigma_A: float, voxel_size_A: float) -> _Level:
        """The target low-pass filtered by a Gaussian of σ, Fourier-cropped to voxels ≈ σ/1.5."""
        size = self.size
        box = int(round(size * voxel_size_A * VOXELS_PER_SIGMA / sigma_A / 2)) * 2
        box = min(size, max(box, min(size, MIN_LEVEL_BOX)))
        index = torch.cat([torch.arange(box // 2), torch.arange(size - box // 2, size)])
        freq = torch.fft.fftfreq(size, d=voxel_size_A, dtype=torch.float32)[index]
        k2 = freq[:, None, None] ** 2 + freq[None, :, None] ** 2 + freq[None, None, :] ** 2
        cropped = self.spectrum[index][:, index][:, :, index]
        filtered = cropped * torch.exp(-2.0 * math.pi**2 * sigma_A**2 * k2)
        values = torch.fft.fftshift(torch.fft.ifftn(filtered).real) * (box / size) ** 3
        level_voxel_A = voxel_size_A * size / box
        # The target holds averages over the map's voxels, now sampled at points; the model
        # is averaged over the level's (larger) voxels. A voxel average blurs like a Gaussian
        # of variance voxel²/12, so the model Gaussians get σ² + σ_filter² + (v² − v_level²)/12.
        return _Level(
            target=values.to(torch.float32),
            box=box,
            voxel_size_A=level_voxel_A,
            sigma_A=float(sigma_A),
            model_variance_A2=float(sigma_A**2 + (voxel_size_A**2 - level_voxel_A**2) / 12.0),
        )


def _target_cube(volume) -> _TargetCube:
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise InputError(
            "the target is not a 3D map", expected="[z, y, x]", found=str(volume.shape)
        )
    if not np.all(np.isfinite(volume)):
        raise InputError("the target map has non-finite values (NaN or inf)")
    if float(volume.std()) == 0.0:
        raise InputError("the target map is constant: nothing to fit")
    return _TargetCube(volume)
