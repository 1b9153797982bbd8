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
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from deephemnma.geometry import geodesic_distance_deg
from deephemnma.io.star import POSE_SPREAD as SPREAD_LABEL
from deephemnma.network.data import DIHEDRAL, dihedral_images

__all__ = ["SPREAD_LABEL", "consensus", "dihedral_predict", "project_to_so3"]


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


@functools.lru_cache(maxsize=8)
def _inverse_maps(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 2, 2) ``L⁻¹ = Lᵀ`` and (8, 3, 3) ``L₃⁻¹ = L₃ᵀ``, which undo each D4 element's
    label change (made once per device: no host-to-device copy per batch)."""
    back_2d = np.stack([m.T for m in DIHEDRAL]).astype(np.float64)
    back_3d = np.zeros((len(DIHEDRAL), 3, 3))
    back_3d[:, :2, :2] = back_2d
    back_3d[:, 2, 2] = np.round(np.linalg.det(back_2d))
    return (torch.as_tensor(back_2d, device=device), torch.as_tensor(back_3d, device=device))


def dihedral_predict(predict_one, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The D4 consensus of ``predict_one`` on ``images`` (B, 1, H, W).

    predict_one(images (B, 1, H, W)) → dict of physical parameters of those images
    (``matrices`` (B, 3, 3), ``shifts_A`` (B, 2), ``amplitudes`` (B, M), as
    :func:`deephemnma.network.model.decode`). Returns :func:`consensus`'s dict.
    """
    b = images.shape[0]
    back_2d, back_3d = _inverse_maps(images.device)
    per_copy: dict[str, list[torch.Tensor]] = {"matrices": [], "shifts_A": [], "amplitudes": []}
    for element in range(len(DIHEDRAL)):
        which = torch.full((b,), element, dtype=torch.long, device=images.device)
        phys = predict_one(dihedral_images(images[:, 0], which)[:, None])
        if "matrices" in phys:
            per_copy["matrices"].append(back_3d[element] @ phys["matrices"].double())
        if "shifts_A" in phys:
            per_copy["shifts_A"].append(phys["shifts_A"].double() @ back_2d[element].T)
        if "amplitudes" in phys:
            per_copy["amplitudes"].append(phys["amplitudes"].double())
    return consensus({k: torch.stack(v) for k, v in per_copy.items() if v})
