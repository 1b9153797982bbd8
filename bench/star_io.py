"""Particle STAR files at real sizes: seconds and peak memory of reading (this package's
reader against ``starfile.read``), of opening the images' index (``ParticleImages``) and of
writing, each in a fresh process.

    python bench/star_io.py [--n 1000000] [--work DIR]

The STAR has RELION 3.1's layout with 17 particle columns (image and micrograph names, CTF,
pose, three amplitudes), about 280 bytes a row; as in RELION's files, each micrograph's 200
particles share its name and CTF. Peak memory: how far the process's resident size rose
above its size before the step (Linux: the peak is reset through /proc/self/clear_refs).
Writes ``bench/results/star_io.json`` and a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from common import machine, report

STEP = r"""
import json, sys, time
import starfile
from deephemnma.io.mrc import ParticleImages
from deephemnma.io.star import _STRING_LABELS, read_particles, write_particles

def status_MB(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def start():
    # Reset the peak (Linux: VmHWM); the resident size before the step.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_MB("VmRSS:")

step, path = sys.argv[1], sys.argv[2]
reading = step in ("starfile.read", "read_particles")
table = None if reading else read_particles(path, fill_image_size=False)
base, t = start(), time.perf_counter()
if step == "starfile.read":
    starfile.read(path, always_dict=True, parse_as_string=_STRING_LABELS)
elif step == "read_particles":
    read_particles(path, fill_image_size=False)
elif step == "ParticleImages":
    ParticleImages(table)
else:
    write_particles(path + ".out.star", table)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_MB": status_MB("VmHWM:") - base}))
"""


def make_star(path: Path, n: int) -> None:
    from deephemnma.io.star import ParticleTable, make_optics, write_particles

    rng = np.random.default_rng(0)
    # As RELION extracts them: 200 particles a micrograph, each micrograph with its own CTF.
    mic = np.arange(n) // 200
    n_mic = int(mic[-1]) + 1 if n else 0
    rows = pd.DataFrame(
        {
            "rlnImageName": [
                f"{i % 10000 + 1:06d}@stacks/particles_{i // 10000:05d}.mrcs" for i in range(n)
            ],  # fmt: skip
            "rlnMicrographName": [f"MotionCorr/job002/Movies/mic_{m:06d}.mrc" for m in mic],
            "rlnOpticsGroup": 1,
            "rlnDefocusU": rng.uniform(5000, 25000, n_mic)[mic],
            "rlnDefocusV": rng.uniform(5000, 25000, n_mic)[mic],
            "rlnDefocusAngle": rng.uniform(0, 180, n_mic)[mic],
            "rlnCtfBfactor": 0.0,
            "rlnPhaseShift": 0.0,
            "rlnAngleRot": rng.uniform(-180, 180, n),
            "rlnAngleTilt": rng.uniform(0, 180, n),
            "rlnAnglePsi": rng.uniform(-180, 180, n),
            "rlnOriginXAngst": rng.normal(0, 2, n),
            "rlnOriginYAngst": rng.normal(0, 2, n),
            **{f"deephemnmaAmplitude{m:02d}": rng.normal(0, 50, n) for m in (7, 8, 9)},
            "rlnClassNumber": 1,
        }
    )
    optics = make_optics(pixel_size_A=1.0, image_size_px=128, voltage_kV=300.0, cs_mm=2.7,
                         amplitude_contrast=0.1)  # fmt: skip
    write_particles(path, ParticleTable(optics, rows, path), relocate_images=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="particle rows")
    p.add_argument("--work", default=None, help="folder for the STAR (default: temporary)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        star = work / f"particles_{args.n}.star"
        if not star.exists():
            make_star(star, args.n)
        mb = star.stat().st_size / 1e6
        rows = []
        for step in ("starfile.read", "read_particles", "ParticleImages", "write_particles"):
            done = subprocess.run([sys.executable, "-c", STEP, step, str(star)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            row = {"step": step, "n": args.n, "file_MB": round(mb)}
            row.update({k: round(v, 2) for k, v in json.loads(done.stdout).items()})
            rows.append(row)
            print(row, flush=True)
    report("star_io", rows, ["step", "n", "file_MB", "seconds", "peak_MB"])
    print(f"{machine()['cpu_count']} CPUs")


if __name__ == "__main__":
    main()
