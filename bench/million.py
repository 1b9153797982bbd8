"""A million particles through the commands that run on all of them: predict → evaluate →
analyze → export → reconstruct, each in a fresh process, with its wall time and its peak
resident memory.

    python bench/million.py [--n 1000000] [--size 32] [--stack 2000] [--device cpu] [--work DIR]

``--stack`` paper-ak images are simulated at ``--size``² (0.65 Å at 128²; 32² keeps the
network's share of a CPU run to minutes) and a network is trained for one epoch on 300 of
them: its accuracy is not the point here, speed and memory are. The ``--n`` rows go through
the stack again and again, each pass under other file names (hard links: ``evaluate`` matches
images by their resolved paths, which symbolic links would merge), so that every row names a
distinct image, as in a real data set spread over many stacks (1,000 for the defaults:
``simulate`` writes 1,000 images a stack), and the simulation's ground truth is every row's
truth. Writes ``bench/results/million[_TAG].json`` and a table.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, report  # noqa: E402
from deephemnma.io.star import IMAGE_NAME, write_particles  # noqa: E402
from predict_speed import deephemnma_rss, stack_and_network  # noqa: E402


def rows_star(work: Path, table, n: int) -> Path:
    """``n`` rows over the simulated stacks, pass ``k`` under ``copies/cK/`` (hard links to
    the stacks of ``sim/stacks``): distinct image names, the same images."""
    path = work / f"million_{n}.star"
    if path.exists():
        return path
    names = table.particles[IMAGE_NAME].astype(str)
    if not names.str.contains("@stacks/", regex=False).all():
        raise SystemExit("unexpected image names in the simulation's STAR")
    passes = -(-n // len(table))
    (work / "copies").mkdir(exist_ok=True)
    parts = []
    stacks = sorted((work / "sim" / "stacks").glob("*.mrcs"))
    for k in range(passes):
        folder = work / "copies" / f"c{k:05d}"
        folder.mkdir(exist_ok=True)
        for stack in stacks:
            if not (folder / stack.name).exists():
                os.link(stack, folder / stack.name)
        rows = table.particles.copy()
        rows[IMAGE_NAME] = names.str.replace("@stacks/", f"@copies/c{k:05d}/", regex=False)
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True).iloc[:n].reset_index(drop=True)
    write_particles(path, replace(table, particles=rows, path=path), relocate_images=False)
    return path


def steps(star: str, device: str) -> list[tuple[str, list[str]]]:
    return [
        ("predict", ["predict", "--particles", star, "--checkpoint", "run", "-o", "pred.star",
                     "--device", device, "--quiet"]),
        ("evaluate", ["evaluate", "pred.star", "--truth", star, "--modes", "sim/modes.npz",
                      "-o", "eval"]),
        ("analyze", ["analyze", "pred.star", "-o", "an", "--groups", "10", "--modes",
                     "sim/modes.npz"]),
        ("export", ["export", "pred.star", "--groups", "an/groups.json", "-o", "exp"]),
        ("reconstruct", ["reconstruct", "pred.star", "--groups", "an/groups.json", "-o", "rec",
                         "--device", device, "--quiet"]),
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="particle rows")
    p.add_argument("--stack", type=int, default=2000, help="distinct images simulated")
    p.add_argument("--size", type=int, default=32, help="image size, pixels")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default=None, help="data folder (default: a temporary one)")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        table = stack_and_network(work, args.stack, args.size, args.device)
        star = rows_star(work, table, args.n)
        print(f"data and network ready in {time.perf_counter() - t:.0f} s", flush=True)
        rows = []
        for name, command in steps(star.name, args.device):
            wall, output, code, rss_MB = deephemnma_rss(command, work, check=False)
            row = {"step": name, "n": args.n, "wall_s": round(wall, 1),
                   "peak_rss_MB": round(rss_MB), "rc": code}  # fmt: skip
            if name == "predict" and code == 0:
                rate = re.search(r"\(([\d,.]+)\s+images/s", output)
                row["images_per_s"] = float(rate.group(1).replace(",", "")) if rate else None
            if code != 0:
                row["failed"] = output[-2000:]
            rows.append(row)
            print(row, flush=True)
            if code != 0 and name == "predict":
                break
    name = "million" + (f"_{args.tag}" if args.tag else "")
    report(name, rows, ["step", "n", "wall_s", "peak_rss_MB", "images_per_s", "rc"])
    print(f"device: {args.device}, {args.size}²; results: {RESULTS / (name + '.json')}; "
          f"{machine()['cpu_count']} CPUs")  # fmt: skip


if __name__ == "__main__":
    main()
