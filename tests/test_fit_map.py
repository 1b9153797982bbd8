"""Flexible fitting into a target map (HEMNMA-3D): known deformation and pose recovered, the
4AKE → 1AKE change, mode ranking, the coarse levels' frame, bad input.

Targets are simulated with the forward model (Peng densities with a B-factor blur,
``project.density_map``) from coordinates deformed with ``r + Σ q v`` and rotated with
``geometry.euler_to_matrix`` — not with the fitting code's own single-Gaussian renderer,
rotation parametrization or filters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deephemnma.errors import InputError
from deephemnma.geometry import euler_to_matrix, geodesic_distance_deg
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.nma import compute_modes
from deephemnma.nma.analysis import compare_with_target, kabsch, match_atoms
from deephemnma.nma.fit import (
    _TargetCube,
    fit_to_map,
    map_center_of_mass_A,
    reference_gaussians,
    resolution_sigma_A,
)
from deephemnma.project import atom_model, density_map
from deephemnma.pseudoatoms import gaussian_map

VOXEL_A = 1.5
BOX = 64
TRUE_Q = np.array([120.0, -80.0, 60.0])  # modes 7, 8, 9
TRUE_ANGLES_DEG = [10.0, 4.0, -8.0]  # a 7° rotation
TRUE_SHIFT_A = np.array([2.0, -1.5, 1.0])


@pytest.fixture(autouse=True)
def one_thread():
    # The 2 CPU cores are shared: one thread avoids OpenMP oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def heavy_4ake():
    return read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()


@pytest.fixture(scope="module")
def modes_4ake(heavy_4ake):
    return compute_modes(heavy_4ake, n_modes=12, progress=False)  # RTB, 8 Å


def simulate(structure, coords_A, bfactor_A2=100.0) -> np.ndarray:
    model = atom_model(structure, bfactor_A2=bfactor_A2, dtype=torch.float64)
    coords = torch.as_tensor(coords_A, dtype=torch.float64)
    return density_map(coords, model.weight, model.sigma_A, BOX, VOXEL_A).numpy()


@pytest.fixture(scope="module")
def known_target(heavy_4ake, modes_4ake):
    vectors = modes_4ake.select([7, 8, 9]).vectors
    deformed = heavy_4ake.coords_A + np.einsum("k,kna->na", TRUE_Q, vectors)
    matrix = euler_to_matrix(torch.tensor(TRUE_ANGLES_DEG, dtype=torch.float64)).numpy()
    moved = deformed @ matrix.T + TRUE_SHIFT_A
    return simulate(heavy_4ake, moved), matrix, moved


@pytest.fixture(scope="module")
def target_1ake(heavy_4ake):
    """1AKE chain A superposed onto 4AKE (CA), and its map."""
    target = read_structure(package_data_path("1ake.pdb"), selection="heavy", chains=["A"])
    ref_idx, tgt_idx = match_atoms(heavy_4ake, target, ("CA",))
    rotation, shift = kabsch(target.coords_A[tgt_idx], heavy_4ake.coords_A[ref_idx])
    coords = target.coords_A @ rotation.T + shift
    return target, coords, simulate(target, coords), ref_idx, tgt_idx


# ------------------------------------------------------------------ known answer


def test_fit_recovers_known_amplitudes_and_pose(modes_4ake, known_target):
    volume, matrix, moved = known_target
    result = fit_to_map(modes_4ake, volume, VOXEL_A, mode_numbers=[7, 8, 9], progress=False)
    assert result.mode_numbers.tolist() == [7, 8, 9]
    np.testing.assert_allclose(result.amplitudes, TRUE_Q, rtol=0.15)
    angle = geodesic_distance_deg(torch.tensor(result.matrix), torch.tensor(matrix))
    assert float(angle) < 1.0
    np.testing.assert_allclose(result.shift_A, TRUE_SHIFT_A, atol=0.3)
    rmsd = np.sqrt(np.mean(np.sum((result.coords_A - moved) ** 2, axis=1)))
    assert rmsd < 0.5
    assert result.correlation_after > result.correlation_before + 0.1
    assert result.correlation_after > 0.95
    # Ranking: |q| order, the largest true mode (7) first; contributions q²/Σq².
    assert result.ranking.tolist() == [7, 8, 9]
    np.testing.assert_allclose(result.contribution.sum(), 1.0)
    np.testing.assert_allclose(result.contribution, TRUE_Q**2 / np.sum(TRUE_Q**2), atol=0.05)
    assert np.all(result.correlation_without < result.correlation_after)
    # The reported pose reproduces the fitted coordinates: A (r + Σ q v) + shift.
    deformed = modes_4ake.structure.coords_A + np.einsum(
        "k,kna->na", result.amplitudes, modes_4ake.select([7, 8, 9]).vectors
    )
    np.testing.assert_allclose(
        deformed @ result.matrix.T + result.shift_A, result.coords_A, atol=1e-3
    )
    np.testing.assert_allclose(
        euler_to_matrix(torch.tensor(result.angles_deg)).numpy(), result.matrix, atol=1e-6
    )
    report = result.to_dict()
    assert report["ranking"] == [7, 8, 9] and report["modes"][0]["rank"] == 1


def test_fit_4ake_into_1ake_map_ranks_the_transition_mode_first(modes_4ake, target_1ake):
    target, coords_1ake, volume, ref_idx, tgt_idx = target_1ake
    numbers = list(range(7, 13))
    result = fit_to_map(
        modes_4ake, volume, VOXEL_A, mode_numbers=numbers, resolution_A=8.0, progress=False
    )
    assert result.correlation_after > result.correlation_before + 0.15
    overlap = compare_with_target(modes_4ake.select(numbers), target).overlap
    best = numbers[int(np.argmax(overlap))]
    assert result.ranking[0] == best
    assert overlap[numbers.index(int(result.ranking[0]))] > 0.75

    # The fitted model moved toward 1AKE (CA RMSD 7.1 Å before).
    def rmsd(coords_A):
        return np.sqrt(np.mean(np.sum((coords_A[ref_idx] - coords_1ake[tgt_idx]) ** 2, 1)))

    before, after = rmsd(modes_4ake.structure.coords_A), rmsd(result.coords_A)
    assert before > 7.0 and after < 3.0
    # The amplitudes agree with the least-squares projection of the atomic displacement
    # 4AKE → 1AKE (all matched heavy atoms) onto the same modes — no map involved.
    ref_all, tgt_all = match_atoms(modes_4ake.structure, target, None)
    displacement = coords_1ake[tgt_all] - modes_4ake.structure.coords_A[ref_all]
    basis = modes_4ake.select(numbers).vectors[:, ref_all, :].reshape(len(numbers), -1).T
    q_ls = np.linalg.lstsq(basis, displacement.ravel(), rcond=None)[0]
    top = numbers.index(int(result.ranking[0]))
    assert result.amplitudes[top] == pytest.approx(q_ls[top], rel=0.15)


# ------------------------------------------------------------------ pieces


def test_coarse_levels_keep_the_center_and_match_direct_rendering():
    # A filtered, Fourier-cropped map of Gaussians equals the Gaussians rendered directly
    # on the coarse grid with σ widened by the filter (and the voxel averages' blur,
    # variance v²/12): same frame (center voxel n//2), same values.
    rng = np.random.default_rng(3)
    centers = torch.tensor(rng.uniform(-15, 15, size=(20, 3)))
    weights = torch.tensor(rng.uniform(0.5, 2.0, size=20))
    fine = gaussian_map(centers, weights, 1.5, BOX, VOXEL_A).numpy()
    sigma_filter = resolution_sigma_A(16.0)
    level = _TargetCube(fine).level(sigma_filter, VOXEL_A)
    assert level.box < BOX
    variance = 1.5**2 + sigma_filter**2 + (VOXEL_A**2 - level.voxel_size_A**2) / 12
    assert level.model_variance_A2 == pytest.approx(variance - 1.5**2)
    direct = gaussian_map(
        centers, weights, float(np.sqrt(variance)), level.box, level.voxel_size_A
    ).numpy()
    got = level.target.numpy()
    assert np.abs(got - direct).max() < 1e-3 * direct.max()
    assert np.corrcoef(got.ravel(), direct.ravel())[0, 1] > 0.9999


def test_single_gaussian_per_atom_keeps_integral_and_second_moment(heavy_4ake):
    # One carbon, one sulfur: Peng's five Gaussians vs the moment-matched one, on a fine grid.
    two = heavy_4ake.select(np.isin(heavy_4ake.element, ["C", "S"]))
    two = two.select(np.r_[0, np.flatnonzero(two.element == "S")[0]])
    weight, sigma = reference_gaussians(two)
    model = atom_model(two, dtype=torch.float64)
    for i in range(2):
        zero = torch.zeros(1, 3, dtype=torch.float64)
        peng = density_map(zero, model.weight[i : i + 1], model.sigma_A[i : i + 1], 96, 0.1)
        peng = peng.numpy()
        axis = (np.arange(96) - 48) * 0.1
        integral = peng.sum() * 0.1**3
        second = (peng.sum((0, 1)) * axis**2).sum() * 0.1**3 / integral
        assert weight[i] == pytest.approx(integral, rel=1e-3)
        assert sigma[i] ** 2 + 0.1**2 / 12 == pytest.approx(second, rel=2e-2)


def test_map_center_of_mass(heavy_4ake):
    coords = heavy_4ake.coords_A + np.array([3.0, -2.0, 1.5])
    volume = simulate(heavy_4ake, coords)
    weight, _ = reference_gaussians(heavy_4ake)
    expected = (coords * weight[:, None]).sum(0) / weight.sum()
    np.testing.assert_allclose(map_center_of_mass_A(volume, VOXEL_A), expected, atol=0.3)


def test_pose_only_and_fixed_pose(modes_4ake, known_target):
    volume, _, _ = known_target
    rigid = fit_to_map(modes_4ake, volume, VOXEL_A, mode_numbers=[], levels=1, progress=False)
    assert rigid.amplitudes.size == 0 and rigid.ranking.size == 0
    assert rigid.correlation_after > rigid.correlation_before
    fixed = fit_to_map(
        modes_4ake, volume, VOXEL_A, mode_numbers=[7], fit_pose=False, levels=1, progress=False
    )
    np.testing.assert_allclose(fixed.matrix, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(fixed.shift_A, 0.0, atol=1e-5)


def test_bad_fit_input_is_an_input_error(modes_4ake, known_target):
    volume, _, _ = known_target
    with pytest.raises(InputError, match="rigid-body"):
        fit_to_map(modes_4ake, volume, VOXEL_A, mode_numbers=[5, 7], progress=False)
    with pytest.raises(InputError, match="not available"):
        fit_to_map(modes_4ake, volume, VOXEL_A, mode_numbers=[7, 30], progress=False)
    with pytest.raises(InputError, match="voxel size"):
        fit_to_map(modes_4ake, volume, 0.0, mode_numbers=[7], progress=False)
    with pytest.raises(InputError, match="constant"):
        fit_to_map(modes_4ake, np.ones((16, 16, 16)), VOXEL_A, mode_numbers=[7], progress=False)
    with pytest.raises(InputError, match="3D"):
        fit_to_map(modes_4ake, np.ones((16, 16)), VOXEL_A, mode_numbers=[7], progress=False)
