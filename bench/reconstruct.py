"""3D reconstruction: speed (1,000 images of 256² into a 256³ map) and the paper protocol's
group resolutions (§3.1.3).

    python bench/reconstruct.py [--speed] [--threads 1,2] [--repeats 2]
    python bench/reconstruct.py --groups-protocol [--per-group 1000] [--groups 10]
    python bench/reconstruct.py --groups-protocol --estimated [--workers 2]

``--speed`` (default) simulates 1,000 paper-ak images (256², 0.325 Å, CTF, SNR 0.1) once and
times ``reconstruct_group`` (half sets, half maps, FSC, Wiener map; pad 2) with each torch
thread count. ``--groups-protocol`` simulates ``groups × per-group`` paper-ak images, cuts the
helical trajectory into equal bins of its variable r (ground truth), reconstructs each bin with
the ground-truth poses through ``deephemnma reconstruct`` and reports the FSC against the
bin's centroid-model map (paper: ≤ 3.8 Å at 0.5 and ≤ 3.2 Å at 0.143 on average).
``--estimated`` does the same with *estimated* parameters: the images are phase flipped and
downsampled to 128² (0.65 Å), aligned by Stage 1 (``deephemnma align``; with a trained
network, hybrid inference reaches the same accuracy), and the original 256² images are
reconstructed with the 128²-estimated poses (shifts in Å) and amplitudes (for the centroid
models); the groups are the same bins, so only the parameters differ.

Writes bench/results/reconstruct.json (speed) or reconstruct_groups.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import RESULTS, machine, report, timed  # noqa: E402
from deephemnma.cli.main import main as cli  # noqa: E402


def simulate(folder: Path, n: int, seed: int) -> Path:
    star = folder / "particles.star"
    if not star.exists():
        code = cli(["simulate", "-n", str(n), "--seed", str(seed), "-o", str(folder), "--quiet"])
        assert code == 0
    return star


def speed(args) -> None:
    from deephemnma.io.star import read_particles
    from deephemnma.reconstruct import ReconstructionSettings, particle_data, reconstruct_group

    star = (
        Path(args.star) if args.star else simulate(Path(args.out) / "sim_speed", args.n, args.seed)
    )
    data = particle_data(read_particles(star))
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for repeat in range(args.repeats):
            record = {"threads": threads, "repeat": repeat + 1, "images": args.n}
            settings = ReconstructionSettings(pad=args.pad, batch_size=args.batch_size)
            with timed(record):
                result = reconstruct_group(data, np.arange(args.n), settings, progress=False)
            record.update({f"{k}_s": v for k, v in result.timing_s.items()})
            record["box"] = int(result.map.shape[0])
            record["pad"] = args.pad
            record["fsc0143_A"] = round(result.fsc_half.resolution_A(0.143), 3)
            rows.append(record)
            print(json.dumps(record))
    columns = [
        "threads",
        "repeat",
        "images",
        "box",
        "pad",
        "wall_s",
        "cpu_s",
        "read_s",
        "insert_s",
        "maps_and_fsc_s",
        "fsc0143_A",
    ]
    report("reconstruct", rows, columns)


def estimate(folder: Path, star: Path, workers: int, record: dict) -> Path:
    """Stage-1 estimates of every particle at 128² (resumable)."""
    pre, aligned = folder / "pre128", folder / "align128"
    if not (pre / "particles.star").exists():
        command = ["preprocess", str(star), "--size", "128", "-o", str(pre), "--quiet"]
        assert cli(command) == 0
    stage1: dict = {}
    with timed(stage1):
        command = ["align", "--particles", str(pre / "particles.star"), "--modes"]
        command += [str(folder / "sim_groups" / "modes.npz"), "--reference"]
        command += [str(folder / "sim_groups" / "reference.pdb"), "-o", str(aligned)]
        assert cli([*command, "--workers", str(workers), "--quiet"]) == 0
    record["stage1"] = stage1
    return aligned / "particles.star"


def groups_protocol(args) -> None:
    from deephemnma.groups import from_labels, write_groups
    from deephemnma.io.star import column, read_particles

    n = args.groups * args.per_group
    folder = Path(args.out)
    star = simulate(folder / "sim_groups", n, args.seed)
    table = read_particles(star)
    r = np.asarray(column(table, "deephemnmaTrajectoryR"), dtype=float)
    # Equal-count bins along the helix (its variable r, ground truth): ≥ per_group each.
    order = np.argsort(r, kind="stable")
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) * args.groups // n
    groups_file = folder / "groups.json"
    write_groups(groups_file, from_labels(labels, "helix", "bins"))
    out = folder / "reconstruct"
    record: dict = {"images": n, "groups": args.groups, "per_group": args.per_group}
    poses, extra = star, []
    if args.estimated:
        poses = estimate(folder, star, args.workers, record)
        out = folder / "reconstruct_estimated"
        extra = ["--images", str(star)]
    with timed(record):
        code = cli(
            [
                "reconstruct",
                str(poses),
                *extra,
                "-o",
                str(out),
                "--groups",
                str(groups_file),
                "--modes",
                str(folder / "sim_groups" / "modes.npz"),
                "--min-particles",
                "100",
                "--pad",
                str(args.pad),
                "--quiet",
            ]
        )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = []
    for g in summary["groups"]:
        rows.append(
            {
                "group": g["name"],
                "n": g["n_particles"],
                "half_0143_A": g["resolution_fsc0143_A"],
                "half_05_A": g["resolution_fsc05_A"],
                "model_0143_A": g["resolution_model_fsc0143_A"],
                "model_05_A": g["resolution_model_fsc05_A"],
                "time_s": g["timing_s"]["reconstruction"],
            }
        )
    mean = {k: float(np.mean([row[k] for row in rows])) for k in rows[0] if k.endswith("_A")}
    rows.append({"group": "mean", "n": n, **{k: round(v, 3) for k, v in mean.items()}})
    rows.append({"group": "paper", "model_0143_A": 3.2, "model_05_A": 3.8})
    record["mean"] = mean
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "reconstruct_groups_estimated" if args.estimated else "reconstruct_groups"
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"machine": machine(), **record, "rows": rows}, indent=2)
    )
    report(
        f"{name}_table",
        rows,
        ["group", "n", "half_0143_A", "half_05_A", "model_0143_A", "model_05_A", "time_s"],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups-protocol", action="store_true")
    parser.add_argument("--estimated", action="store_true", help="Stage-1 estimated parameters")
    parser.add_argument("--workers", type=int, default=2, help="Stage 1 workers (--estimated)")
    parser.add_argument("--n", type=int, default=1000, help="images for --speed")
    parser.add_argument("--star", help="time on the first --n particles of this STAR instead")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--per-group", type=int, default=1000)
    parser.add_argument("--pad", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "reconstruct"))
    args = parser.parse_args()
    if args.groups_protocol:
        groups_protocol(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
