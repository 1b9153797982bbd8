"""Test-time augmentation: predict each particle from its 8 dihedral copies and agree.

The network is shown the 8 images ``g·I`` of the dihedral group D4 (rotations by multiples of
90°, with and without the mirror x → −x: pixel permutations, no interpolation). Each copy's
prediction is mapped back to the original image through the exact label change of
:mod:`deephemnma.network.data` (``A = L₃ᵀ A_g``, ``s = Lᵀ s_g``; amplitudes do not change).
A network that were exactly equivariant would give 8 equal answers; a trained one gives 8
estimates whose errors are partly independent, and their consensus is better than each one
(ensembling at no training cost, 8× the inference work).

Consensus, robust against a minority of grossly wrong copies:
- rotation: the geometric median of the 8 matrices in R⁹ (Weiszfeld iterations), projected
  onto SO(3) (SVD);
- amplitudes and shifts: the median of each coordinate.

The result is exactly equivariant: the consensus of ``g·I`` is the consensus of ``I`` with
its labels changed by ``g`` (the 8 copies of ``g·I`` are those of ``I``, in another order; D4
maps are signed permutations of coordinates, which commute with coordinate-wise medians).

The **spread**, the median angle (degrees) between the 8 back-mapped rotations and the
consensus, says how much the copies disagree: a per-particle confidence that needs no ground
truth (written to the STAR as ``deephemnmaPoseSpreadDeg``).

**Turns** (``turns`` = T > 1): each dihedral copy is also turned in-plane by j·90°/T,
j = 0..T−1 (:func:`deephemnma.network.data.rotate_images`, Fourier shears), 8·T copies with
the maps ``L = R(j·90°/T) · L_g``; T = 2 gives the 16 elements of D8. Their labels are as
exact as the dihedral ones; the turned images are sinc-interpolated. The consensus stays
exactly equivariant under D4: each copy is turned after its dihedral permutation, so the
copies of ``g·I`` are those of ``I`` in another order.

**Shifts** (``shift_px`` = P > 0): each copy is also shown at the 5 offsets 0, (±P, 0),
(0, ±P) pixels (``torch.roll``: an exact permutation; what leaves the box on one side
re-enters on the other, background for a centered particle), 8·T·5 copies. A convolutional
network with strided layers is not translation-equivariant to the pixel, so these are
further partly independent estimates. A particle moved by ``t`` has the origin ``s − t``
(:mod:`deephemnma.network.data`), so the copy's shift estimate is mapped back by adding
``t``. The offsets are a D4-invariant set, so the consensus stays exactly equivariant.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from deephemnma.geometry import geodesic_distance_deg
from deephemnma.io.star import POSE_SPREAD as SPREAD_LABEL
from deephemnma.network.data import DIHEDRAL, dihedral_images, rotate_images

__all__ = [
    "SPREAD_LABEL",
    "consensus",
    "copy_maps",
    "copy_offsets_px",
    "dihedral_predict",
    "project_to_so3",
]


def project_to_so3(matrices: torch.Tensor) -> torch.Tensor:
    """The nearest rotation (Frobenius) to each of ``matrices`` (..., 3, 3)."""
    u, _, vh = torch.linalg.svd(matrices)
    d = torch.det(u @ vh)
    fix = torch.ones(matrices.shape[:-1], dtype=matrices.dtype, device=matrices.device)
    fix[..., -1] = d
    return (u * fix[..., None, :]) @ vh


def _geometric_median(points: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Weiszfeld's geometric median of ``points`` (K, B, D) over K → (B, D)."""
    y = points.mean(0)
    for _ in range(iterations):
        distance = (points - y).norm(dim=-1).clamp_min(1e-9)  # (K, B)
        weight = 1.0 / distance
        y = (weight[..., None] * points).sum(0) / weight.sum(0)[..., None]
    return y


def consensus(per_copy: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Agree on one estimate per particle from K back-mapped estimates.

    per_copy: ``matrices`` (K, B, 3, 3), ``shifts_A`` (K, B, 2), ``amplitudes`` (K, B, M),
    any subset. Returns the same keys with the K axis removed, plus ``spread_deg`` (B,) when
    rotations are given.
    """
    out: dict[str, torch.Tensor] = {}
    for key in ("amplitudes", "shifts_A"):
        if key in per_copy:
            out[key] = per_copy[key].double().quantile(0.5, dim=0)
    if "matrices" in per_copy:
        m = per_copy["matrices"].double()
        k, b = m.shape[:2]
        center = project_to_so3(_geometric_median(m.reshape(k, b, 9)).reshape(b, 3, 3))
        out["matrices"] = center
        out["spread_deg"] = geodesic_distance_deg(m, center).quantile(0.5, dim=0)
    return out


def copy_maps(turns: int = 1) -> np.ndarray:
    """(8·turns, 2, 2) label maps of the copies, turn by turn: ``R(j·90°/turns) · L_g`` for
    j = 0..turns−1 and the 8 D4 elements ``L_g`` (:data:`DIHEDRAL`) in order."""
    if turns < 1:
        raise ValueError(f"turns must be ≥ 1, got {turns}")
    maps = []
    for j in range(turns):
        angle = _turn_rad(j, turns)
        c, s = np.cos(angle), np.sin(angle)
        turn = np.array([[c, -s], [s, c]])
        maps.extend(turn @ g for g in DIHEDRAL)
    return np.stack(maps)


def _turn_rad(j: int, turns: int) -> float:
    """The in-plane turn of the copies of turn ``j`` (radians): the images and their label
    maps must use the same one."""
    return j * (np.pi / 2) / turns


@functools.lru_cache(maxsize=8)
def _inverse_maps(device: torch.device, turns: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 2, 2) ``L⁻¹ = Lᵀ`` and (K, 3, 3) ``L₃⁻¹ = L₃ᵀ``, which undo each copy's label
    change (made once per device: no host-to-device copy per batch)."""
    back_2d = np.transpose(copy_maps(turns), (0, 2, 1))
    back_3d = np.zeros((len(back_2d), 3, 3))
    back_3d[:, :2, :2] = back_2d
    back_3d[:, 2, 2] = np.round(np.linalg.det(back_2d))
    return (torch.as_tensor(back_2d, device=device), torch.as_tensor(back_3d, device=device))


def copy_offsets_px(shift_px: int = 0) -> list[tuple[int, int]]:
    """The (x, y) pixel offsets of the shifted copies: none, or 0, (±P, 0), (0, ±P)."""
    if shift_px < 0:
        raise ValueError(f"shift_px must be ≥ 0, got {shift_px}")
    if shift_px == 0:
        return [(0, 0)]
    p = int(shift_px)
    return [(0, 0), (p, 0), (-p, 0), (0, p), (0, -p)]


def dihedral_predict(
    predict_one,
    images: torch.Tensor,
    turns: int = 1,
    shift_px: int = 0,
    pixel_size_A: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The consensus of ``predict_one`` over the 8·``turns`` copies of ``images`` (B, 1, H, W)
    (module docstring; ``turns=1``: the D4 copies), each also at the offsets of
    :func:`copy_offsets_px` (``shift_px`` > 0; ``pixel_size_A``: the images', to map the shift
    estimates back).

    predict_one(images (B, 1, H, W)) → dict of physical parameters of those images
    (``matrices`` (B, 3, 3), ``shifts_A`` (B, 2), ``amplitudes`` (B, M), as
    :func:`deephemnma.network.model.decode`). Returns :func:`consensus`'s dict.
    """
    b = images.shape[0]
    back_2d, back_3d = _inverse_maps(images.device, turns)
    offsets = copy_offsets_px(shift_px)
    per_copy: dict[str, list[torch.Tensor]] = {"matrices": [], "shifts_A": [], "amplitudes": []}
    for index in range(len(back_2d)):
        turn, element = divmod(index, len(DIHEDRAL))
        which = torch.full((b,), element, dtype=torch.long, device=images.device)
        turned = dihedral_images(images[:, 0], which)
        if turn:  # made on the device: no host-to-device copy per batch
            angle = torch.full(
                (b,), _turn_rad(turn, turns), dtype=torch.float64, device=images.device
            )
            turned = rotate_images(turned, angle)
        for tx, ty in offsets:
            # I'(p) = I(p − t): the particle moves by t, its origin becomes s − t.
            copies = torch.roll(turned, (ty, tx), dims=(-2, -1)) if tx or ty else turned
            phys = predict_one(copies[:, None])
            if "matrices" in phys:
                per_copy["matrices"].append(back_3d[index] @ phys["matrices"].double())
            if "shifts_A" in phys:
                shift = phys["shifts_A"].double()
                if tx or ty:
                    shift = shift.clone()
                    shift[:, 0] += tx * pixel_size_A  # scalars: no host-to-device copy
                    shift[:, 1] += ty * pixel_size_A
                per_copy["shifts_A"].append(shift @ back_2d[index].T)
            if "amplitudes" in phys:
                per_copy["amplitudes"].append(phys["amplitudes"].double())
    return consensus({k: torch.stack(v) for k, v in per_copy.items() if v})
