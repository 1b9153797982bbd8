"""`deephemnma export`: groups → RELION / cryoSPARC STAR pointing at the original images."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import starfile

from deephemnma.cli.main import main
from deephemnma.groups import Group, GroupSet, write_groups
from deephemnma.io.star import (
    ANGLES,
    parse_image_name,
    read_particles,
    with_columns,
    write_particles,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    code = main(
        [
            "simulate",
            "--preset",
            "paper-ak",
            "-n",
            "30",
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


def _small_copy(sim: Path, folder: Path) -> Path:
    """What preprocess would make: same rows, half-size images at twice the pixel size
    (here the stacks do not exist) and new angles (as an estimate would have)."""
    table = read_particles(sim / "particles.star")
    optics = table.optics.copy()
    optics["rlnImagePixelSize"] = 2.6
    optics["rlnImageSize"] = 32
    optics["rlnCtfDataArePhaseFlipped"] = 1
    particles = table.particles.copy()
    particles["rlnImageName"] = [f"{i + 1:06d}@stacks/small.mrcs" for i in range(len(table))]
    table = replace(table, optics=optics, particles=particles)
    table = with_columns(table, {"rlnAngleRot": np.arange(len(table), dtype=float)})
    folder.mkdir(parents=True, exist_ok=True)
    return write_particles(folder / "small.star", table)


def _groups(path: Path, n: int) -> Path:
    groups = GroupSet(
        (
            Group("low end", indices=np.array([0, 3, 5]), source="bins"),
            Group("high", indices=np.arange(10, 20), source="bins"),
        ),
        n_particles=n,
    )
    return write_groups(path, groups)


def _existing(star: Path, name: str) -> Path:
    stack = Path(parse_image_name(name)[1])
    return stack if stack.is_absolute() else star.parent / stack


def test_export_relion_with_original_images(sim, tmp_path):
    small = _small_copy(sim, tmp_path / "pre")
    groups = _groups(tmp_path / "groups.json", 30)
    out = tmp_path / "export"
    code = main(
        [
            "export",
            str(small),
            "--groups",
            str(groups),
            "--images",
            str(sim / "particles.star"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    star = out / "low_end.star"
    blocks = starfile.read(star, always_dict=True)  # plain starfile reads it
    optics, particles = blocks["optics"], blocks["particles"]
    assert len(particles) == 3 and set(particles["deephemnmaGroup"]) == {"low end"}
    # Original full-size images: their pixel size and box, and stacks that exist.
    assert float(optics["rlnImagePixelSize"].iloc[0]) == 1.3
    assert int(optics["rlnImageSize"].iloc[0]) == 64
    assert int(optics["rlnCtfDataArePhaseFlipped"].iloc[0]) == 0
    original = read_particles(sim / "particles.star")
    for row, name in zip([0, 3, 5], particles["rlnImageName"], strict=True):
        assert _existing(star, name).resolve().is_file()
        assert (
            parse_image_name(name)[0]
            == parse_image_name(original.particles["rlnImageName"][row])[0]
        )
    # Poses from the analyzed table, amplitudes and CTF carried.
    assert particles["rlnAngleRot"].tolist() == [0.0, 3.0, 5.0]
    for label in ("rlnOriginXAngst", "deephemnmaAmplitude07", "rlnDefocusU", *ANGLES):
        assert label in particles.columns
    assert np.allclose(
        particles["rlnOriginXAngst"], original.particles["rlnOriginXAngst"][[0, 3, 5]]
    )
    summary = json.loads((out / "export.json").read_text())
    assert summary["groups"] == {
        "low end": {"file": "low_end.star", "n": 3},
        "high": {"file": "high.star", "n": 10},
    }
    assert all(Path(s).is_file() for s in summary["stacks"])


def test_export_cryosparc_variant(sim, tmp_path):
    groups = _groups(tmp_path / "groups.json", 30)
    out = tmp_path / "cs"
    code = main(
        [
            "export",
            str(sim / "particles.star"),
            "--groups",
            str(groups),
            "--group",
            "high",
            "--format",
            "cryosparc",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.glob("*.star")) == ["high.star"]
    text = (out / "high.star").read_text()
    assert "data_optics" not in text  # a RELION 3.0 single table
    df = starfile.read(out / "high.star")
    assert len(df) == 10
    assert all(Path(parse_image_name(n)[1]).is_absolute() for n in df["rlnImageName"])
    assert all(Path(parse_image_name(n)[1]).is_file() for n in df["rlnImageName"])
    original = read_particles(sim / "particles.star")
    rows = np.arange(10, 20)
    assert np.allclose(df["rlnOriginX"], original.particles["rlnOriginXAngst"][rows] / 1.3)
    assert np.allclose(1e4 * df["rlnDetectorPixelSize"] / df["rlnMagnification"], 1.3)
    for label in (
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnDefocusU",
        "deephemnmaAmplitude08",
        *ANGLES,
    ):
        assert label in df.columns
    # Our reader (RELION 3.0 path) reads it back to the same poses in Å.
    back = read_particles(out / "high.star")
    assert np.allclose(
        back.particles["rlnOriginXAngst"], original.particles["rlnOriginXAngst"][rows]
    )
    assert float(back.optics["rlnImagePixelSize"].iloc[0]) == pytest.approx(1.3)


def test_export_indices_and_polygon_groups(sim, tmp_path):
    from deephemnma.analysis import fit_space, save_space
    from deephemnma.io.star import amplitudes

    table = read_particles(sim / "particles.star")
    modes, values = amplitudes(table)
    space = fit_space(values, modes, particles="particles.star")
    save_space(tmp_path / "space.npz", space)
    groups = GroupSet(
        (Group("right", polygon=np.array([[0, -1e4], [1e4, -1e4], [1e4, 1e4], [0, 1e4]])),),
        n_particles=30,
    )
    write_groups(tmp_path / "groups.json", groups)
    (tmp_path / "picked.txt").write_text("2\n4\n6\n")
    out = tmp_path / "export"
    code = main(
        [
            "export",
            str(sim / "particles.star"),
            "--groups",
            str(tmp_path / "groups.json"),
            "--indices",
            str(tmp_path / "picked.txt"),
            "--absolute-paths",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    right = starfile.read(out / "right.star")["particles"]
    assert len(right) == int((space.coords[:, 0] >= 0).sum())
    picked = starfile.read(out / "picked.star")["particles"]
    assert len(picked) == 3 and set(picked["deephemnmaGroup"]) == {"picked"}
    assert all(Path(parse_image_name(n)[1]).is_file() for n in picked["rlnImageName"])


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_export_bad_input_exits_2(sim, tmp_path, capsys):
    star = str(sim / "particles.star")
    groups = str(_groups(tmp_path / "groups.json", 30))
    out = str(tmp_path / "o")
    assert main(["export", star, "-o", out]) == 2
    assert "nothing to export" in _err(capsys)
    assert main(["export", star, "--groups", groups, "--group", "nope", "-o", out]) == 2
    assert "no such group" in _err(capsys)
    assert main(["export", star, "--groups", groups, "--format", "eman", "-o", out]) == 2
    assert "unknown export format" in _err(capsys)
    wrong = str(_groups(tmp_path / "wrong.json", 99))
    assert main(["export", star, "--groups", wrong, "-o", out]) == 2
    assert "another number of particles" in _err(capsys)
    # --images with a different number of rows.
    table = read_particles(star)
    few = write_particles(tmp_path / "few.star", replace(table, particles=table.particles[:10]))
    assert main(["export", star, "--groups", groups, "--images", str(few), "-o", out]) == 2
    assert "different number of particles" in _err(capsys)
