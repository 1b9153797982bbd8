"""Simulation and preprocessing throughput (issue 3 goals on a 2-core CPU: simulate the
70,000-image paper dataset in ≤ 30 min, i.e. ≥ 40 img/s at 256² with 1,656 atoms;
preprocess ≥ 1,000 img/s).

    python bench/bench_foundation.py [--n 400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import report, timed  # noqa: E402
from deephemnma import simulate as sim  # noqa: E402
from deephemnma.preprocess import PreprocessConfig, preprocess_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400, help="images to simulate")
    args = parser.parse_args()
    structure, modes = sim.paper_ak_reference()
    config = sim.paper_ak_config(n_images=args.n, chunk_size=200)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        record = {"step": "simulate paper-ak 256²", "images": args.n, "atoms": structure.n_atoms}
        with timed(record):
            star = sim.simulate_dataset(structure, modes, config, Path(tmp) / "sim", progress=False)
        rows.append(record)
        record = {"step": "preprocess 256²→128²", "images": args.n}
        with timed(record):
            preprocess_dataset(
                star, Path(tmp) / "pre", PreprocessConfig(out_size=128), progress=False
            )
        rows.append(record)
    for row in rows:
        row["img_per_s"] = row["images"] / row["wall_s"]
        row["cpu_s_per_img"] = row["cpu_s"] / row["images"]
    rows[0]["paper_70k_min"] = 70_000 / rows[0]["img_per_s"] / 60
    report(
        "foundation",
        rows,
        ["step", "images", "wall_s", "cpu_s", "img_per_s", "cpu_s_per_img", "paper_70k_min"],
    )


if __name__ == "__main__":
    main()
