"""Stage 3 library: PCA, the space file, automatic groups, trajectories and movies."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deephemnma.analysis import (
    axis_bins,
    density_peak_groups,
    fit_pca,
    fit_space,
    gmm_groups,
    group_centroids,
    kmeans_groups,
    load_space,
    path_trajectory,
    pc_trajectory,
    read_path,
    render_frames,
    save_space,
    subspace_angles_deg,
    write_gif,
)
from deephemnma.analysis.figures import density_figure, groups_figure, scatter_3d_figure
from deephemnma.analysis.trajectory import resample_path, write_trajectory_pdb
from deephemnma.errors import InputError


def _helix(n=4000, seed=0):
    """Points on a helix (radius 30, 20 turns) whose axis (length 600) is a random direction.

    (With few turns the best-fit axis of a finite helix tilts by ~ radius / (turns · length).)
    """
    turns = 20
    t = np.linspace(0, 2 * np.pi * turns, n)
    local = np.stack([30 * np.cos(t), 30 * np.sin(t), 600 * t / t[-1]], axis=1)
    rotation = Rotation.random(random_state=seed).as_matrix()
    points = local @ rotation.T + np.array([5.0, -40.0, 12.0])
    axis = rotation[:, 2]  # image of local z
    plane = rotation[:, :2].T  # images of local x, y (rows)
    return points, axis, plane


def test_pca_of_a_helix_recovers_its_axis_and_plane():
    points, axis, plane = _helix()
    fit = fit_pca(points)
    # The helix is elongated along its axis: PC1 is the axis, PC2-PC3 span the circle's plane.
    assert subspace_angles_deg(fit.components[:1], axis[None]).max() < 1.0
    assert subspace_angles_deg(fit.components[1:3], plane).max() < 1.0
    assert fit.explained_variance_ratio[0] > 0.9
    assert np.isclose(fit.explained_variance_ratio.sum(), 1.0)
    # Orthonormal axes; coordinates reproduce the centered points.
    assert np.allclose(fit.components @ fit.components.T, np.eye(3), atol=1e-10)
    coords = fit.transform(points)
    assert np.allclose(coords @ fit.components + fit.mean, points, atol=1e-8)


def test_pca_axis_sign_is_deterministic():
    points, _, _ = _helix(seed=3)
    a = fit_pca(points).components
    b = fit_pca(points[::-1].copy()).components
    assert np.allclose(a, b, atol=1e-8)
    big = np.abs(a).argmax(axis=1)
    assert (a[np.arange(3), big] > 0).all()


def test_pca_bad_input():
    with pytest.raises(InputError):
        fit_pca(np.zeros((1, 3)))
    with pytest.raises(InputError):
        fit_pca(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(InputError, match="principal components"):
        fit_pca(np.random.default_rng(0).normal(size=(10, 3)), n_components=4)


def _space(n=500, truth=True, seed=0):
    rng = np.random.default_rng(seed)
    amps = rng.normal(size=(n, 3)) * [100, 30, 5]
    return fit_space(
        amps,
        [7, 8, 9],
        n_components=2,
        source=(np.arange(n) % 2).astype(np.int8),
        source_names=("predicted", "stage1"),
        score=rng.uniform(size=n),
        truth=amps + 1 if truth else None,
        particles="particles.star",
    )


@pytest.mark.parametrize("truth", [True, False])
def test_space_file_round_trip(tmp_path, truth):
    space = _space(truth=truth)
    path = save_space(tmp_path / "space.npz", space)
    with np.load(path) as raw:  # the contract: plain numpy, these keys and dtypes
        keys = set(raw.files)
        dtypes = {k: raw[k].dtype for k in raw.files}
    expected = {
        "coords",
        "amplitudes",
        "mode_numbers",
        "components",
        "mean",
        "explained_variance_ratio",
        "source",
        "source_names",
        "score",
        "particles",
    }
    assert keys == expected | ({"truth"} if truth else set())
    assert dtypes["coords"] == np.float32 and dtypes["amplitudes"] == np.float32
    assert dtypes["mode_numbers"] == np.int32 and dtypes["source"] == np.int8
    assert dtypes["components"] == np.float64 and dtypes["mean"] == np.float64
    assert dtypes["score"] == np.float32 and dtypes["source_names"].kind == "U"
    back = load_space(path)
    assert back.coords.shape == (500, 2) and back.components.shape == (2, 3)
    for name in ("coords", "amplitudes", "mode_numbers", "components", "mean", "source", "score"):
        assert np.array_equal(getattr(back, name), getattr(space, name)), name
    assert back.source_names == ("predicted", "stage1")
    assert back.particles == "particles.star"
    assert (back.truth is None) == (not truth)
    # coords follow from amplitudes, mean and components.
    assert np.allclose(back.to_coords(back.amplitudes), back.coords, atol=1e-3)


def test_load_space_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_space(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(InputError, match="readable"):
        load_space(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", coords=np.zeros((3, 2)))
    with pytest.raises(InputError, match="missing"):
        load_space(tmp_path / "other.npz")


# ------------------------------------------------------------------------------- groups


def _blobs(seed=0):
    """Five planted blobs of different sizes and spreads on a uniform background."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [60, 10], [-50, 40], [10, -70], [70, -60.0]])
    sizes = [6000, 3000, 2000, 1500, 1000]
    sigmas = [6, 5, 7, 4, 5]
    parts = [rng.normal(c, s, (n, 2)) for c, n, s in zip(centers, sizes, sigmas, strict=True)]
    background = rng.uniform(-100, 100, (1500, 2))
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)] + [np.full(1500, -1)])
    points = np.concatenate(parts + [background])
    third = rng.normal(0, 1, (len(points), 1))
    return np.concatenate([points, third], axis=1), centers, labels


def test_density_peaks_find_planted_blobs():
    coords, centers, labels = _blobs()
    groups = density_peak_groups(coords, 5)
    assert len(groups.groups) == 5
    found = np.array([g.extra["center"] for g in groups.groups])
    distance = np.linalg.norm(found[:, None] - centers[None], axis=-1)
    assert np.allclose(np.sort(distance.min(axis=0)), np.sort(distance.min(axis=1)))
    assert distance.min(axis=0).max() < 4.0  # every blob has a peak within 4 (σ 4–7)
    assert len(set(distance.argmin(axis=1))) == 5  # one peak per blob
    resolved = groups.resolve(coords)
    all_rows = np.concatenate(list(resolved.values()))
    assert len(all_rows) == len(np.unique(all_rows))  # disjoint
    for group in groups.groups:
        blob = distance[groups.groups.index(group)].argmin()
        rows = resolved[group.name]
        assert np.mean(labels[rows] == blob) > 0.9  # the group is that blob
        assert len(rows) > 0.5 * np.sum(labels == blob)
    # The densest blob is peak1.
    assert distance[0].argmin() == 0


def test_density_peaks_given_separation_too_large():
    coords, _, _ = _blobs()
    with pytest.raises(InputError, match="dense regions"):
        density_peak_groups(coords, 5, min_separation=500.0)


@pytest.mark.parametrize("grouper", [kmeans_groups, gmm_groups])
def test_kmeans_and_gmm_partition_into_k_groups(grouper):
    coords, centers, labels = _blobs()
    keep = labels >= 0
    coords, labels = coords[keep], labels[keep]
    groups = grouper(coords, 5, n_dims=2, seed=1)
    assert len(groups.groups) == 5 and groups.n_particles == len(coords)
    resolved = groups.resolve(coords)
    rows = np.sort(np.concatenate(list(resolved.values())))
    assert np.array_equal(rows, np.arange(len(coords)))  # a partition
    for rows in resolved.values():  # each group is one blob
        assert np.bincount(labels[rows]).max() > 0.95 * len(rows)
    # Named along PC1.
    firsts = [g.extra["center"][0] for g in groups.groups]
    assert firsts == sorted(firsts)
    assert groups.groups[0].name.endswith("1") and groups.groups[0].source in ("kmeans", "gmm")


def test_kmeans_fits_on_a_subset_then_assigns_all():
    coords, _, labels = _blobs()
    groups = kmeans_groups(coords[labels >= 0], 5, max_fit=2000)
    assert sum(len(g.indices) for g in groups.groups) == int((labels >= 0).sum())


def test_axis_bins_paper_ribosome_split():
    # 12,095 particles, skewed along PC1: seven bins of at least 900 (paper §3.2.5).
    rng = np.random.default_rng(0)
    pc1 = np.concatenate([rng.normal(0, 40, 9000), rng.normal(120, 20, 3095)])
    coords = np.stack([pc1, rng.normal(0, 10, len(pc1))], axis=1)
    groups = axis_bins(coords, 7, min_per_group=900)
    resolved = groups.resolve(coords)
    sizes = [len(r) for r in resolved.values()]
    assert len(sizes) == 7 and min(sizes) >= 900 and sum(sizes) == len(pc1)
    ranges = [g.extra["range"] for g in groups.groups]
    for (_, hi1), (lo2, _) in zip(ranges, ranges[1:], strict=False):
        assert hi1 <= lo2  # contiguous along PC1, low to high
    assert [g.name for g in groups.groups][:2] == ["pc1_bin1", "pc1_bin2"]
    # Where the data allow it, edges are equal-width: inner bins of a uniform axis.
    uniform = np.stack([np.linspace(0, 70, 7001), np.zeros(7001)], axis=1)
    widths = [np.ptp(uniform[r, 0]) for r in axis_bins(uniform, 7, 10).resolve(uniform).values()]
    assert np.allclose(widths, 10, atol=0.02)


def test_axis_bins_automatic_count_and_errors():
    rng = np.random.default_rng(1)
    coords = rng.normal(0, 1, (5000, 2))
    groups = axis_bins(coords, None, min_per_group=400)
    sizes = [len(r) for r in groups.resolve(coords).values()]
    assert len(sizes) >= 2 and min(sizes) >= 400
    with pytest.raises(InputError, match="cannot make"):
        axis_bins(coords, 20, min_per_group=400)
    trimmed = axis_bins(coords, 4, min_per_group=100, trim=0.05)
    assert sum(len(r) for r in trimmed.resolve(coords).values()) < 5000


def test_grouping_bad_requests():
    coords = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(InputError, match="number of groups"):
        kmeans_groups(coords, 0)
    with pytest.raises(InputError, match="fewer PCs"):
        kmeans_groups(coords, 3, n_dims=3)


# ------------------------------------------------------------------------------- trajectories


def test_pc_trajectory_moves_along_one_pc_only():
    space = _space(truth=False)
    t, amps = pc_trajectory(space, 1, n_frames=5, extent_std=2.0)
    coords = space.to_coords(amps)
    sigma = space.pc_std()[1]
    assert np.allclose(coords[:, 1], t * sigma)
    assert np.allclose(coords[:, 0], 0, atol=1e-9)
    assert np.allclose(t, [-2, -1, 0, 1, 2])
    with pytest.raises(InputError):
        pc_trajectory(space, 5)


def test_path_trajectory_equal_steps(tmp_path):
    path = tmp_path / "path.txt"
    path.write_text("# PC1 PC2\n0 0\n30, 0\n30 40  # corner\n")
    points = read_path(path)
    assert points.shape == (3, 2)
    sampled = resample_path(points, 8)
    steps = np.linalg.norm(np.diff(sampled, axis=0), axis=1)
    assert np.allclose(steps, 10.0)
    space = _space(truth=False)
    pc, amps = path_trajectory(space, points, 8)
    assert np.allclose(space.to_coords(amps), pc, atol=1e-9)
    (tmp_path / "bad.txt").write_text("1 2\nx y\n")
    with pytest.raises(InputError, match="line 2"):
        read_path(tmp_path / "bad.txt")


def test_group_centroids():
    amps = np.arange(12.0).reshape(4, 3)
    centroids = group_centroids(amps, {"a": np.array([0, 2]), "empty": np.array([], int)})
    assert list(centroids) == ["a"] and np.allclose(centroids["a"], [3, 4, 5])


@pytest.fixture(scope="module")
def small_modes():
    from deephemnma.io.pdb import package_data_path, read_structure
    from deephemnma.nma.modes import Modes

    structure = read_structure(package_data_path("4ake_A.pdb"), selection="ca")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, structure.n_atoms, 3))
    q, _ = np.linalg.qr(vectors.reshape(3, -1).T)
    return Modes(structure, np.array([7, 8, 9]), np.ones(3), q.T.reshape(3, structure.n_atoms, 3))


def test_trajectory_models_pdb_and_gif(tmp_path, small_modes):
    import gemmi
    from PIL import Image

    amps = np.array([[-100.0, 0, 0], [0, 0, 0], [100.0, 0, 0]])
    pdb = write_trajectory_pdb(tmp_path / "pc1.pdb", small_modes, amps)
    st = gemmi.read_structure(str(pdb))
    assert len(st) == 3
    moved = np.array([c.atom.pos.tolist() for c in st[2].all()]) - small_modes.structure.coords_A
    assert np.allclose(moved, 100 * small_modes.vectors[0], atol=2e-3)  # PDB keeps 3 decimals
    frames = render_frames(small_modes, amps, image_size=48)
    assert frames.shape == (3, 48, 96) and frames.dtype == np.uint8
    assert frames.max() > 200 and (frames[:, 0, :] == 0).all()  # the model fits in the box
    assert not np.array_equal(frames[0], frames[2])  # the motion shows
    gif = write_gif(tmp_path / "pc1.gif", frames, fps=5)
    with Image.open(gif) as image:
        assert image.n_frames == 4  # forth and back: 0 1 2 1
        assert image.size == (96, 48)


def test_figures_at_many_points(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50_000, 3)).astype(np.float32)
    source = (rng.uniform(size=len(coords)) < 0.3).astype(np.int8)
    assert density_figure(coords, tmp_path / "d.png", source, ("a", "b")).stat().st_size > 0
    assert scatter_3d_figure(coords, tmp_path / "s.png").stat().st_size > 0
    groups = {"g1": np.arange(0, 1000), "g2": np.arange(5000, 9000)}
    assert groups_figure(coords, groups, tmp_path / "g.png").stat().st_size > 0
    assert density_figure(coords[:, :1], tmp_path / "one.png").stat().st_size > 0
