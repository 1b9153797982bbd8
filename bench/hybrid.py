"""Hybrid inference on the paper protocol: network-like starts → refinement, vs Stage 1.

    python bench/hybrid.py [--n 300] [--checkpoint CKPT] [--stage1] [--out DIR]

Simulates paper-ak particles (256², 0.325 Å, SNR 0.1, CTF), phase flips and downsamples to
128² at 0.65 Å, then refines starting estimates with ``deephemnma refine`` (one worker, one
thread) and scores everything against the ground truth. The starts are the predictions of a
trained network when ``--checkpoint`` is given (``deephemnma predict``); otherwise a
*surrogate* of the paper's network: the truth perturbed with the error sizes of the paper's
Table 3 (angles: isotropic random rotation, mean 2.6°; amplitudes: Gaussian with MAE 7.8;
shifts: Gaussian with MAE 0.2 Å) plus ``--gross`` fraction of uniformly random orientations
(what a network gets badly wrong). ``--stage1`` also runs Stage 1 on the same images.
Writes bench/results/hybrid.json and prints the accuracy/cost table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from common import RESULTS, machine, timed  # noqa: E402
from deephemnma.cli.main import main as cli  # noqa: E402
from deephemnma.evaluate import PAPER_ROWS, evaluate, format_table  # noqa: E402
from deephemnma.io.star import (  # noqa: E402
    amplitudes,
    angles_deg,
    read_particles,
    shifts_A,
    with_amplitudes,
    with_poses,
    write_particles,
)


def surrogate_starts(truth_star: Path, out: Path, seed: int, gross: float) -> Path:
    """The truth perturbed with the paper network's error sizes (Table 3)."""
    from deephemnma.align.similarity import rodrigues
    from deephemnma.geometry import euler_to_matrix, matrix_to_euler, random_euler_uniform

    truth = read_particles(truth_star)
    n = len(truth)
    rng = np.random.default_rng(seed)
    # Isotropic Gaussian rotation vector: mean angle = σ · 2·sqrt(2/π).
    sigma = math.radians(2.6) / (2 * math.sqrt(2 / math.pi))
    turns = rodrigues(torch.as_tensor(rng.normal(scale=sigma, size=(n, 3))))
    matrices = turns @ euler_to_matrix(torch.as_tensor(angles_deg(truth)))
    angles = matrix_to_euler(matrices).numpy()
    wrong = rng.random(n) < gross
    if wrong.any():
        generator = torch.Generator().manual_seed(seed + 1)
        angles[wrong] = random_euler_uniform(int(wrong.sum()), generator).numpy()
    numbers, amps = amplitudes(truth)
    amps = amps + rng.normal(scale=7.8 * math.sqrt(math.pi / 2), size=amps.shape)
    shifts = shifts_A(truth) + rng.normal(scale=0.2 * math.sqrt(math.pi / 2), size=(n, 2))
    table = with_amplitudes(with_poses(truth, angles, shifts), numbers, amps)
    write_particles(out, table)
    return out


def _simulate(args, sim: Path, pre: Path) -> None:
    if not (sim / "particles.star").exists():
        command = ["simulate", "-n", str(args.n), "--seed", str(args.seed), "-o", str(sim)]
        assert cli([*command, "--quiet"]) == 0
    if not (pre / "particles.star").exists():
        command = ["preprocess", str(sim / "particles.star"), "--size", "128", "-o", str(pre)]
        assert cli([*command, "--quiet"]) == 0


def _starts(args, out: Path, pre: Path) -> tuple[Path, dict]:
    record: dict = {}
    if args.checkpoint:
        path = out / "network.star"
        with timed(record):
            command = ["predict", "--particles", str(pre / "particles.star")]
            command += ["--checkpoint", args.checkpoint, "-o", str(path), "--threads", "1"]
            assert cli([*command, "--quiet"]) == 0
        record["source"] = f"network {args.checkpoint}"
        return path, record
    path = surrogate_starts(pre / "particles.star", out / "surrogate.star", args.seed, args.gross)
    record.update(
        source="surrogate of the paper's network (Table 3 error sizes)", wall_s=0.0, cpu_s=0.0
    )
    return path, record


def run(args) -> dict:
    torch.set_num_threads(1)
    out = Path(args.out)
    sim, pre = out / "sim", out / "pre"
    _simulate(args, sim, pre)
    common = ["--modes", str(sim / "modes.npz"), "--reference", str(sim / "reference.pdb")]
    starts, start_record = _starts(args, out, pre)
    record: dict = {"images": args.n, "gross": args.gross, "start": start_record, "rows": {}}
    refined = out / "refine"
    timing: dict = {}
    with timed(timing):
        command = ["refine", "--particles", str(starts), *common, "-o", str(refined)]
        assert cli([*command, "--workers", "1", "--quiet", *args.refine_args.split()]) == 0
    record["refine_timing"] = timing
    stage1_timing: dict = {}
    if args.stage1:
        with timed(stage1_timing):
            command = ["align", "--particles", str(pre / "particles.star"), *common]
            assert cli([*command, "-o", str(out / "stage1"), "--workers", "1", "--quiet"]) == 0
    from deephemnma.nma.modes import load_modes

    truth = read_particles(sim / "particles.star")
    modes = load_modes(sim / "modes.npz")
    n = args.n
    rows = [
        ("start (network)", starts, start_record.get("wall_s", 0.0)),
        ("start + refinement", refined / "particles.star", timing["wall_s"]),
    ]
    if args.stage1:
        rows.append(("Stage 1 alone", out / "stage1" / "particles.star", stage1_timing["wall_s"]))
    results = []
    for label, path, wall in rows:
        result = evaluate(read_particles(path), truth, modes, label=label)
        if label == "start + refinement":
            wall += start_record.get("wall_s", 0.0)
        result["cpu_s_per_image"] = wall / n  # one worker, one thread
        results.append(result)
        record["rows"][label] = result
    summary = json.loads((refined / "summary.json").read_text())
    record["refine_summary"] = summary
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--gross", type=float, default=0.01)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--stage1", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "hybrid"))
    parser.add_argument("--refine-args", default="", help="extra 'deephemnma refine' options")
    args = parser.parse_args()
    started = time.time()
    record = run(args)
    record["total_wall_s"] = time.time() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hybrid.json").write_text(json.dumps({"machine": machine(), **record}, indent=2))
    results = list(record["rows"].values())
    paper = [PAPER_ROWS["table3"], PAPER_ROWS["table1_hemnma_truth"]]
    Console(width=200).print(format_table(results, "Hybrid inference (paper protocol)", paper))
    for r in results:
        Console().print(f"{r['label']}: {r['cpu_s_per_image']:.3f} CPU-s per image")
    Console().print(f"refinement: {record['refine_summary']}")


if __name__ == "__main__":
    main()
