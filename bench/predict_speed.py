"""`deephemnma predict` end to end, as a user runs it: images/s from reading the STAR to
writing it, for each reader.

    python bench/predict_speed.py --device cuda --n 200000       # issue 6: >= 20,000 on an H100
    python bench/predict_speed.py --device cpu --n 4000 --runs threads:-1

Simulates ``--stack`` paper-ak images at ``--size``² (0.65 Å at 128², the paper's network
input) on ``--device``, trains a network for one epoch on 300 of them (the weights do not
change the speed), and writes a STAR of ``--n`` rows that go through the stack again and
again, so the page cache holds it, as on a second pass over a real data set. Then runs the
``deephemnma predict`` command once per ``--runs`` entry (``READER:WORKERS[:BATCH]``; -1:
predict's default workers; the batch defaults to ``--batch-size``) with the default chunks,
each in a fresh process, and records its wall time, its peak resident memory, and the rate
and time split its closing line reports (set-up, images, STAR). Each run's predictions are
compared with the first run's (``max_angle_deg``: the largest geodesic angle between the two
orientations of a particle; ``max_shift_A``, ``max_amp``): the readers and batch sizes take
different paths to the same images, so a reader that hands the network a wrong or half-copied
batch shows up here as tens of degrees, where bf16 rounding gives a fraction of one. Writes
``bench/results/predict_speed.json`` (``--tag``: ``predict_speed_TAG.json``) and prints a
table. ``--work`` keeps the data for a rerun.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from common import RESULTS, machine, report
from deephemnma.io.star import read_particles, select, write_particles

CLOSING = {
    "images_per_s": r"\(([\d,.]+)\s+images/s",
    "setup_s": r"set-up\s+([\d.]+)",
    "images_s": r"images\s+([\d.]+)\s+s",
    "star_s": r"STAR\s+([\d.]+)",
}


def deephemnma_rss(args: list[str], cwd: Path, check: bool = True) -> tuple[float, str, int, float]:
    """Run the CLI in a fresh process: (wall seconds, output, exit code, the process's peak
    resident memory in MB); with ``check``, exits on failure."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "deephemnma", *args], cwd=cwd, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    output = child.stdout.read()
    # wait4 reports this child's own peak, where RUSAGE_CHILDREN would give the largest of all.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if check and code != 0:
        raise SystemExit(f"deephemnma {' '.join(args)} failed:\n{output}")
    return wall, output, code, usage.ru_maxrss / 1024


def deephemnma(args: list[str], cwd: Path, check: bool = True) -> tuple[float, str, int]:
    """As :func:`deephemnma_rss`, without the memory."""
    return deephemnma_rss(args, cwd, check)[:3]


def closing_numbers(output: str) -> dict:
    """The rate and the time split of predict's closing line (which rich may wrap)."""
    line = re.search(r"predicted \d+ particles in [^)]*\)", output)
    if line is None:
        return {}
    found = {k: re.search(p, line.group(0)) for k, p in CLOSING.items()}
    return {k: float(m.group(1).replace(",", "")) for k, m in found.items() if m}


def stack_and_network(work: Path, stack: int, size: int, device: str):
    """``stack`` paper-ak images of ``size``² simulated in ``work/sim`` (0.65 Å at 128²) and
    a network trained for one epoch on 300 of them in ``work/run``; reused when present.
    Returns the simulation's ParticleTable."""
    if not (work / "sim" / "particles.star").exists():
        deephemnma(["simulate", "-n", str(stack), "--image-size", str(size),
                    "--pixel-size", f"{0.65 * 128 / size:.6g}", "--device",
                    device, "-o", "sim", "--quiet"], work)  # fmt: skip
    table = read_particles(work / "sim" / "particles.star")
    if not (work / "run" / "best.pt").exists():
        write_particles(work / "train.star", select(table, range(min(300, len(table)))))
        deephemnma(["train", "--labels", "train.star", "-o", "run", "--epochs", "1",
                    "--val", "50", "--test", "50", "--batch-size", "50", "--device",
                    device, "--quiet"], work)  # fmt: skip
    return table


def prepare(work: Path, args) -> Path:
    """The simulated stack, a network trained on it, and the ``--n``-row STAR."""
    big = work / f"rows_{args.n}.star"
    table = stack_and_network(work, args.stack, args.size, args.device)
    if not big.exists():
        repeat = -(-args.n // len(table))
        rows = pd.concat([table.particles] * repeat, ignore_index=True).iloc[: args.n]
        write_particles(big, replace(table, particles=rows.reset_index(drop=True)))
    return big


def disagreement(a: Path, b: Path) -> dict:
    """The largest differences between the predictions of two STAR files of the same rows."""
    from deephemnma.geometry import euler_to_matrix, geodesic_distance_deg
    from deephemnma.io.star import amplitudes, angles_deg, shifts_A

    ta, tb = read_particles(a), read_particles(b)
    ma, mb = (euler_to_matrix(torch.from_numpy(angles_deg(t))) for t in (ta, tb))
    return {
        "max_angle_deg": round(float(geodesic_distance_deg(ma, mb).max()), 3),
        "max_shift_A": round(float(abs(shifts_A(ta) - shifts_A(tb)).max()), 4),
        "max_amp": round(float(abs(amplitudes(ta)[1] - amplitudes(tb)[1]).max()), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200000, help="particle rows to predict")
    p.add_argument("--stack", type=int, default=10000, help="distinct images simulated")
    p.add_argument("--size", type=int, default=128, help="image size, pixels")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: 1024 GPU, 256 CPU")
    p.add_argument("--runs", default="threads:-1,processes:-1,threads:8,threads:-1:256",
                   help="READER:WORKERS[:BATCH] per predict run")  # fmt: skip
    p.add_argument("--work", default=None, help="data folder (default: a temporary one)")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    batch = args.batch_size or (1024 if args.device.startswith("cuda") else 256)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        star = prepare(work, args)
        print(f"data and network ready in {time.perf_counter() - t:.0f} s", flush=True)
        rows, first = [], None
        for k, run in enumerate(args.runs.split(",")):
            reader, workers, *size = run.split(":")
            run_batch = int(size[0]) if size else batch
            out = f"out_{k}.star"
            wall, output, code, rss_MB = deephemnma_rss(
                ["predict", "--particles", star.name, "--checkpoint", "run", "-o", out,
                 "--device", args.device, "--batch-size", str(run_batch), "--workers", workers,
                 "--reader", reader, "--quiet"], work, check=False)  # fmt: skip
            row = {"reader": reader, "workers": workers, "batch": run_batch, "n": args.n,
                   "wall_s": round(wall, 2), "images_per_s_wall": round(args.n / wall),
                   "peak_rss_MB": round(rss_MB)}  # fmt: skip
            row.update(closing_numbers(output) if code == 0 else {"failed": output[-2000:]})
            if code == 0:
                first = first or work / out
                row.update(disagreement(first, work / out))
            rows.append(row)
            print(row, flush=True)
    name = "predict_speed" + (f"_{args.tag}" if args.tag else "")
    report(name, rows, ["reader", "workers", "batch", "n", "images_per_s", "setup_s", "images_s",
                        "star_s", "wall_s", "images_per_s_wall", "peak_rss_MB",
                        "max_angle_deg", "max_shift_A", "max_amp"])  # fmt: skip
    print(f"device: {torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}"
          f"; results: {RESULTS / (name + '.json')}; {machine()['cpu_count']} CPUs")  # fmt: skip


if __name__ == "__main__":
    main()
