"""Stage 3 analysis at scale: PCA, the four automatic groupers and the figures on
1,000,000 synthetic amplitude rows (the paper's helix in modes 7–9 plus noise).

    python bench/analyze.py [--n 1000000]

Writes bench/results/analyze.json and prints the seconds per step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

from common import report  # noqa: E402
from deephemnma.analysis import (  # noqa: E402
    axis_bins,
    density_peak_groups,
    figures,  # noqa: E402
    fit_space,
    gmm_groups,
    kmeans_groups,
    save_space,
)


def helix_amplitudes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 1, n)
    helix = np.stack([-200 * r, 200 * np.sin(np.pi * r), 200 * np.cos(np.pi * r)], 1)
    return helix + rng.normal(0, 8, (n, 3))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    amps = helix_amplitudes(args.n)
    rows = []

    def step(name, fn):
        start = time.perf_counter()
        value = fn()
        rows.append({"step": name, "points": args.n, "seconds": time.perf_counter() - start})
        return value

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        space = step("PCA", lambda: fit_space(amps, [7, 8, 9]))
        step("save space.npz", lambda: save_space(out / "space.npz", space))
        groupers = {
            "k-means K=10": lambda: kmeans_groups(space.coords, 10),
            "Gaussian mixture K=10": lambda: gmm_groups(space.coords, 10),
            "density peaks K=10": lambda: density_peak_groups(space.coords, 10),
            "PC1 bins 7 × ≥ 900": lambda: axis_bins(space.coords, 7, 900),
        }
        resolved = None
        for name, fn in groupers.items():
            resolved = step(name, lambda fn=fn: fn().resolve(space.coords))
        ratio = space.explained_variance_ratio
        step(
            "density figure",
            lambda: figures.density_figure(
                space.coords, out / "d.png", space.source, space.source_names, ratio
            ),
        )
        step("3D figure", lambda: figures.scatter_3d_figure(space.coords, out / "s.png"))
        step("groups figure", lambda: figures.groups_figure(space.coords, resolved, out / "g.png"))
    report("analyze", rows, ["step", "points", "seconds"])


if __name__ == "__main__":
    main()
