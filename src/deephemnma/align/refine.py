"""Joint gradient refinement of amplitudes, rotation and shift against each image.

Each row of a batch is an independent problem (an image and a starting pose); the rows'
parameters are separate tensor elements, so one Adam optimizer over the batch adapts its
step per row and per parameter. Parameters are scaled to comparable units (amplitudes /50,
rotation in units of 2°, shift in units of 0.2 Å) so one learning rate serves all. The
rotation is updated in the image frame, ``A = R(ω) A₀``, so ω_z is an in-plane rotation and
the parametrization has no gimbal lock. The best state seen is kept for every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from deephemnma.align.similarity import Level, ncc, render_filtered, rodrigues
from deephemnma.project import AtomModel

AMPLITUDE_UNIT = 50.0
ROTATION_UNIT_RAD = math.radians(2.0)
SHIFT_UNIT_A = 0.2


@dataclass(frozen=True)
class Pose:
    """Per-row estimate: matrices (B, 3, 3), amplitudes (B, K) or None, shifts_A (B, 2),
    score (B,) NCC at the level it was last refined on."""

    matrices: torch.Tensor
    amplitudes: torch.Tensor | None
    shifts_A: torch.Tensor
    score: torch.Tensor

    def take(self, index: torch.Tensor) -> Pose:
        return Pose(
            self.matrices[index],
            None if self.amplitudes is None else self.amplitudes[index],
            self.shifts_A[index],
            self.score[index],
        )


def _objective(model, images, data_filter, start: Pose, level: Level, n_modes: int):
    """−NCC (B,) as a function of the scaled parameters x (B, K + 5), and the pose of x."""

    def pose_of(x):
        amplitudes = x[:, :n_modes] * AMPLITUDE_UNIT if n_modes else None
        matrices = rodrigues(x[:, n_modes : n_modes + 3] * ROTATION_UNIT_RAD) @ start.matrices
        return matrices, amplitudes, x[:, n_modes + 3 :] * SHIFT_UNIT_A

    def loss(x):
        matrices, amplitudes, shifts = pose_of(x)
        rendered = render_filtered(model, matrices, amplitudes, shifts, level, data_filter)
        return -ncc(rendered, images)

    return loss, pose_of


def _start_vector(start: Pose, n_modes: int, dtype) -> torch.Tensor:
    x = torch.zeros(start.shifts_A.shape[0], n_modes + 5, dtype=dtype, device=start.shifts_A.device)
    if n_modes:
        x[:, :n_modes] = start.amplitudes / AMPLITUDE_UNIT
    x[:, n_modes + 3 :] = start.shifts_A / SHIFT_UNIT_A
    return x


def refine(
    model: AtomModel,
    images: torch.Tensor,
    data_filter: torch.Tensor | None,
    start: Pose,
    level: Level,
    steps: int,
    lr: float,
) -> Pose:
    """Adam on −NCC for ``steps`` iterations (cosine-decayed rate) from ``start``; the best
    state seen is kept for every row."""
    n_modes = 0 if start.amplitudes is None else start.amplitudes.shape[1]
    loss_fn, pose_of = _objective(model, images, data_filter, start, level, n_modes)
    x = _start_vector(start, n_modes, images.dtype).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    best_x = x.detach().clone()
    best = torch.full((x.shape[0],), 2.0, dtype=images.dtype, device=images.device)
    for step in range(steps + 1):
        loss = loss_fn(x)
        with torch.no_grad():
            improved = loss < best
            best = torch.where(improved, loss, best)
            best_x = torch.where(improved[:, None], x.detach(), best_x)
        if step == steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
    with torch.no_grad():
        matrices, amplitudes, shifts = pose_of(best_x)
    return Pose(matrices, amplitudes, shifts, -best)
