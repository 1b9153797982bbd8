"""Reading particle images for prediction: how fast each reader feeds the device.

    python bench/read_images.py --n 81920 --size 128 --batch 1024 --workers 0,1,2
    python bench/read_images.py --files 1000 --order random --workers 0 --tag random

Writes ``--stack`` random images (``--size``²) in ``--files`` stacks and a STAR whose rows go
through them again and again (``--n`` rows; the page cache holds the stacks, as on a second
pass over a real data set; ``--order random`` shuffles the rows, as training batches and some
exports are), then times predict's readers over all rows in batches of ``--batch``, to
``--device``, with no network: the ``threads`` reader (:mod:`deephemnma.io.prefetch`) and
the ``processes`` reader (a torch DataLoader), for each number of workers. Also
``ParticleImages.images`` alone, into a new array per batch and into one reused buffer.
Each figure is the best of ``--repeats``. Writes ``bench/results/read_images[_TAG].json``.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import report
from deephemnma.io.mrc import ParticleImages, write_stack
from deephemnma.io.star import ParticleTable, make_optics, read_particles, write_particles


def make_particles(folder: Path, n: int, stack: int, size: int, files: int = 1) -> Path:
    images = np.random.default_rng(0).normal(size=(stack, size, size)).astype(np.float32)
    per_file = -(-stack // files)
    for k in range(files):
        write_stack(folder / f"s{k:05d}.mrcs", images[k * per_file : (k + 1) * per_file], 1.0)
    names = [f"{i % stack % per_file + 1}@s{i % stack // per_file:05d}.mrcs" for i in range(n)]
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": 1})
    star = folder / "particles.star"
    write_particles(star, ParticleTable(make_optics(1.0, size, 300, 2.7, 0.1), particles, star))
    return star


def best_rate(n: int, repeats: int, run) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=81920, help="rows read per repeat")
    p.add_argument("--stack", type=int, default=10000, help="images in the stack")
    p.add_argument("--size", type=int, default=128, help="image size, pixels")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--workers", default="0,1,2", help="reader threads / processes to try")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--files", type=int, default=1, help="stack files the images are split into")
    p.add_argument("--order", choices=("sequential", "random"), default="sequential")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    predict = importlib.import_module("deephemnma.network.predict")
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        stack = min(args.stack, args.n)
        star = make_particles(Path(tmp), args.n, stack, args.size, min(args.files, stack))
        images = ParticleImages(read_particles(star))
        rows = np.arange(args.n)
        if args.order == "random":
            rows = np.random.default_rng(1).permutation(args.n)
        batches = [rows[b : b + args.batch] for b in range(0, args.n, args.batch)]
        results = []

        def record(reader: str, workers, run) -> None:
            rate = best_rate(args.n, args.repeats, run)
            results.append({"reader": reader, "workers": workers, "images_per_s": rate})

        buffer = np.empty((args.batch, args.size, args.size), dtype=np.float32)
        record("ParticleImages.images", "-", lambda: [images.images(b) for b in batches])
        record(
            "ParticleImages.images, out=",
            "-",
            lambda: [images.images(b, out=buffer[: len(b)]) for b in batches],
        )
        for reader in ("threads", "processes"):
            for workers in (int(w) for w in args.workers.split(",")):

                def run(reader=reader, workers=workers) -> None:
                    stream = predict._read_batches(images, rows, batches, device, workers, reader)
                    for x in stream:
                        x[0, 0, 0, 0].item()  # waits for this batch's copy to the device

                record(reader, workers, run)
    for row in results:
        row["images_per_s"] = round(row["images_per_s"])
    name = "read_images" + (f"_{args.tag}" if args.tag else "")
    report(name, results, ["reader", "workers", "images_per_s"])
    print(f"{args.n} rows over {min(args.files, args.stack)} stack file(s), {args.order} order")


if __name__ == "__main__":
    main()
