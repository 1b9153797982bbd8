"""`deephemnma analyze` end to end on a tiny simulated data set."""

import json

import numpy as np
import pytest

from deephemnma.analysis import load_space
from deephemnma.cli.main import main
from deephemnma.groups import read_groups
from deephemnma.io.star import (
    amplitudes,
    read_particles,
    with_amplitudes,
    with_columns,
    write_particles,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """40 paper-ak particles, 64² at 1.3 Å (ground truth in the STAR), with modes."""
    root = tmp_path_factory.mktemp("sim")
    code = main(
        [
            "simulate",
            "--preset",
            "paper-ak",
            "-n",
            "40",
            "--image-size",
            "64",
            "--pixel-size",
            "1.3",
            "--quiet",
            "-o",
            str(root / "sim"),
        ]
    )
    assert code == 0
    return root / "sim"


def _predicted(sim, folder, noise=5.0, seed=0):
    """A 'predicted' STAR in another folder: the truth plus noise on the amplitudes."""
    table = read_particles(sim / "particles.star")
    modes, values = amplitudes(table)
    rng = np.random.default_rng(seed)
    table = with_amplitudes(table, modes, values + rng.normal(0, noise, values.shape))
    folder.mkdir(parents=True, exist_ok=True)
    return write_particles(folder / "pred.star", table)


def test_analyze_end_to_end(sim, tmp_path):
    pred = _predicted(sim, tmp_path / "predict")
    (tmp_path / "path.txt").write_text("-150 0\n0 60\n150 0\n")
    out = tmp_path / "analysis"
    code = main(
        [
            "analyze",
            str(pred),
            "-o",
            str(out),
            "--modes",
            str(sim / "modes.npz"),
            "--truth",
            str(sim / "particles.star"),
            "--groups",
            "3",
            "--method",
            "kmeans",
            "--frames",
            "4",
            "--gif-size",
            "32",
            "--path",
            str(tmp_path / "path.txt"),
            "--trajectory-pcs",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    space = load_space(out / "space.npz")
    assert space.coords.shape == (40, 3) and space.amplitudes.shape == (40, 3)
    assert space.mode_numbers.tolist() == [7, 8, 9]
    assert space.source_names == ("predicted",) and (space.source == 0).all()
    assert np.isnan(space.score).all()  # simulate writes no Stage-1 score
    truth = amplitudes(read_particles(sim / "particles.star"))[1]
    assert np.allclose(space.truth, truth, atol=1e-3)
    # The particles entry is relative to the space file and leads to the analyzed STAR.
    assert (out / space.particles).resolve() == pred.resolve()
    groups = read_groups(out / "groups.json")
    assert groups.n_particles == 40 and groups.particles == space.particles
    assert groups.names() == ["kmeans1", "kmeans2", "kmeans3"]
    assert {g.source for g in groups.groups} == {"kmeans"}
    summary = json.loads((out / "summary.json").read_text())
    assert sum(g["n"] for g in summary["groups"].values()) == 40
    assert summary["trajectories"] == ["pc1", "pc2", "path"]
    for name in (
        "explained_variance.png",
        "density.png",
        "scatter3d.png",
        "groups.png",
        "trajectories.png",
        "explained_variance.json",
        "config.json",
        "models/mean.pdb",
        "models/kmeans1_centroid.pdb",
        "trajectories/pc1.pdb",
        "trajectories/pc1.gif",
        "trajectories/path.pdb",
        "trajectories/path.gif",
    ):
        assert (out / name).is_file(), name
    explained = json.loads((out / "explained_variance.json").read_text())
    assert np.isclose(explained["cumulative"][-1], 1.0)


def test_analyze_combined_space_and_group_file(sim, tmp_path):
    pred = _predicted(sim, tmp_path / "predict")
    stage1_table = read_particles(sim / "particles.star")
    stage1_table = with_columns(stage1_table, {"deephemnmaScore": np.linspace(0, 1, 40)})
    stage1 = write_particles(tmp_path / "align" / "particles.star", stage1_table)
    # A group file as the explorer writes it: a polygon in PC space and explicit rows.
    (tmp_path / "mine.json").write_text(
        json.dumps(
            {
                "format": "deephemnma-groups",
                "version": 1,
                "groups": [
                    {
                        "name": "lasso",
                        "polygon": [[-1e4, -1e4], [1e4, -1e4], [0, 1e4]],
                        "axes": [0, 1],
                    },
                    {"name": "few", "indices": [0, 1, 79]},
                ],
            }
        )
    )
    out = tmp_path / "combined"
    code = main(
        [
            "analyze",
            str(pred),
            "--stage1",
            str(stage1),
            "-o",
            str(out),
            "--method",
            "bins",
            "--min-per-group",
            "20",
            "--group-file",
            str(tmp_path / "mine.json"),
            "--no-gif",
            "--no-plots",
            "--quiet",
        ]
    )
    assert code == 0
    space = load_space(out / "space.npz")
    assert space.n_particles == 80 and space.particles == "particles.star"
    assert space.source_names == ("predicted", "stage1")
    assert space.source.tolist() == [0] * 40 + [1] * 40
    assert np.isnan(space.score[:40]).all() and np.allclose(space.score[40:], np.linspace(0, 1, 40))
    combined = read_particles(out / "particles.star")
    assert len(combined) == 80
    assert combined.particles["deephemnmaSource"].tolist() == ["predicted"] * 40 + ["stage1"] * 40
    from deephemnma.io.mrc import ParticleImages

    with ParticleImages(combined) as images:  # the image paths still resolve
        assert images.images([0, 79]).shape == (2, 64, 64)
    groups = read_groups(out / "groups.json")
    resolved = groups.resolve(space.coords)
    bins = [n for n in groups.names() if n.startswith("pc1_bin")]
    assert len(bins) >= 2 and all(len(resolved[n]) >= 20 for n in bins)
    assert len(resolved["lasso"]) == 80 and resolved["few"].tolist() == [0, 1, 79]
    assert groups.get("lasso").polygon is not None  # kept as a polygon


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # the console wraps long lines


def test_analyze_bad_input_exits_2(sim, tmp_path, capsys):
    table = read_particles(sim / "particles.star")
    bare = table.particles.drop(columns=[c for c in table.particles if "Amplitude" in c])
    from dataclasses import replace

    star = write_particles(tmp_path / "bare.star", replace(table, particles=bare))
    assert main(["analyze", str(star), "-o", str(tmp_path / "o")]) == 2
    assert "no amplitude columns" in _err(capsys)
    assert main(["analyze", str(tmp_path / "missing.star"), "-o", str(tmp_path / "o")]) == 2
    assert "file not found" in _err(capsys)
    pred = _predicted(sim, tmp_path / "p")
    assert main(["analyze", str(pred), "-o", str(tmp_path / "o"), "--method", "spectral"]) == 2
    assert "method" in _err(capsys)
    code = main(
        [
            "analyze",
            str(pred),
            "-o",
            str(tmp_path / "o"),
            "--method",
            "bins",
            "--groups",
            "5",
            "--min-per-group",
            "30",
            "--quiet",
        ]
    )
    assert code == 2
    assert "cannot make 5 bins" in _err(capsys)
