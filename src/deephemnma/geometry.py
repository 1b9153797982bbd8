"""Rotations: the only module where the orientation conventions are coded.

Convention (CONVENTIONS.md, RELION/Xmipp ZYZ): Euler angles ``(rot, tilt, psi)`` in degrees
give the *projection matrix*

    A = (Rz(rot) · Ry(tilt) · Rz(psi))ᵀ

with active rotations ``Rz``/``Ry``. A model point ``r`` (Å, model frame) lands in the image
at ``(A r)[0]`` (x, column) and ``(A r)[1]`` (y, row). Quaternions ``(w, x, y, z)`` describe
the active rotation ``R = Aᵀ`` with the sign fixed so that ``w ≥ 0``.

Every function is batched over leading dimensions and keeps the input dtype and device.
"""

from __future__ import annotations

import torch

_GIMBAL_EPS = 1e-6


def _rz(angle_rad: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack(
        [torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2
    )


def _ry(angle_rad: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack(
        [torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2
    )


def euler_to_matrix(angles_deg: torch.Tensor) -> torch.Tensor:
    """Projection matrices ``A`` from RELION Euler angles.

    angles_deg: (..., 3) as (rot, tilt, psi) in degrees. Returns (..., 3, 3).
    Differentiable with respect to the angles.
    """
    a = torch.deg2rad(angles_deg)
    r = _rz(a[..., 0]) @ _ry(a[..., 1]) @ _rz(a[..., 2])
    return r.transpose(-1, -2)


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles (rot, tilt, psi) in degrees from projection matrices ``A``.

    matrix: (..., 3, 3). Returns (..., 3) with rot, psi in (-180, 180] and tilt in [0, 180].
    At tilt 0° or 180° only rot ± psi is defined; rot is then set to 0.
    """
    r = matrix.transpose(-1, -2)  # the active rotation Rz(rot) Ry(tilt) Rz(psi)
    sin_tilt = torch.sqrt(r[..., 0, 2] ** 2 + r[..., 1, 2] ** 2)
    tilt = torch.atan2(sin_tilt, r[..., 2, 2])
    rot = torch.atan2(r[..., 1, 2], r[..., 0, 2])
    psi = torch.atan2(r[..., 2, 1], -r[..., 2, 0])
    # Gimbal lock: R = Rz(rot+psi) at tilt 0, diag(-1,1,-1)·Rz(psi-rot) at tilt 180.
    degenerate = sin_tilt < _GIMBAL_EPS
    psi_flat = torch.where(
        r[..., 2, 2] > 0,
        torch.atan2(r[..., 1, 0], r[..., 0, 0]),
        torch.atan2(r[..., 1, 0], r[..., 1, 1]),
    )
    rot = torch.where(degenerate, torch.zeros_like(rot), rot)
    psi = torch.where(degenerate, psi_flat, psi)
    return torch.rad2deg(torch.stack([rot, tilt, psi], -1))


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions (w, x, y, z); normalizes first.

    quaternion: (..., 4). Returns the *active* rotation (..., 3, 3); for a quaternion from
    :func:`euler_to_quaternion` that is ``Aᵀ``.
    """
    q = quaternion / torch.linalg.vector_norm(quaternion, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z), w ≥ 0, of active rotation matrices (..., 3, 3).

    Uses the numerically stable branch (largest of w, x, y, z) for every element.
    """
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4·q_i² for each component; pick the largest to divide by.
    four_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    d21, d02, d10 = (
        m[..., 2, 1] - m[..., 1, 2],
        m[..., 0, 2] - m[..., 2, 0],
        m[..., 1, 0] - m[..., 0, 1],
    )
    s21, s02, s10 = (
        m[..., 2, 1] + m[..., 1, 2],
        m[..., 0, 2] + m[..., 2, 0],
        m[..., 1, 0] + m[..., 0, 1],
    )
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], d21, d02, d10], -1),
            torch.stack([d21, four_sq[..., 1], s10, s02], -1),
            torch.stack([d02, s10, four_sq[..., 2], s21], -1),
            torch.stack([d10, s02, s21, four_sq[..., 3]], -1),
        ],
        -2,
    )  # row i is 4·q_i·q
    best = four_sq.argmax(-1)
    row = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = row / torch.linalg.vector_norm(row, dim=-1, keepdim=True)
    return canonical_quaternion(q)


def canonical_quaternion(quaternion: torch.Tensor) -> torch.Tensor:
    """The representative of ``q ≡ −q`` with w ≥ 0."""
    sign = torch.where(quaternion[..., :1] < 0, -1.0, 1.0).to(quaternion.dtype)
    return quaternion * sign


def euler_to_quaternion(angles_deg: torch.Tensor) -> torch.Tensor:
    """Quaternion (w, x, y, z), w ≥ 0, of the active rotation ``Aᵀ`` for RELION angles."""
    return matrix_to_quaternion(euler_to_matrix(angles_deg).transpose(-1, -2))


def quaternion_to_euler(quaternion: torch.Tensor) -> torch.Tensor:
    """RELION angles (rot, tilt, psi) in degrees from quaternions of ``Aᵀ``."""
    return matrix_to_euler(quaternion_to_matrix(quaternion).transpose(-1, -2))


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Gram–Schmidt map from a 6D vector (two 3D columns) to a rotation (Zhou et al. 2019).

    d6: (..., 6). Returns (..., 3, 3) whose first two columns span the inputs' plane.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], -1)


def angular_error_deg(matrix_a: torch.Tensor, matrix_b: torch.Tensor) -> torch.Tensor:
    """The paper's angular error: mean over x, y, z of the angle between the axis rotated by
    each orientation, in degrees (Xmipp ``Euler_distanceBetweenMatrices``).

    matrix_a, matrix_b: projection matrices ``A`` (..., 3, 3); the axes rotated by the active
    rotation ``Aᵀ`` are the rows of ``A``. Returns (...).
    """
    cos = (matrix_a * matrix_b).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)).mean(-1)


def geodesic_distance_deg(matrix_a: torch.Tensor, matrix_b: torch.Tensor) -> torch.Tensor:
    """Rotation angle of ``A₁ A₂ᵀ`` in degrees, ``arccos((trace − 1) / 2)``; (...)."""
    trace = (matrix_a * matrix_b).sum((-1, -2))
    cos = ((trace - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def random_euler_paper(
    n: int, generator: torch.Generator | None = None, dtype=torch.float64
) -> torch.Tensor:
    """Angles as the paper samples them: rot, psi ~ U[0, 360), tilt ~ U[0, 180) (degrees).

    Not uniform on SO(3) (over-samples the poles); see :func:`random_euler_uniform`.
    """
    u = torch.rand(n, 3, generator=generator, dtype=dtype)
    return u * torch.tensor([360.0, 180.0, 360.0], dtype=dtype)


def random_euler_uniform(
    n: int, generator: torch.Generator | None = None, dtype=torch.float64
) -> torch.Tensor:
    """Angles uniform on SO(3) (Haar measure): rot, psi uniform, cos(tilt) uniform."""
    u = torch.rand(n, 3, generator=generator, dtype=dtype)
    rot = u[:, 0] * 360.0
    tilt = torch.rad2deg(torch.arccos(1 - 2 * u[:, 1]))
    psi = u[:, 2] * 360.0
    return torch.stack([rot, tilt, psi], -1)
