"""Test-time augmentation variants on one trained network and one held-out set, paired.

    python bench/tta_variants.py --run RUN --particles TEST.star --truth GT.star \
        [--modes modes.npz] [--variants "1,8,8:turns=2,8:shift=1"] [--device cpu]

Each variant is a ``deephemnma predict`` of the same images (``1``: no TTA; ``8``: the D4
copies; ``turns=T``: × T in-plane turns; ``shift=P``: × 5 offsets of P pixels), scored against
the truth per particle. Since every variant sees the same particles, the differences are
paired: each row gives the mean angle error and its change against the first ``8`` variant
(or the first variant), with the standard error of the paired change, so that a gain smaller
than the variation between particles can still be told from noise. Writes
``bench/results/tta_variants[_TAG].json`` and a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, report  # noqa: E402
from deephemnma.evaluate import compare  # noqa: E402
from deephemnma.io.star import read_particles  # noqa: E402
from deephemnma.network.predict import predict  # noqa: E402


def parse_variant(text: str) -> dict:
    """``"8:turns=2:shift=1"`` → predict's TTA options."""
    copies, *options = text.split(":")
    if copies not in ("1", "8"):
        raise SystemExit(f"variant {text!r}: starts with 1 (no TTA) or 8 (TTA)")
    values = dict(option.split("=") for option in options)
    unknown = set(values) - {"turns", "shift"}
    if unknown or (copies == "1" and values):
        raise SystemExit(f"variant {text!r}: options turns=T, shift=P go with 8")
    return {
        "tta": copies == "8",
        "tta_turns": int(values.get("turns", 1)),
        "tta_shift_px": int(values.get("shift", 0)),
    }


def per_particle(pred: Path, truth, modes) -> dict[str, np.ndarray]:
    c = compare(read_particles(pred), truth, modes)
    amp = np.abs(c.amplitudes_predicted - c.amplitudes_truth).mean(1)
    shift = np.abs(c.shifts_predicted - c.shifts_truth).mean(1)
    return {"angle": c.angle_error_deg, "amp": amp, "shift": shift}


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of b − a and its standard error."""
    d = b - a
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", required=True, help="training folder or checkpoint")
    p.add_argument("--particles", required=True, help="held-out particles (STAR)")
    p.add_argument("--truth", required=True, help="STAR with their true parameters")
    p.add_argument("--modes", default=None, help="modes file, for the amplitude RMSD")
    p.add_argument("--variants", default="1,8,8:turns=2,8:shift=1")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for the predictions (default: RUN)")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    modes = None
    if args.modes:
        from deephemnma.nma.modes import load_modes

        modes = load_modes(args.modes)
    truth = read_particles(args.truth)
    out = Path(args.out or (args.run if Path(args.run).is_dir() else Path(args.run).parent))
    variants = [v.strip() for v in args.variants.split(",")]
    errors, rows = {}, []
    for variant in variants:
        pred = out / f"tta_variant_{variant.replace(':', '_').replace('=', '')}.star"
        t = time.perf_counter()
        options = parse_variant(variant)
        result = predict(args.particles, args.run, pred, device=args.device,
                         threads=args.threads, progress=False, **options)  # fmt: skip
        errors[variant] = per_particle(pred, truth, modes)
        e = errors[variant]
        rows.append({
            "variant": variant, "copies": result["tta_copies"] or 1, "n": len(e["angle"]),
            "angle_deg": round(float(e["angle"].mean()), 3),
            "angle_median_deg": round(float(np.median(e["angle"])), 3),
            "gross_pct": round(100 * float((e["angle"] > 10).mean()), 2),
            "amp_mae": round(float(e["amp"].mean()), 3),
            "shift_mae_A": round(float(e["shift"].mean()), 4),
            "seconds": round(time.perf_counter() - t, 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
    base = next((v for v in variants if v == "8"), variants[0])
    for row in rows:
        for key, column in (("angle", "d_angle_deg"), ("amp", "d_amp")):
            mean, se = paired(errors[base][key], errors[row["variant"]][key])
            row[column] = f"{mean:+.3f} ± {se:.3f}"
    report("tta_variants" + (f"_{args.tag}" if args.tag else ""), rows,
           ["variant", "copies", "n", "angle_deg", "angle_median_deg", "gross_pct", "d_angle_deg",
            "amp_mae", "d_amp", "shift_mae_A", "seconds"])  # fmt: skip
    print(f"paired changes against variant {base!r}; {machine()['cpu_count']} CPUs")


if __name__ == "__main__":
    main()
