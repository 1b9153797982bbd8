"""``deephemnma reconstruct``: group folders and files, skipped groups, bad input (exit 2),
another box, poses from downsampled images with the original images, centroid-model FSC."""

import json

import mrcfile
import numpy as np
import pytest

from deephemnma.cli.main import main
from deephemnma.groups import Group, GroupSet, write_groups
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.io.star import ParticleTable, read_particles, with_amplitudes, write_particles
from deephemnma.reconstruct.group import FILES
from deephemnma.simulate import SimulationConfig, simulate_dataset

BOX, PIX, N = 32, 2.0, 160


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recon_cli")
    structure = read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()
    config = SimulationConfig(
        n_images=N,
        image_size=BOX,
        pixel_size_A=PIX,
        snr=float("inf"),
        trajectory="zero",
        angles="uniform",
        defocus_min_A=8000.0,
        defocus_max_A=20000.0,
        max_shift_px=2.0,
        chunk_size=N,
        seed=4,
    )
    star = simulate_dataset(structure, None, config, folder / "sim", progress=False)
    return folder, star, structure


def _groups(folder, spec, n_particles=N):
    path = folder / "groups.json"
    groups = tuple(Group(name, indices=np.asarray(rows)) for name, rows in spec.items())
    write_groups(path, GroupSet(groups, n_particles=n_particles))
    return path


def test_two_groups_give_two_folders_and_a_small_one_is_skipped(sim, tmp_path, capsys):
    _, star, _ = sim
    groups = _groups(
        tmp_path,
        {"open state": np.arange(0, 70), "closed": np.arange(70, 150), "few": [150, 151]},
    )
    out = tmp_path / "out"
    code = main(
        ["reconstruct", str(star), "-o", str(out), "--groups", str(groups),
         "--min-particles", "50", "--pad", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "skipping group 'few'" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert [g["folder"] for g in summary["groups"]] == ["open_state", "closed"]
    assert summary["skipped"] == [{"name": "few", "n_particles": 2, "reason": "too few"}]
    for group in summary["groups"]:
        folder = out / group["folder"]
        assert all((folder / name).is_file() for name in FILES), list(folder.iterdir())
        with mrcfile.open(folder / "map.mrc") as mrc:
            assert mrc.data.shape == (BOX, BOX, BOX)
            assert float(mrc.voxel_size.x) == pytest.approx(PIX)
        record = json.loads((folder / "summary.json").read_text())
        assert record["n_particles"] == group["n_particles"]
        assert 2 * PIX <= record["resolution_fsc0143_A"] <= record["resolution_fsc05_A"] < 20
        lines = (folder / "fsc.csv").read_text().splitlines()
        assert lines[0].startswith("shell,frequency_invA,resolution_A,n_voxels,fsc_half_maps")
        assert len(lines) == BOX // 2 + 2
    assert not (out / "few").exists()


def test_nothing_left_to_reconstruct_is_an_error(sim, tmp_path, capsys):
    _, star, _ = sim
    groups = _groups(tmp_path, {"a": np.arange(10), "b": np.arange(10, 30)})
    code = main(["reconstruct", str(star), "-o", str(tmp_path / "o"), "--groups", str(groups)])
    assert code == 2
    assert "no group has enough particles" in capsys.readouterr().err


def test_missing_poses_exit_2_naming_file_and_field(sim, tmp_path, capsys):
    _, star, _ = sim
    table = read_particles(star)
    broken = ParticleTable(table.optics, table.particles.drop(columns=["rlnAngleTilt"]), None)
    write_particles(tmp_path / "noposes.star", broken)
    code = main(["reconstruct", str(tmp_path / "noposes.star"), "-o", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "noposes.star" in err and "rlnAngleTilt" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_another_box_resamples_and_odd_box_is_refused(sim, tmp_path, capsys):
    _, star, _ = sim
    out = tmp_path / "small"
    assert main(["reconstruct", str(star), "-o", str(out), "--size", "16", "--quiet"]) == 0
    with mrcfile.open(out / "all" / "map.mrc") as mrc:
        assert mrc.data.shape == (16, 16, 16)
        assert float(mrc.voxel_size.x) == pytest.approx(PIX * BOX / 16)
    assert main(["reconstruct", str(star), "-o", str(out), "--size", "17"]) == 2
    assert "--size" in capsys.readouterr().err


def test_poses_from_downsampled_images_with_the_original_images(sim, tmp_path, capsys):
    """The paper's protocol: poses estimated at half size, map from the full-size images."""
    _, star, _ = sim
    pre = tmp_path / "pre"
    assert main(["preprocess", str(star), "--size", str(BOX // 2), "-o", str(pre), "--quiet"]) == 0
    out = tmp_path / "full"
    code = main(
        ["reconstruct", str(pre / "particles.star"), "--images", str(star), "-o", str(out),
         "--quiet"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "all" / "summary.json").read_text())
    assert summary["box"] == BOX and summary["voxel_size_A"] == pytest.approx(PIX)
    assert summary["resolution_fsc0143_A"] < 3 * PIX
    # The downsampled images alone (phase-flipped there) give a map at their own box.
    assert main(["reconstruct", str(pre / "particles.star"), "-o", str(tmp_path / "h"),
                 "--quiet"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "h" / "summary.json").read_text())["ctf_mode"] == (
        "phase-flipped"
    )
    # A table of other particles is refused.
    table = read_particles(star)
    fewer = ParticleTable(table.optics, table.particles.iloc[:10], None)
    write_particles(tmp_path / "fewer.star", fewer)
    code = main(["reconstruct", str(star), "--images", str(tmp_path / "fewer.star"), "-o",
                 str(tmp_path / "x")])  # fmt: skip
    assert code == 2
    assert "same particles" in capsys.readouterr().err


def test_polygon_groups_and_centroid_model_fsc(sim, tmp_path):
    from deephemnma.nma.modes import Modes, save_modes

    folder, star, structure = sim
    # Amplitudes of three modes (all zero: one conformation) and a modes file around the
    # simulated reference: the centroid model is then the simulated structure.
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, structure.n_atoms, 3))
    vectors /= np.linalg.norm(vectors.reshape(3, -1), axis=1)[:, None, None]
    modes = Modes(structure, np.array([7, 8, 9]), np.ones(3), vectors)
    save_modes(tmp_path / "modes.npz", modes)
    table = with_amplitudes(read_particles(star), [7, 8, 9], np.zeros((N, 3)))
    write_particles(folder / "sim" / "with_amplitudes.star", table)
    coords = np.stack([np.arange(N), np.zeros(N)], 1).astype(np.float32)
    np.savez(tmp_path / "space.npz", coords=coords)
    polygon = Group("left", polygon=np.array([[-1, -1], [99.5, -1], [99.5, 1], [-1, 1]]))
    write_groups(tmp_path / "groups.json", GroupSet((polygon,), n_particles=N))
    out = tmp_path / "out"
    code = main(
        ["reconstruct", str(folder / "sim" / "with_amplitudes.star"), "-o", str(out),
         "--groups", str(tmp_path / "groups.json"), "--modes", str(tmp_path / "modes.npz"),
         "--quiet"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / "left" / "summary.json").read_text())
    assert record["n_particles"] == 100
    assert record["mean_amplitudes"] == {"07": 0.0, "08": 0.0, "09": 0.0}
    # Noise-free images of the model itself: the map matches the model to high resolution.
    assert record["resolution_model_fsc05_A"] < 2.5 * PIX
    assert (out / "left" / "model.mrc").is_file()
    assert "fsc_model" in (out / "left" / "fsc.csv").read_text().splitlines()[0]
    # Without the coordinates a polygon group cannot be resolved.
    (tmp_path / "space.npz").unlink()
    code = main(["reconstruct", str(star), "-o", str(tmp_path / "o2"), "--groups",
                 str(tmp_path / "groups.json")])  # fmt: skip
    assert code == 2
