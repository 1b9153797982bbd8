"""A synthetic project directory: what ``analyze`` writes, for tests and measurements.

Amplitudes of three normal modes are drawn as a curved band plus three clusters, reduced by
PCA, and written as ``analyze/space.npz`` (:mod:`deephemnma.explore.project`). The modes are
smooth displacement fields on the bundled adenylate kinase (``4ake_A.pdb``), so centroid
models and trajectories look like plausible motions. Optionally a particle STAR with one row
per point (no images) is written for the export.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deephemnma.groups import Group, GroupSet, write_groups
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.io.star import ParticleTable, make_optics, with_amplitudes, write_particles
from deephemnma.nma.modes import Modes, save_modes

MODE_NUMBERS = (7, 8, 9)


def smooth_modes(mode_numbers=MODE_NUMBERS) -> Modes:
    """Smooth, orthonormal displacement fields on 4AKE chain A standing in for normal modes."""
    structure = read_structure(package_data_path("4ake_A.pdb"))
    r = structure.coords_A - structure.coords_A.mean(0)
    r = r / np.abs(r).max()
    fields = [
        np.stack([np.sin(2 * r[:, 1]), np.cos(2 * r[:, 2]), r[:, 0]], axis=1),
        np.stack([r[:, 2], np.sin(3 * r[:, 0]), -r[:, 1]], axis=1),
        np.stack([np.cos(2 * r[:, 0]) * r[:, 1], r[:, 2] ** 2, np.sin(2 * r[:, 1])], axis=1),
    ][: len(mode_numbers)]
    matrix = np.stack([f.ravel() for f in fields], axis=1)
    q, _ = np.linalg.qr(matrix)  # orthonormal columns, unit norm over 3N
    vectors = q.T.reshape(len(mode_numbers), structure.n_atoms, 3)
    return Modes(
        structure=structure,
        mode_numbers=np.asarray(mode_numbers),
        eigenvalues=np.arange(1.0, len(mode_numbers) + 1),
        vectors=vectors,
        parameters={"method": "synthetic smooth fields (deephemnma.explore.synthetic)"},
    )


def sample_amplitudes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) amplitudes: 60 % along a helical band, 40 % in three clusters."""
    rng = np.random.default_rng(seed)
    n_band = int(0.6 * n)
    t = rng.uniform(0, 2 * np.pi, n_band)
    band = np.stack([120 * np.cos(t), 120 * np.sin(t), 40 * t - 125], axis=1)
    band += rng.normal(0, 12, band.shape)
    centers = np.array([[-60.0, -40.0, 80.0], [50.0, 70.0, -60.0], [0.0, -110.0, 10.0]])
    labels = rng.integers(0, 3, n - n_band)
    clusters = centers[labels] + rng.normal(0, 15, (n - n_band, 3))
    amplitudes = np.concatenate([band, clusters])
    return amplitudes[rng.permutation(n)]


def particle_table(amplitudes: np.ndarray, seed: int = 0) -> ParticleTable:
    """A RELION 3.1 table with one row per point (image names point at no real stack)."""
    rng = np.random.default_rng(seed)
    n = len(amplitudes)
    particles = pd.DataFrame(
        {
            "rlnImageName": [
                f"{i % 1000 + 1:06d}@stacks/chunk{i // 1000:04d}.mrcs" for i in range(n)
            ],
            "rlnOpticsGroup": np.ones(n, dtype=int),
            "rlnAngleRot": rng.uniform(-180, 180, n).round(3),
            "rlnAngleTilt": rng.uniform(0, 180, n).round(3),
            "rlnAnglePsi": rng.uniform(-180, 180, n).round(3),
            "rlnDefocusU": np.full(n, 5000.0),
            "rlnDefocusV": np.full(n, 5000.0),
            "rlnDefocusAngle": np.zeros(n),
        }
    )
    table = ParticleTable(make_optics(0.65, 128, 200.0, 2.0, 0.1), particles)
    return with_amplitudes(table, MODE_NUMBERS, amplitudes)


def write_space(
    path: str | os.PathLike,
    amplitudes: np.ndarray,
    mode_numbers,
    particles: str | None,
    truth: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write ``space.npz`` for ``amplitudes`` (N, M); the first 10 % are Stage 1 particles."""
    import dataclasses

    from deephemnma.analysis.pca import fit_space
    from deephemnma.analysis.space import save_space

    rng = np.random.default_rng(seed)
    n = len(amplitudes)
    source = np.ones(n, dtype=np.int8)
    source[: max(1, n // 10)] = 0
    space = fit_space(
        amplitudes, mode_numbers, source=source, source_names=("stage1", "predicted"),
        truth=truth, particles=particles,
    )  # fmt: skip
    distance = np.linalg.norm(space.coords, axis=1)
    score = (1 / (1 + distance / 100) + rng.normal(0, 0.05, n)).astype(np.float32)
    save_space(path, dataclasses.replace(space, score=score))
    return Path(path)


def write_project(
    root: str | os.PathLike,
    n: int = 10_000,
    seed: int = 0,
    particles: bool = True,
    modes: bool = True,
    groups: bool = True,
) -> Path:
    """Write a synthetic project of ``n`` particles under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed + 1)
    truth = sample_amplitudes(n, seed)
    amplitudes = truth + rng.normal(0, 8, truth.shape)
    star = None
    if particles:
        write_particles(root / "predict" / "particles.star", particle_table(amplitudes, seed))
        star = "../predict/particles.star"
    write_space(root / "analyze" / "space.npz", amplitudes, MODE_NUMBERS, star, truth, seed)
    if modes:
        save_modes(root / "nma" / "modes.npz", smooth_modes())
    if groups:
        first = Group("bin 1", indices=np.arange(0, n, 7), source="bins")
        write_groups(
            root / "analyze" / "groups.json",
            GroupSet((first,), n_particles=n, particles=star),
        )
    return root


# --------------------------------------------------------------------------------------------
# A stand-in for ``deephemnma reconstruct`` (same arguments, same outputs, no images read)


def standin_command(delay_s: float = 0.0, fail: bool = False):
    """A command factory for the explorer that runs :func:`standin_reconstruct`."""
    from deephemnma.explore.reconstruction import reconstruct_command

    def command(request) -> list[str]:
        args = reconstruct_command(request)[4:]  # after "python -m deephemnma reconstruct"
        extra = ["--delay", str(delay_s)] + (["--fail"] if fail else [])
        return [sys.executable, "-m", "deephemnma.explore.synthetic", *args, *extra]

    return command


def standin_reconstruct(argv: list[str]) -> int:
    """Parse reconstruct's arguments, check the group file, write plausible outputs.

    Writes OUT/<group folder>/ map.mrc, half1.mrc, half2.mrc (a Gaussian blob), fsc.csv,
    fsc.png, slices.png and summary.json, printing progress as it goes.
    """
    import argparse
    import json
    import time

    import matplotlib.image

    from deephemnma.groups import folder_name, read_groups
    from deephemnma.io.atomic import atomic_write_text
    from deephemnma.io.mrc import write_volume

    parser = argparse.ArgumentParser(prog="standin-reconstruct")
    parser.add_argument("particles")
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--groups", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--modes")
    parser.add_argument("--min-particles", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args(argv)
    indices = read_groups(args.groups).resolve()[args.group]
    for step in range(1, 5):
        print(f"reconstructing {len(indices)} particles: {25 * step}%", flush=True)
        time.sleep(args.delay / 4)
    if args.fail:
        print("error: the stand-in was told to fail", file=sys.stderr, flush=True)
        return 1
    folder = Path(args.out) / folder_name(args.group)
    n = args.size
    grid = np.arange(n) - n // 2
    r2 = grid[:, None, None] ** 2 + grid[None, :, None] ** 2 + (grid[None, None, :] / 1.5) ** 2
    volume = np.exp(-r2 / (2 * (n / 8) ** 2)).astype(np.float32)
    for name in ("map.mrc", "half1.mrc", "half2.mrc"):
        write_volume(folder / name, volume, 2.0)
    freq = np.linspace(0, 0.25, 33)[1:]
    fsc = 1 / (1 + np.exp((freq - 0.12) / 0.015))
    rows = "".join(f"{1 / f:.4f},{v:.5f}\n" for f, v in zip(freq, fsc, strict=True))
    atomic_write_text(folder / "fsc.csv", "resolution_A,fsc\n" + rows)
    slices = np.concatenate([volume[n // 2], volume[:, n // 2], volume[:, :, n // 2]], axis=1)
    matplotlib.image.imsave(folder / "slices.png", slices, cmap="gray")
    curve = np.zeros((40, len(freq)))
    for i, v in enumerate(fsc):
        curve[39 - int(v * 39) :, i] = 1
    matplotlib.image.imsave(folder / "fsc.png", curve, cmap="Blues")
    summary = {
        "n_particles": int(len(indices)),
        "resolution_fsc0143_A": float(1 / np.interp(-0.143, -fsc, freq)),
        "resolution_fsc05_A": float(1 / np.interp(-0.5, -fsc, freq)),
    }
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(standin_reconstruct(sys.argv[1:]))
