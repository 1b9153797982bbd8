"""Forward model: pixel integration, conventions (CONVENTIONS.md), 3D map consistency,
gradients."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from deephemnma.geometry import euler_to_matrix
from deephemnma.project import (
    AtomModel,
    atom_model,
    deform,
    density_map,
    project_atoms,
    render_images,
)
from deephemnma.structure import Structure


def _toy_structure(n=40, seed=0, spread_A=6.0) -> Structure:
    rng = np.random.default_rng(seed)
    coords = rng.normal(0, spread_A, size=(n, 3))
    # Asymmetric on purpose, so a wrong sign or axis swap cannot go unnoticed.
    coords[:5] += [9.0, 3.0, -2.0]
    element = np.array(["C", "N", "O", "S"] * n)[:n]
    names = np.array(["X"] * n)
    return Structure(coords, element, names, names, np.arange(n), np.array(["A"] * n), np.zeros(n))


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _centroid(image):
    rows, cols = np.indices(image.shape)
    return np.array([(image * cols).sum(), (image * rows).sum()]) / image.sum()


def test_single_atom_lands_where_conventions_say():
    s = Structure(
        np.array([[3.1, -2.2, 7.0]]),
        np.array(["C"]),
        *[np.array(["X"])] * 2,
        np.array([1]),
        np.array(["A"]),
        np.zeros(1),
    )
    # Blurred so every Gaussian spans pixels: the centroid of pixel integrals is then the
    # true centroid (a Gaussian narrower than a pixel puts its mass on the nearest pixel).
    model = atom_model(s, bfactor_A2=50.0, dtype=torch.float64)
    size, pix = 64, 0.5
    image = render_images(model, torch.eye(3, dtype=torch.float64)[None], size, pix)[0].numpy()
    np.testing.assert_allclose(
        _centroid(image), [size // 2 + 3.1 / pix, size // 2 - 2.2 / pix], atol=1e-6
    )


def test_pixel_integral_matches_supersampled_point_sampling():
    s = _toy_structure(8)
    model = atom_model(s, dtype=torch.float64)
    size, pix, sup = 48, 0.8, 16
    eye = torch.eye(3, dtype=torch.float64)[None]
    coarse = render_images(model, eye, size, pix)[0].numpy()
    # Independent estimate: point-sample 2D Gaussians on a fine grid, average blocks.
    fine_pix = pix / sup
    centers = (np.arange(size * sup) - (size // 2) * sup - (sup - 1) / 2) * fine_pix
    yy, xx = np.meshgrid(centers, centers, indexing="ij")
    fine = np.zeros_like(xx)
    a, sig = model.weight.numpy(), model.sigma_A.numpy()
    for (x, y, _), aa, ss in zip(s.coords_A, a, sig, strict=True):
        for ai, si in zip(aa, ss, strict=True):
            fine += (
                ai / (2 * np.pi * si**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * si**2))
            )
    block = fine.reshape(size, sup, size, sup).mean((1, 3))
    # Narrow Gaussians (σ ≈ 0.04 Å) are undersampled even at 16× so compare total and shape.
    assert abs(coarse.sum() / block.sum() - 1) < 5e-3
    assert _ncc(coarse, block) > 0.999


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 60, 120), (200, 175, -40), (10, 180, 0)])
def test_projection_convention_equals_model_rotated_by_transposed_scipy(angles):
    s = _toy_structure()
    model = atom_model(s, dtype=torch.float64)
    size, pix = 64, 0.6
    via_angles = render_images(
        model, euler_to_matrix(torch.tensor([angles], dtype=torch.float64)), size, pix
    )[0]
    a = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().T
    rotated = AtomModel(torch.as_tensor(s.coords_A @ a.T), model.weight, model.sigma_A)
    at_zero = render_images(rotated, torch.eye(3, dtype=torch.float64)[None], size, pix)[0]
    np.testing.assert_allclose(via_angles.numpy(), at_zero.numpy(), atol=1e-10)


def test_star_origin_moves_particle_by_minus_shift():
    s = _toy_structure()
    model = atom_model(s, bfactor_A2=50.0, dtype=torch.float64)
    size, pix = 96, 0.5
    eye = torch.eye(3, dtype=torch.float64)[None]
    shift = torch.tensor([[2.3, -1.7]], dtype=torch.float64)  # rlnOriginX/YAngst
    base = render_images(model, eye, size, pix)[0].numpy()
    moved = render_images(model, eye, size, pix, shift_A=shift)[0].numpy()
    np.testing.assert_allclose(
        _centroid(moved) - _centroid(base), -shift[0].numpy() / pix, atol=1e-6
    )


def test_projection_equals_z_sum_of_peng_map():
    s = _toy_structure(60)
    model = atom_model(s, dtype=torch.float64)
    box, voxel = 64, 0.7
    matrix = euler_to_matrix(torch.tensor([[40.0, 70.0, 10.0]], dtype=torch.float64))
    coords = s.coords_A @ matrix[0].numpy().T
    volume = density_map(torch.as_tensor(coords), model.weight, model.sigma_A, box, voxel)
    image = render_images(model, matrix, box, voxel)[0]
    z_sum = volume.sum(0) * voxel
    assert _ncc(image.numpy(), z_sum.numpy()) >= 0.99
    np.testing.assert_allclose(image.numpy(), z_sum.numpy(), atol=1e-6 * float(image.max()))
    # The map's integral is the sum of the Peng amplitudes (all atoms inside the box).
    assert abs(float(volume.sum()) * voxel**3 / float(model.weight.sum()) - 1) < 1e-6


def test_map_axes_follow_zyx_convention():
    s = Structure(
        np.array([[2.1, -3.3, 4.2]]),
        np.array(["O"]),
        *[np.array(["X"])] * 2,
        np.array([1]),
        np.array(["A"]),
        np.zeros(1),
    )
    model = atom_model(s, bfactor_A2=50.0, dtype=torch.float64)
    volume = density_map(model.coords_A, model.weight, model.sigma_A, 48, 0.5).numpy()
    z, y, x = np.indices(volume.shape)
    centroid = [(volume * a).sum() / volume.sum() for a in (x, y, z)]
    np.testing.assert_allclose(centroid, [24 + 4.2, 24 - 6.6, 24 + 8.4], atol=1e-6)


def test_deform_adds_amplitude_weighted_modes():
    coords = torch.randn(10, 3, dtype=torch.float64)
    modes = torch.randn(2, 10, 3, dtype=torch.float64)
    q = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    np.testing.assert_allclose(
        deform(coords, modes, q)[0].numpy(), (coords + 1.5 * modes[0] - 2.0 * modes[1]).numpy()
    )


def test_gradients_match_finite_differences():
    s = _toy_structure(6, spread_A=2.0)
    modes = torch.randn(2, 6, 3, dtype=torch.float64)
    modes /= modes.flatten(1).norm(dim=1)[:, None, None]
    base = atom_model(s, dtype=torch.float64)
    model = AtomModel(base.coords_A, base.weight, base.sigma_A, modes)
    # Blur so finite differences are smooth at this pixel size.
    model = AtomModel(model.coords_A, model.weight, model.sigma_A + 0.5, model.modes)

    def f(amplitudes, angles, shift):
        return render_images(model, euler_to_matrix(angles), 16, 1.0, amplitudes, shift)

    inputs = (
        torch.tensor([[0.7, -0.4]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[20.0, 50.0, 80.0]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_atoms_far_outside_the_image_do_not_wrap_around():
    coords = torch.tensor([[[500.0, 0.0, 0.0], [0.0, -800.0, 0.0]]], dtype=torch.float64)
    weight = torch.ones(2, 5, dtype=torch.float64)
    sigma = torch.full((2, 5), 0.5, dtype=torch.float64)
    image = project_atoms(coords, weight, sigma, 32, 1.0)
    assert float(image.abs().max()) == 0.0
