"""Rotation conventions against scipy's Rotation, an independent construction."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from deephemnma import geometry as g


def _angles(n=200, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform([-180, 0, -180], [180, 180, 180], size=(n, 3))
    special = np.array([[30, 0, 40], [30, 180, 40], [0, 0, 0], [-170, 180, 10], [10, 90, -90]])
    return np.concatenate([a, special])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euler_to_matrix_is_transposed_scipy_zyz(dtype):
    angles = _angles()
    expected = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    got = g.euler_to_matrix(torch.as_tensor(angles, dtype=dtype)).numpy()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got, expected, atol=tol)


def test_matrix_to_euler_round_trip_including_gimbal_lock():
    angles = torch.as_tensor(_angles(), dtype=torch.float64)
    matrices = g.euler_to_matrix(angles)
    back = g.matrix_to_euler(matrices)
    np.testing.assert_allclose(g.euler_to_matrix(back).numpy(), matrices.numpy(), atol=1e-10)
    assert (back[:, 1] >= 0).all() and (back[:, 1] <= 180).all()
    # Away from gimbal lock the angles themselves come back (mod 360).
    regular = (angles[:, 1] > 1) & (angles[:, 1] < 179)
    diff = (back[regular] - angles[regular] + 180) % 360 - 180
    np.testing.assert_allclose(diff.numpy(), 0, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quaternion_matches_scipy_active_rotation(dtype):
    angles = _angles()
    rot = Rotation.from_euler("ZYZ", angles, degrees=True)  # active R = Aᵀ
    xyzw = rot.as_quat()
    expected = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], 1)
    expected *= np.where(expected[:, :1] < 0, -1, 1)
    got = g.euler_to_quaternion(torch.as_tensor(angles, dtype=dtype)).numpy()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    # w = 0 leaves the sign ambiguous; compare up to sign there.
    sign = np.sign((got * expected).sum(1, keepdims=True))
    np.testing.assert_allclose(got * sign, expected, atol=tol)
    assert (got[:, 0] >= -tol).all()
    np.testing.assert_allclose(
        g.quaternion_to_matrix(torch.as_tensor(expected)).numpy(), rot.as_matrix(), atol=1e-12
    )


def test_quaternion_to_euler_round_trip():
    angles = torch.as_tensor(_angles(), dtype=torch.float64)
    q = g.euler_to_quaternion(angles)
    np.testing.assert_allclose(
        g.euler_to_matrix(g.quaternion_to_euler(q)).numpy(),
        g.euler_to_matrix(angles).numpy(),
        atol=1e-10,
    )


def test_angular_error_and_geodesic_against_scipy():
    rng = np.random.default_rng(3)
    a = _angles(100, 1)
    b = a + rng.normal(0, 5, size=a.shape)
    ma = g.euler_to_matrix(torch.as_tensor(a))
    mb = g.euler_to_matrix(torch.as_tensor(b))
    ra = Rotation.from_euler("ZYZ", a, degrees=True)
    rb = Rotation.from_euler("ZYZ", b, degrees=True)
    # Geodesic: magnitude of the relative rotation.
    np.testing.assert_allclose(
        g.geodesic_distance_deg(ma, mb).numpy(), np.degrees((ra * rb.inv()).magnitude()), atol=1e-6
    )
    # Axis error: angle between each coordinate axis rotated by each active rotation.
    axes = np.eye(3)
    expected = np.mean(
        [
            np.degrees(np.arccos(np.clip(np.einsum("nd,nd->n", ra.apply(e), rb.apply(e)), -1, 1)))
            for e in axes
        ],
        axis=0,
    )
    np.testing.assert_allclose(g.angular_error_deg(ma, mb).numpy(), expected, atol=1e-6)
    assert float(g.angular_error_deg(ma, ma).max()) < 1e-3


def test_rotation_6d_gives_rotation_matrices():
    m = g.rotation_6d_to_matrix(torch.randn(50, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    np.testing.assert_allclose((m @ m.transpose(1, 2)).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(m).numpy(), 1.0, atol=1e-12)


def test_random_uniform_angles_are_haar_distributed():
    angles = g.random_euler_uniform(20000, torch.Generator().manual_seed(0))
    z = g.euler_to_matrix(angles)[:, 2, :]  # a rotated axis: uniform on the sphere
    assert abs(float(z.mean(0).norm())) < 0.03
    assert abs(float((z[:, 2] ** 2).mean()) - 1 / 3) < 0.01
