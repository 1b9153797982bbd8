"""Training data: labels, splits, input normalization and label-exact augmentation.

**Images** are read through :class:`deephemnma.io.mrc.ParticleImages` (only the requested
images are read; picklable, so DataLoader workers read for themselves). A batch
is fetched at once: the loader's sampler yields ``(positions, seed)`` and the dataset returns
the whole batch.

**Input normalization** (:class:`InputNormalization`), stored in the checkpoint and applied
identically at prediction: ``"per-image"`` (default; each image to mean 0 and std 1 over its
pixels, so no statistic is needed), ``"dataset"`` (one mean and std measured on training
images, then fixed) or ``"none"``.

**Augmentation** changes the image and its labels together, exactly (CONVENTIONS.md). Let
``L`` be an orthogonal 2 × 2 map of image coordinates ``(x, y)`` (column, row, relative to the
center ``N//2``), applied as ``I'(p) = I(L⁻¹ p)``. A model point ``r`` lands at
``p = (A r)[:2] − s``; after the map it lands at ``L p = (L₃ A r)[:2] − L s`` with
``L₃ = [[L, 0], [0, det L]]`` (a proper rotation also when ``L`` is a mirror, since projection
along z does not see the sign of z). Hence ``A' = L₃ A`` and ``s' = L s``. For an in-plane
rotation by α (``L = [[cos α, −sin α], [sin α, cos α]]``) this is ``psi' = psi − α`` and the
shift rotated by α; for the mirror ``x → −x`` it is ``A' = diag(−1, 1, −1) A``,
``s' = (−s_x, s_y)``. Amplitudes do not change. Exact for phase-flipped images of a CTF
without astigmatism (paper-ak); with astigmatism the residual CTF pattern turns too.

- ``"dihedral"``: one of the 8 maps that permute pixels (rotations by multiples of 90°, with
  or without a mirror): no interpolation at all. Pixels are mapped about ``N//2`` modulo N, so
  on an even box one edge row/column wraps around (background).
- ``"rotation"``: a uniform random angle (a multiple of 90° exactly, the rest by Fourier
  shears, :func:`rotate_images`), and a mirror with probability ½.
- ``"+shift"`` (``"rotation+shift"``, ``"dihedral+shift"``, or ``"shift"`` alone): then each
  image is translated so that its shift becomes that of another image of the batch (a random
  permutation of the batch's shifts), by a Fourier phase ramp: ``I'(p) = I(p − t)`` moves the
  particle by ``t``, so ``s' = s − t`` (pixels). The shifts' distribution stays exactly the
  labels' one, whatever it is; the image content is the same particle, CTF and noise (all
  translation-invariant), moved. Without shift labels nothing is translated.
- ``"none"``.

All preserve the paper-ak distribution of poses (psi uniform; tilt ↦ 180° − tilt under the
mirror), so augmented images look like real ones.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from deephemnma.errors import InputError
from deephemnma.geometry import euler_to_matrix
from deephemnma.io.star import (
    ANGLES,
    ORIGINS_A,
    ParticleTable,
    amplitude_columns,
    amplitudes,
    angles_deg,
    select,
    shifts_A,
    write_particles,
)

AUGMENTATIONS = ("none", "dihedral", "rotation", "shift", "dihedral+shift", "rotation+shift")
NORMALIZATIONS = ("per-image", "dataset", "none")

__all__ = [
    "AUGMENTATIONS",
    "InputNormalization",
    "Labels",
    "ParticleBatches",
    "ParticleDataset",
    "PreloadedBatches",
    "augment_batch",
    "dihedral_images",
    "make_splits",
    "read_labels",
    "read_splits",
    "rotate_images",
    "split_counts",
    "transform_labels",
    "translate_images",
    "write_splits",
]


# --------------------------------------------------------------------------------------------
# Input normalization


@dataclass(frozen=True)
class InputNormalization:
    """How pixel values are normalized before the network (module docstring)."""

    mode: str = "per-image"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATIONS:
            raise InputError(
                "unknown input normalization",
                field="normalization",
                expected=" | ".join(NORMALIZATIONS),
                found=self.mode,
            )

    @classmethod
    def fit(cls, mode: str, sample: np.ndarray | None = None) -> InputNormalization:
        """``sample`` (n, H, W): training images, for ``"dataset"`` statistics."""
        if mode != "dataset":
            return cls(mode)
        values = np.asarray(sample, dtype=np.float64)
        return cls(mode, float(values.mean()), float(max(values.std(), 1e-12)))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """images (..., H, W) float32 → normalized, same shape."""
        if self.mode == "per-image":
            mean = images.mean((-1, -2), keepdim=True)
            std = images.std((-1, -2), keepdim=True).clamp_min(1e-12)
            return (images - mean) / std
        if self.mode == "dataset":
            return (images - self.mean) / self.std
        return images

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputNormalization:
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class Labels:
    """Per-particle training targets in physical units (rows aligned with a particle subset).

    amplitudes: (N, M) dimensionless with mode_numbers (M,); matrices: (N, 3, 3) projection
    matrices ``A``; shifts_A: (N, 2) RELION origins in Å. A field is None when not trained.
    """

    amplitudes: np.ndarray | None
    mode_numbers: np.ndarray | None
    matrices: np.ndarray | None
    shifts_A: np.ndarray | None

    def __len__(self) -> int:
        for value in (self.amplitudes, self.matrices, self.shifts_A):
            if value is not None:
                return len(value)
        return 0

    def take(self, positions: np.ndarray) -> Labels:
        def pick(value):
            return None if value is None else value[positions]

        return Labels(
            pick(self.amplitudes), self.mode_numbers, pick(self.matrices), pick(self.shifts_A)
        )


def read_labels(
    table: ParticleTable,
    heads: tuple[str, ...],
    mode_numbers: list[int] | None = None,
    suffix: str = "",
) -> Labels:
    """Targets for ``heads`` from a STAR table (Stage-1 estimates or ground truth).

    Amplitudes come from ``deephemnmaAmplitudeNN{suffix}`` (all of them, or ``mode_numbers``);
    rotations from ``rlnAngleRot/Tilt/Psi``; shifts from ``rlnOriginX/YAngst``.
    """
    amp = numbers = matrices = shifts = None
    if "amplitudes" in heads:
        have, values = amplitudes(table, suffix)
        if mode_numbers:
            missing = [m for m in mode_numbers if m not in set(have.tolist())]
            if missing:
                raise InputError(
                    "labels lack amplitude columns",
                    path=table.path,
                    field=f"deephemnmaAmplitude{missing[0]:02d}{suffix}",
                    expected=f"modes {mode_numbers}",
                    found=f"modes {have.tolist()}",
                )
            pick = [int(np.flatnonzero(have == m)[0]) for m in mode_numbers]
            have, values = have[pick], values[:, pick]
        amp, numbers = values, have
    if "rotation" in heads:
        matrices = euler_to_matrix(torch.as_tensor(angles_deg(table), dtype=torch.float64)).numpy()
    if "shifts" in heads:
        shifts = shifts_A(table)
    return Labels(amp, numbers, matrices, shifts)


def available_heads(table: ParticleTable, suffix: str = "") -> tuple[str, ...]:
    """The heads a labels table can train (columns present)."""
    heads = []
    if amplitude_columns(table, suffix):
        heads.append("amplitudes")
    if all(c in table.particles.columns for c in ANGLES):
        heads.append("rotation")
    if all(c in table.particles.columns for c in ORIGINS_A):
        heads.append("shifts")
    return tuple(heads)


# --------------------------------------------------------------------------------------------
# Augmentation


def to_device_async(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` (CPU) on ``device`` without stalling a GPU: a copy from pageable memory
    waits for all queued GPU work, one from pinned memory is queued behind it."""
    if device.type != "cuda" or values.device.type != "cpu":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def _square(images: torch.Tensor) -> int:
    h, w = images.shape[-2:]
    if h != w:
        raise ValueError(f"augmentation needs square images, got {h}×{w}")
    return h


def _coordinates(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """x (column) and y (row) of every pixel relative to the center n//2: (n, n) each."""
    ar = torch.arange(n, device=device) - n // 2
    y, x = torch.meshgrid(ar, ar, indexing="ij")
    return x, y


DIHEDRAL = [
    np.array(m, dtype=np.int64)
    for m in (
        [[1, 0], [0, 1]],
        [[0, -1], [1, 0]],
        [[-1, 0], [0, -1]],
        [[0, 1], [-1, 0]],
        [[-1, 0], [0, 1]],
        [[0, -1], [-1, 0]],
        [[1, 0], [0, -1]],
        [[0, 1], [1, 0]],
    )
]
"""The 8 maps ``L`` of the dihedral group D4 (rotations by 0, 90, 180, 270°; then each one
after the mirror x → −x)."""


def dihedral_images(images: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    """Apply D4 element ``DIHEDRAL[element[b]]`` to each image: ``I'(p) = I(L⁻¹ p)``.

    images: (B, H, W) square; element: (B,) int in 0..7. Pixel permutation about ``N//2``,
    modulo N (one edge row/column wraps around on an even box). One gather, no host sync.
    """
    n = _square(images)
    index = _dihedral_sources(n, images.device)[element.to(images.device).long()]  # (B, H·W)
    return images.reshape(len(images), -1).gather(1, index).reshape(images.shape)


@functools.lru_cache(maxsize=16)
def _dihedral_sources(n: int, device: torch.device) -> torch.Tensor:
    """(8, n·n) source pixel of every target pixel, one row per D4 element. Made once per
    box and device: rebuilt at every call it was ~170 small operations per training step,
    each a kernel launch on a GPU (as many as the network's forward pass)."""
    x, y = _coordinates(n, device)
    c = n // 2
    sources = []
    for mat in DIHEDRAL:
        inv = mat.T  # orthogonal: L⁻¹ = Lᵀ
        src_x = (int(inv[0, 0]) * x + int(inv[0, 1]) * y + c) % n
        src_y = (int(inv[1, 0]) * x + int(inv[1, 1]) * y + c) % n
        sources.append((src_y * n + src_x).reshape(-1))
    return torch.stack(sources)


def _shear(images: torch.Tensor, amount: torch.Tensor, axis: str) -> torch.Tensor:
    """Fourier shear of (B, N, N) images: ``"x"``: ``I'(x, y) = I(x − a y, y)``; ``"y"``:
    ``I'(x, y) = I(x, y − a x)``; a = amount (B,), coordinates relative to ``N//2``.
    Each row (column) is translated by a sub-pixel amount through a phase ramp (sinc
    interpolation: exact for band-limited periodic images)."""
    n = images.shape[-1]
    real = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    coord = (torch.arange(n, device=images.device) - n // 2).to(real)
    freq = torch.fft.fftfreq(n, device=images.device, dtype=real)
    shift = amount.to(device=images.device, dtype=real)[:, None] * coord  # (B, N)
    if axis == "x":
        angle = -2 * math.pi * shift[:, :, None] * freq  # (B, rows, kx)
        dim = -1
    else:
        angle = -2 * math.pi * shift[:, None, :] * freq[:, None]  # (B, ky, cols)
        dim = -2
    phase = torch.polar(torch.ones_like(angle), angle)
    out = torch.fft.ifft(torch.fft.fft(images.to(real), dim=dim) * phase, dim=dim)
    return out.real.to(images.dtype)


def rotate_images(images: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle_rad[b]`` about ``N//2``: ``I'(p) = I(R(−α) p)``.

    images: (B, N, N). A positive angle turns the +x axis (columns) toward +y (rows). The
    nearest multiple of 90° is applied as an exact pixel permutation, the rest (|β| ≤ 45°) as
    three Fourier shears, ``R(β) = Sx(−tan β/2) · Sy(sin β) · Sx(−tan β/2)`` (Unser et al.
    1995): sinc interpolation, so a band-limited image turns without blur; content leaving
    the box wraps around (background only, for a centered particle).
    """
    _square(images)
    angle = angle_rad.to(torch.float64)
    quarter = torch.round(angle / (math.pi / 2))
    beta = angle - quarter * (math.pi / 2)
    images = dihedral_images(images, quarter.long() % 4)
    t = -torch.tan(beta / 2)
    images = _shear(images, t, "x")
    images = _shear(images, torch.sin(beta), "y")
    return _shear(images, t, "x")


def translate_images(images: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Translate each image by ``shift_px[b] = (t_x, t_y)`` pixels (columns, rows):
    ``I'(p) = I(p − t)``, through a phase ramp (:func:`deephemnma.align.search.translate`;
    sinc interpolation: exact for band-limited periodic images; content leaving the box
    re-enters on the other side).

    images: (B, N, N) float; shift_px: (B, 2) on the images' device.
    """
    from deephemnma.align.search import translate

    n = _square(images)
    real = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    spectrum = translate(torch.fft.rfft2(images.to(real)), shift_px, n, 1.0)
    return torch.fft.irfft2(spectrum, s=(n, n)).to(images.dtype)


def transform_labels(
    matrices: torch.Tensor, shifts_A: torch.Tensor | None, maps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels after the image maps ``maps`` (B, 2, 2): ``A' = L₃ A``, ``s' = L s``."""
    b = maps.shape[0]
    maps = maps.to(device=matrices.device, dtype=torch.float64)
    l3 = torch.zeros(b, 3, 3, dtype=torch.float64, device=matrices.device)
    l3[:, :2, :2] = maps
    # det of a 2×2 (±1 here) by its formula: a batched LU on a GPU costs more than the rest.
    l3[:, 2, 2] = (maps[:, 0, 0] * maps[:, 1, 1] - maps[:, 0, 1] * maps[:, 1, 0]).round()
    new_matrices = (l3 @ matrices.to(torch.float64)).to(matrices.dtype)
    new_shifts = None
    if shifts_A is not None:
        turned = maps.to(shifts_A.device) @ shifts_A.to(torch.float64)[..., None]
        new_shifts = turned[..., 0].to(shifts_A.dtype)
    return new_matrices, new_shifts


def augment_batch(
    images: torch.Tensor,
    matrices: torch.Tensor | None,
    shifts_A: torch.Tensor | None,
    kind: str,
    generator: torch.Generator,
    pixel_size_A: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Random label-exact augmentation of a batch (module docstring).

    images: (B, H, W); matrices: (B, 3, 3) or None; shifts_A: (B, 2) or None, on any one
    device. ``generator`` is a CPU generator: the random draws are made on the CPU (the same
    on every device), the work on the images' device. ``pixel_size_A``: needed by the
    ``+shift`` kinds (shifts are labelled in Å, images move in pixels).
    """
    if kind not in AUGMENTATIONS:
        raise InputError("unknown augmentation", expected=" | ".join(AUGMENTATIONS), found=kind)
    base, _, shift = kind.partition("+")
    if base == "shift":
        base, shift = "none", "shift"
    if base != "none":
        images, matrices, shifts_A = _turn_batch(images, matrices, shifts_A, base, generator)
    if shift and shifts_A is not None:
        if not pixel_size_A or pixel_size_A <= 0:
            raise ValueError(f"augmentation {kind!r} needs the pixel size")
        images, shifts_A = _reshift_batch(images, shifts_A, pixel_size_A, generator)
    return images, matrices, shifts_A


def _reshift_batch(images, shifts_A, pixel_size_A: float, generator: torch.Generator):
    """Give each image the shift of another image of the batch (module docstring)."""
    order = torch.randperm(len(images), generator=generator)
    new_shifts = shifts_A[to_device_async(order, shifts_A.device)]
    images = translate_images(images, (shifts_A - new_shifts).to(images.device) / pixel_size_A)
    return images, new_shifts


def _turn_batch(images, matrices, shifts_A, kind: str, generator: torch.Generator):
    """The dihedral or in-plane rotation part of :func:`augment_batch`."""
    b, device = images.shape[0], images.device
    if kind == "dihedral":
        element = torch.randint(0, 8, (b,), generator=generator)
        images = dihedral_images(images, to_device_async(element, device))
        maps = torch.as_tensor(np.stack(DIHEDRAL), dtype=torch.float64)[element]
    elif kind == "rotation":
        mirror = torch.rand(b, generator=generator, dtype=torch.float64) < 0.5
        angle = torch.rand(b, generator=generator, dtype=torch.float64) * (2 * math.pi)
        images = dihedral_images(images, to_device_async(torch.where(mirror, 4, 0), device))
        images = rotate_images(images, to_device_async(angle, device))
        c, s = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        flip = torch.ones(b, 2, dtype=torch.float64)
        flip[:, 0] = torch.where(mirror, -1.0, 1.0)
        maps = rot * flip[:, None, :]  # R(α) · diag(±1, 1)
    maps = to_device_async(maps, device)
    if matrices is not None:
        matrices, shifts_A = transform_labels(matrices, shifts_A, maps)
    elif shifts_A is not None:
        shifts_A = (maps.to(shifts_A.dtype) @ shifts_A[..., None])[..., 0]
    return images, matrices, shifts_A


# --------------------------------------------------------------------------------------------
# Dataset and batches


class ParticleDataset(torch.utils.data.Dataset):
    """Batches of images (and labels) of a particle subset.

    images: a :class:`ParticleImages` of the whole particle table; rows: (n,) particle rows of
    this subset; labels: aligned with ``rows`` (or None for prediction). Indexed by
    ``(positions, seed)`` (positions into the subset; the seed of the batch's augmentation or
    None), returns a dict: ``images`` (B, 1, H, W) float32, ``positions`` (B,), ``seed`` (if
    any) and the labels ``amplitudes`` (B, M), ``matrices`` (B, 3, 3), ``shifts_A`` (B, 2).
    The images are the raw pixels: the consumer normalizes them on its device (on a GPU it
    costs nothing there, while loader processes spent most of their time on it). The
    augmentation itself (:func:`augment_batch`) is applied by the training
    loop on the training device: it commutes with the normalization (a pixel permutation, or
    Fourier shears that keep the mean and the variance).
    """

    def __init__(self, images, rows: np.ndarray, labels: Labels | None) -> None:
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        positions, seed = item
        positions = np.asarray(positions, dtype=np.int64)
        images = torch.from_numpy(np.asarray(self.images.images(self.rows[positions]))).float()
        batch: dict[str, torch.Tensor] = {"positions": torch.from_numpy(positions)}
        if seed is not None:
            batch["seed"] = torch.tensor(int(seed), dtype=torch.int64)
        if self.labels is not None:
            lab = self.labels.take(positions)
            if lab.amplitudes is not None:
                batch["amplitudes"] = torch.from_numpy(lab.amplitudes).float()
            if lab.matrices is not None:
                batch["matrices"] = torch.from_numpy(lab.matrices).float()
            if lab.shifts_A is not None:
                batch["shifts_A"] = torch.from_numpy(lab.shifts_A).float()
        batch["images"] = images[:, None].contiguous()
        return batch


class PreloadedBatches:
    """The batches a DataLoader over ``dataset`` with ``sampler`` would yield, served from
    tensors loaded once onto ``device``: no loader processes, no per-batch reading or
    host-to-device copies. For subsets that fit in the device's memory (the paper's 14,055
    training images of 128² take 0.9 GB), where loader processes could not keep a GPU busy.
    """

    def __init__(self, dataset: ParticleDataset, sampler, device, chunk: int = 2048) -> None:
        self.sampler, self.device = sampler, torch.device(device)
        n = len(dataset)
        parts = [
            {
                k: v.to(self.device)
                for k, v in dataset[(np.arange(lo, min(lo + chunk, n)), None)].items()
                if k != "positions"
            }
            for lo in range(0, n, chunk)
        ]
        self.data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for positions, seed in self.sampler:
            positions = torch.from_numpy(np.asarray(positions, dtype=np.int64))
            index = to_device_async(positions, self.device)
            batch = {k: v.index_select(0, index) for k, v in self.data.items()}
            batch["positions"] = positions
            if seed is not None:
                batch["seed"] = torch.tensor(int(seed), dtype=torch.int64)
            yield batch

    @staticmethod
    def nbytes(n_images: int, image_size: int) -> int:
        """Device memory the images of ``n_images`` particles take (float32)."""
        return 4 * n_images * image_size * image_size


def batch_seed(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    """A reproducible 63-bit seed for (run seed, epoch, batch, rank)."""
    state = np.random.SeedSequence([seed, epoch, index, rank]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


class ParticleBatches(torch.utils.data.Sampler):
    """Yields ``(positions, seed)`` batches over ``n`` items for one epoch.

    shuffle: a permutation seeded by ``(seed, epoch)`` (call :meth:`set_epoch`); drop_last:
    drop a last incomplete batch (training). With ``world_size`` > 1, each global batch is
    split between the ranks (rank r takes positions r, r + world, …), so every rank sees
    ``batch_size / world_size`` images per step. ``augment``: attach a per-batch seed.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        augment: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.drop_last, self.seed, self.augment = shuffle, drop_last, seed, augment
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        for index in range(len(self)):
            positions = order[index * self.batch_size : (index + 1) * self.batch_size]
            positions = positions[self.rank :: self.world_size]
            seed = batch_seed(self.seed, self.epoch, index, self.rank) if self.augment else None
            yield positions, seed


# --------------------------------------------------------------------------------------------
# Splits


def _resolve_count(value: float | int | str, n: int, what: str) -> int:
    if isinstance(value, str):
        if value == "auto":
            return min(2000, int(round(0.1 * n)))
        try:
            value = float(value)
        except ValueError:
            raise InputError(
                "not a count or fraction", field=what, expected="N, 0<F<1 or auto", found=value
            ) from None
    if 0 < value < 1:
        return int(round(value * n))
    if value < 0 or value != int(value):
        raise InputError(
            "not a count or fraction", field=what, expected="N ≥ 0 or 0<F<1", found=str(value)
        )
    return int(value)


def split_counts(n: int, val="auto", test="auto") -> tuple[int, int, int]:
    """(train, validation, small test) counts. ``val``/``test``: a count, a fraction (< 1) or
    ``"auto"`` = min(2,000, 10 %) (paper: 18,055 → 14,055 / 2,000 / 2,000)."""
    n_val, n_test = _resolve_count(val, n, "val"), _resolve_count(test, n, "test")
    n_train = n - n_val - n_test
    if n_train < 1 or n_val < 1:
        raise InputError(
            "too few labelled particles for these splits",
            field="val/test",
            expected="at least one training and one validation particle",
            found=f"{n} particles, {n_val} validation, {n_test} test",
        )
    return n_train, n_val, n_test


def make_splits(n: int, val="auto", test="auto", seed: int = 0) -> dict[str, np.ndarray]:
    """Random train / val / test positions (sorted within each split), seeded."""
    n_train, n_val, _ = split_counts(n, val, test)
    order = np.random.default_rng([seed, 7919]).permutation(n)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def write_splits(
    folder: str | Path, particles: ParticleTable, rows: dict[str, np.ndarray], seed: int
) -> Path:
    """Write ``splits.json`` (0-based particle rows per split) and ``splits/<name>.star``
    (the particle subsets, for ``predict`` and ``evaluate``)."""
    from deephemnma.io.atomic import atomic_write_text

    folder = Path(folder)
    for name, r in rows.items():
        if len(r):
            write_particles(folder / "splits" / f"{name}.star", select(particles, r))
    record = {
        "seed": seed,
        "counts": {k: int(len(v)) for k, v in rows.items()},
        "rows": {k: [int(i) for i in v] for k, v in rows.items()},
        "particles": None if particles.path is None else str(particles.path),
    }
    return atomic_write_text(folder / "splits.json", json.dumps(record) + "\n")


def read_splits(folder: str | Path) -> dict[str, np.ndarray]:
    """Particle rows per split from ``splits.json``."""
    path = Path(folder) / "splits.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the splits ({exc})", path=path) from None
    return {k: np.asarray(v, dtype=np.int64) for k, v in record["rows"].items()}
