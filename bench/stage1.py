"""Stage 1 on the paper protocol: simulate paper-ak (256², 0.325 Å, SNR 0.1, CTF), phase
flip and downsample to 128² at 0.65 Å, align, evaluate against the ground truth.

    python bench/stage1.py [--n 500] [--workers 2] [--out bench/results/stage1]

Writes bench/results/stage1.json and prints the paper-style table with the paper's HEMNMA
row (Table 1: 6.6 amplitude MAE, 1.0° ± 0.9, 0.2 Å). Cost is CPU-seconds per image: wall
time × worker processes, the library build and process start-up included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from rich.console import Console  # noqa: E402

from common import RESULTS, machine, timed  # noqa: E402
from deephemnma.cli.main import main as cli  # noqa: E402
from deephemnma.evaluate import PAPER_ROWS, evaluate, format_table  # noqa: E402
from deephemnma.io.star import read_particles  # noqa: E402


def run(args) -> dict:
    out = Path(args.out)
    sim, pre, aligned = out / "sim", out / "pre", out / "align"
    if not (sim / "particles.star").exists():
        assert (
            cli(
                ["simulate", "-n", str(args.n), "--seed", str(args.seed), "-o", str(sim), "--quiet"]
            )
            == 0
        )
    if not (pre / "particles.star").exists():
        assert (
            cli(
                [
                    "preprocess",
                    str(sim / "particles.star"),
                    "--size",
                    "128",
                    "-o",
                    str(pre),
                    "--quiet",
                ]
            )
            == 0
        )
    record: dict = {"images": args.n, "workers": args.workers, "settings": args.align_args}
    start = time.time()
    with timed(record):
        code = cli(
            [
                "align",
                "--particles",
                str(pre / "particles.star"),
                "--modes",
                str(sim / "modes.npz"),
                "--reference",
                str(sim / "reference.pdb"),
                "-o",
                str(aligned),
                "--workers",
                str(args.workers),
                "--quiet",
                *args.align_args.split(),
            ]
        )
    assert code == 0
    record["cpu_s_per_image"] = record["wall_s"] * args.workers / args.n
    record["images_per_s"] = args.n / (time.time() - start)
    from deephemnma.nma.modes import load_modes

    result = evaluate(
        read_particles(aligned / "particles.star"),
        read_particles(sim / "particles.star"),
        load_modes(sim / "modes.npz"),
        label=f"deephemnma Stage 1 vs truth ({args.n} images)",
    )
    record["evaluation"] = result
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "stage1"))
    parser.add_argument("--align-args", default="", help="extra 'deephemnma align' options")
    args = parser.parse_args()
    record = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stage1.json").write_text(json.dumps({"machine": machine(), **record}, indent=2))
    paper = [PAPER_ROWS["table1_hemnma_truth"]]
    Console(width=200).print(
        format_table(record["evaluation"], "Stage 1 (paper protocol)", paper_rows=paper)
    )
    Console().print(
        f"cost: {record['cpu_s_per_image']:.2f} CPU-s per image "
        f"({args.workers} workers, wall {record['wall_s']:.0f} s; paper HEMNMA "
        f"≈ 230 CPU-s), {record['images_per_s']:.2f} images/s"
    )


if __name__ == "__main__":
    main()
