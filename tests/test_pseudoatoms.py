"""EM map → pseudoatoms: rendering, representation error, frames, NMA on pseudoatoms, errors.

Independent constructions: Gaussians integrated over voxels with scipy's erf in numpy, maps
simulated from 4AKE with the forward model's Peng densities (``project.density_map``), known
Gaussian blobs in a non-cubic box, and the atomic normal modes of 4AKE carried to the
pseudoatoms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from deephemnma.errors import InputError
from deephemnma.io.pdb import package_data_path, read_structure, write_structure
from deephemnma.nma import compute_modes
from deephemnma.nma.analysis import interpolate_vectors, subspace_overlap
from deephemnma.nma.network import is_pseudoatomic, percentile_cutoff_A
from deephemnma.project import atom_model, density_map
from deephemnma.pseudoatoms import (
    auto_threshold,
    gaussian_map,
    map_to_pseudoatoms,
    pseudoatom_cutoff_A,
    pseudoatom_modes,
    pseudoatom_sigma_A,
    pseudoatom_structure,
    pseudoatom_weights,
)

VOXEL_A = 1.5
BOX = 64
B_BLUR_A2 = 300.0  # σ ≈ 2 Å blur: a ~9 Å map, as smooth as 1.5-voxel pseudoatoms can render


@pytest.fixture(autouse=True)
def one_thread():
    # The 2 CPU cores are shared: one thread avoids OpenMP oversubscription (5 s vs 30 s).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def voxel_gaussians(shape_zyx, voxel_A, centers_xyz_A, weights, sigma_A) -> np.ndarray:
    """Gaussians integrated over voxels, written out with numpy/scipy: [z, y, x] per Å³."""
    out = np.zeros(shape_zyx)
    for (x, y, z), w in zip(centers_xyz_A, weights, strict=True):
        profiles = []
        for value, n in zip((z, y, x), shape_zyx, strict=True):
            edges = (np.arange(n + 1) - 0.5 - n // 2) * voxel_A
            cdf = erf((edges - value) / (math.sqrt(2) * sigma_A))
            profiles.append(0.5 * np.diff(cdf))
        pz, py, px = profiles
        out += w * pz[:, None, None] * py[None, :, None] * px[None, None, :]
    return out / voxel_A**3


@pytest.fixture(scope="module")
def heavy_4ake():
    return read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()


@pytest.fixture(scope="module")
def map_4ake(heavy_4ake) -> np.ndarray:
    model = atom_model(heavy_4ake, bfactor_A2=B_BLUR_A2, dtype=torch.float64)
    return density_map(model.coords_A, model.weight, model.sigma_A, BOX, VOXEL_A).numpy()


@pytest.fixture(scope="module")
def pseudo_4ake(map_4ake):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the autouse one
    try:
        return map_to_pseudoatoms(map_4ake, VOXEL_A, progress=False)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("box", [24, 56])  # dense product (small box) and windowed path
def test_gaussian_map_matches_voxel_integrals(box):
    rng = np.random.default_rng(1)
    centers = rng.uniform(-8, 8, size=(5, 3))
    weights = rng.uniform(0.5, 2.0, size=5)
    sigma = 1.3
    got = gaussian_map(torch.tensor(centers), torch.tensor(weights), sigma, box, 1.2).numpy()
    want = voxel_gaussians((box,) * 3, 1.2, centers, weights, sigma)
    # Windows reach 4.5 σ: the mass beyond is < 1e-5, a value < 1e-7 of the peak.
    np.testing.assert_allclose(got, want, atol=1e-7 * want.max())
    # Same as the forward model's density_map with one Gaussian per point.
    same = density_map(
        torch.tensor(centers),
        torch.tensor(weights)[:, None],
        torch.full((5, 1), sigma, dtype=torch.float64),
        box,
        1.2,
    ).numpy()
    np.testing.assert_allclose(got, same, atol=1e-7 * want.max())


def test_auto_threshold_background_and_floor():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, size=(40, 40, 40))
    noise[15:25, 15:25, 15:25] += 5.0
    threshold = auto_threshold(noise)
    assert 0.25 < threshold < 0.35  # ≈ 3 σ of the background
    clean = np.zeros((32, 32, 32))
    clean[10:20, 10:20, 10:20] = 2.0
    assert auto_threshold(clean) == pytest.approx(0.02)  # 1 % of the maximum


# ------------------------------------------------------------------ map of 4AKE


def test_4ake_map_is_represented_below_5_percent(map_4ake, pseudo_4ake):
    structure, info = pseudo_4ake
    assert info.converged and info.representation_error < 0.05
    assert info.n_atoms == structure.n_atoms and 100 < info.n_atoms < 1000
    # The error recomputed independently: pseudoatoms rendered by the forward model.
    sigma = pseudoatom_sigma_A(structure)
    rendered = density_map(
        torch.tensor(structure.coords_A),
        torch.tensor(pseudoatom_weights(structure))[:, None],
        torch.tensor(sigma)[:, None],
        BOX,
        VOXEL_A,
    ).numpy()
    mask = map_4ake > info.threshold
    error = np.linalg.norm((rendered - map_4ake)[mask]) / np.linalg.norm(map_4ake[mask])
    assert error == pytest.approx(info.representation_error, rel=1e-3)
    assert error < 0.05
    # History: the error falls as atoms are added.
    errors = [e for _, e in info.history]
    assert errors[-1] < errors[0]


def test_4ake_pseudoatom_modes_overlap_atomic_modes(heavy_4ake, pseudo_4ake):
    structure, _ = pseudo_4ake
    assert is_pseudoatomic(structure)
    cutoff_A, rule = pseudoatom_cutoff_A(structure.coords_A)
    assert cutoff_A >= percentile_cutoff_A(structure.coords_A)
    modes = compute_modes(structure, n_modes=9, cutoff_A=cutoff_A, progress=False)
    assert modes.parameters["method"] == "anm"
    atomic = compute_modes(heavy_4ake, n_modes=9, progress=False)  # RTB, 8 Å
    carried = interpolate_vectors(
        atomic.select([7, 8, 9]).vectors, heavy_4ake.coords_A, structure.coords_A
    )
    overlap = subspace_overlap(modes.select([7, 8, 9]).vectors, carried)
    assert overlap >= 0.7, (overlap, cutoff_A, rule)


def test_pseudoatom_modes_raise_the_cutoff_until_the_network_is_rigid():
    # A ball of pseudoatoms (jittered 4 Å grid) with a two-atom collinear tail: at the
    # spacing cut-off the tail tip hangs on springs along one line (extra zero modes).
    rng = np.random.default_rng(0)
    axis = np.arange(-16, 17, 4.0)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    ball = grid[np.linalg.norm(grid, axis=1) <= 15]
    ball = ball + rng.normal(0, 0.3, ball.shape)
    top = ball[np.argmax(ball[:, 2])]
    coords = np.vstack([ball, top + [[0, 0, 4.0], [0, 0, 8.0]]])
    structure = pseudoatom_structure(coords, 2.0)
    base, rule = pseudoatom_cutoff_A(coords)
    assert rule == "median-distance-to-12th-neighbour"
    with pytest.raises(InputError, match="zero modes instead of six"):
        compute_modes(structure, n_modes=9, cutoff_A=base, progress=False)
    modes = pseudoatom_modes(structure, n_modes=9, progress=False)
    raised = modes.parameters["cutoff_A"] / base
    assert raised > 1.05 and np.isclose(
        np.log(raised) / np.log(1.1), np.round(np.log(raised) / np.log(1.1))
    )
    assert "until the network was rigid" in modes.parameters["cutoff_rule"]
    assert np.sum(modes.eigenvalues < 1e-9 * modes.eigenvalues[-1]) == 6
    # A given cut-off is used as is.
    fixed = pseudoatom_modes(structure, n_modes=9, cutoff_A=12.0, progress=False)
    assert fixed.parameters["cutoff_A"] == 12.0


def test_pseudoatom_pdb_round_trip(tmp_path, pseudo_4ake):
    structure, info = pseudo_4ake
    path = write_structure(tmp_path / "pseudo.pdb", structure)
    back = read_structure(path, selection="all")
    assert back.n_atoms == structure.n_atoms
    np.testing.assert_allclose(back.coords_A, structure.coords_A, atol=1e-3)
    assert set(np.char.strip(back.atom_name.astype(str))) == {"DENS"}
    # B = 8π²σ²: the Debye–Waller blur of the Gaussian.
    np.testing.assert_allclose(back.b_factor_A2, 8 * np.pi**2 * info.sigma_A**2, rtol=1e-4)
    np.testing.assert_allclose(pseudoatom_sigma_A(back), info.sigma_A, rtol=1e-4)


# ------------------------------------------------------------------ known blobs, frames


def test_known_gaussians_in_a_non_cubic_box_are_recovered():
    # Three blobs at known positions (Å from the center voxel n//2 of each axis).
    shape = (36, 44, 40)
    voxel = 1.5
    centers = np.array([[-8.0, 3.0, 4.5], [6.0, -7.5, -3.0], [2.0, 9.0, -6.0]])
    weights = np.array([60.0, 40.0, 50.0])
    sigma = 2.0
    volume = voxel_gaussians(shape, voxel, centers, weights, sigma)
    structure, info = map_to_pseudoatoms(volume, voxel, sigma_A=sigma, progress=False)
    assert info.converged and info.representation_error < 0.05
    w = pseudoatom_weights(structure)
    nearest = np.argmin(
        np.linalg.norm(structure.coords_A[:, None] - centers[None], axis=-1), axis=1
    )
    for k in range(3):
        mine = nearest == k
        centroid = (structure.coords_A[mine] * w[mine, None]).sum(0) / w[mine].sum()
        np.testing.assert_allclose(centroid, centers[k], atol=0.3)
        assert w[mine].sum() == pytest.approx(weights[k], rel=0.05)


def test_sharp_map_stalls_with_a_clear_message():
    centers = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 6.0, 2.0]])
    volume = voxel_gaussians((32, 32, 32), 1.0, centers, np.ones(3) * 10, 0.5)
    _, info = map_to_pseudoatoms(volume, 1.0, sigma_A=2.0, progress=False)
    assert not info.converged
    assert "stalls" in info.message and "smaller width" in info.message


def test_max_atoms_stops_growth():
    volume = voxel_gaussians((32, 32, 32), 1.5, np.array([[0.0, 0.0, 0.0]]), [1.0], 6.0)
    _, info = map_to_pseudoatoms(volume, 1.5, sigma_A=1.5, max_atoms=5, progress=False)
    assert info.n_atoms <= 5 and not info.converged
    assert "max_atoms" in info.message


# ------------------------------------------------------------------ bad input


def test_nothing_above_threshold_is_an_input_error():
    with pytest.raises(InputError, match="nothing above the threshold"):
        map_to_pseudoatoms(np.zeros((16, 16, 16)), 1.0, progress=False)
    volume = voxel_gaussians((16, 16, 16), 1.0, np.zeros((1, 3)), [1.0], 2.0)
    with pytest.raises(InputError, match="nothing above the threshold"):
        map_to_pseudoatoms(volume, 1.0, threshold=volume.max() * 2, progress=False)


@pytest.mark.parametrize("voxel", [None, 0.0, -1.0, float("nan")])
def test_missing_voxel_size_is_an_input_error(voxel):
    with pytest.raises(InputError, match="voxel size"):
        map_to_pseudoatoms(np.ones((8, 8, 8)), voxel, progress=False)


def test_bad_maps_and_parameters_are_input_errors():
    with pytest.raises(InputError, match="3D"):
        map_to_pseudoatoms(np.ones((8, 8)), 1.0, progress=False)
    bad = np.ones((8, 8, 8))
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        map_to_pseudoatoms(bad, 1.0, progress=False)
    with pytest.raises(InputError, match="fraction"):
        map_to_pseudoatoms(np.ones((8, 8, 8)), 1.0, target_error=5, progress=False)
    with pytest.raises(InputError, match="width"):
        map_to_pseudoatoms(np.ones((8, 8, 8)), 1.0, sigma_A=-1, progress=False)


def test_projector_uses_each_pseudoatom_width_and_weight(tmp_path):
    """atom_model renders pseudoatoms as their own Gaussians, also after a PDB round trip."""
    from deephemnma.io.pdb import read_structure, write_structure
    from deephemnma.project import atom_model, render_images

    coords = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    structure = pseudoatom_structure(coords, sigma_A=2.0, weights=np.array([1.0, 3.0]))
    model = atom_model(structure)
    assert model.weight.shape == (2, 1)
    np.testing.assert_allclose(model.sigma_A.numpy().ravel(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(model.weight.numpy().ravel(), [1.0, 3.0])
    image = render_images(model, torch.eye(3)[None].double().float(), 32, 1.0)[0]
    # The heavier pseudoatom is three times brighter at its center.
    ratio = float(image[16, 22] / image[16, 16])
    assert 2.5 < ratio < 3.5
    write_structure(tmp_path / "p.pdb", structure)
    back = read_structure(tmp_path / "p.pdb", selection="all")
    assert is_pseudoatomic(back)
    np.testing.assert_allclose(atom_model(back).sigma_A.numpy().ravel(), 2.0, rtol=1e-3)
