"""Stage 2 on CPU at reduced size: simulate → preprocess → train on ground truth → predict the
held-out images → the paper's metrics next to its Table 3; plus CPU inference speed at 128².

    python bench/stage2_cpu.py [--work DIR] [--n 3000] [--epochs 12] [--threads 1]

Protocol (BENCHMARK.md, reduced): paper-ak images simulated at 128² / 0.65 Å (shifts ±2.5 px
= ±1.625 Å, the paper's ±5 px of 256²), phase-flipped and Fourier-cropped to 64² (1.3 Å/px);
the network (default recipe) is trained on the ground-truth labels of a training split and
scored on a held-out split never seen in training. Ground-truth labels measure what the
network can learn in minutes of CPU; ``--labels stage1`` runs the paper's protocol instead:
Stage 1 (``align``) labels all but the last ``--test`` images, the network trains on its
estimates and is scored on those last images against the truth (``--labels truth-last``: the
same rows with ground-truth labels, the control).

Writes ``bench/results/stage2_cpu[_TAG].json`` and the evaluation folder under ``--work``.
Re-running reuses the simulated data (``simulate`` and ``preprocess`` resume).

Recipes at equal CPU time (issue 6 asks the default recipe to be compared with the paper's):

    python bench/stage2_cpu.py --work W --sim-size 64 --size 32 --n 12000 --minutes 10 \
        --recipe default --tag default32 --skip-speed
    python bench/stage2_cpu.py --work W --sim-size 64 --size 32 --n 12000 --minutes 10 \
        --recipe paper --tag paper32 --skip-speed

(the second reuses the first's images; run them one after the other, or side by side with
``--threads 1`` each, one core each.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, timed  # noqa: E402
from deephemnma.cli.main import main  # noqa: E402


def _run(args: list[str]) -> None:
    code = main(args)
    if code != 0:
        raise SystemExit(f"deephemnma {' '.join(args)} failed with {code}")


def inference_speed(size: int, threads: int, seconds: float = 6.0, batch: int = 64) -> dict:
    """Forward passes of the ResNet-34 + MLP network on random (batch, 1, size, size) inputs:
    images/s for the plain fp32 model and for predict's prepared model (BN folded,
    channels-last, inference mode) in fp32 and bf16."""
    from deephemnma.network.checkpoint import LoadedNetwork
    from deephemnma.network.data import InputNormalization
    from deephemnma.network.model import DeepHEMNMANet, NetworkSpec, TargetScaling
    from deephemnma.network.predict import prepare_for_inference
    from deephemnma.network.train import bf16_fast

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = NetworkSpec(3)
    model = DeepHEMNMANet(spec).eval()
    loaded = LoadedNetwork(
        model, spec, InputNormalization(), TargetScaling(), [7, 8, 9], size, 0.65, {}
    )
    x = torch.randn(batch, 1, size, size)
    out = {}
    variants = [("fp32 plain", model, False, False), ("fp32 folded+CL", None, False, True)]
    if bf16_fast(torch.device("cpu")):
        variants.append(("bf16 folded+CL", None, True, True))
    for name, net, bf16, prepared in variants:
        if prepared:
            net = prepare_for_inference(loaded, torch.device("cpu"))
        xx = x.contiguous(memory_format=torch.channels_last) if prepared else x
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            net(xx)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                net(xx)
                n += batch
        out[name] = n / (time.perf_counter() - t0)
    torch.set_num_threads(before)
    return out


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deephemnma-stage2-cpu"))
    parser.add_argument("--n", type=int, default=3000, help="simulated images")
    parser.add_argument("--val", default="200")
    parser.add_argument("--test", default="600", help="held-out images scored at the end")
    parser.add_argument("--size", type=int, default=64, help="network input box (pixels)")
    parser.add_argument(
        "--sim-size",
        type=int,
        default=128,
        help="simulated box (pixels; the pixel size scales so the box stays 83.2 Å)",
    )
    parser.add_argument("--recipe", default="default", help="default | paper")
    parser.add_argument("--epochs", type=int, default=12, help="at most, with --minutes")
    parser.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="training time budget (train --max-minutes; 0: --epochs)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: the recipe's own (paper: 2), 64 for the default recipe",
    )
    parser.add_argument("--tag", default="", help="results file stage2_cpu_TAG.json")
    parser.add_argument("--skip-speed", action="store_true", help="no inference-speed runs")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="train --seed (default: train's)")
    parser.add_argument("--augment", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest "
                        "on a shared 2-core machine)")  # fmt: skip
    parser.add_argument("--restart", action="store_true", help="retrain from scratch")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--tta", action="store_true", help="also predict with --tta, evaluated")
    parser.add_argument(
        "--labelled",
        type=int,
        default=0,
        help="train on only this many labelled images (the first ones; plus --val and --test, "
        "which must then be counts); 0: all --n",
    )
    parser.add_argument(
        "--synthetic", type=float, default=0.0, help="train --synthetic (share of each batch)"
    )
    parser.add_argument(
        "--labels",
        default="truth",
        choices=["truth", "truth-last", "stage1"],
        help="truth: ground truth, train splits off the test set; truth-last: ground truth, the "
        "test set is the last --test images; stage1: Stage 1 (align, --workers processes) on "
        "all but the last --test images, which are the test set (the paper's protocol)",
    )
    parser.add_argument("--workers", type=int, default=2, help="align processes (--labels stage1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work
    record: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine()}

    if not args.skip_speed:
        speed = {}
        for threads in sorted({1, args.threads, 2}):
            speed[f"{threads} thread(s)"] = inference_speed(128, threads)
        record["inference_128px_img_per_s"] = speed
        print("CPU inference at 128², images/s:", json.dumps(speed, indent=1))
    if args.speed_only:
        _write(record, args.tag)
        return

    sim, pre = work / "sim", work / f"pre_{args.size}"
    steps: dict = {}
    with timed(steps.setdefault("simulate", {})):
        # The paper's 256² box at 0.325 Å (83.2 Å) and ±5 px shifts (±1.625 Å), at sim-size.
        pixel_A = 83.2 / args.sim_size
        _run(["simulate", "--preset", "paper-ak", "-n", str(args.n), "--image-size",
              str(args.sim_size), "--pixel-size", f"{pixel_A:g}", "--max-shift",
              f"{1.625 / pixel_A:g}", "-o", str(sim), "--quiet"])  # fmt: skip
    with timed(steps.setdefault("preprocess", {})):
        _run(["preprocess", str(sim / "particles.star"), "--size", str(args.size),
              "-o", str(pre), "--quiet"])  # fmt: skip
    run = work / (f"run_{args.tag}" if args.tag else "run")
    if args.restart and run.exists():
        shutil.rmtree(run)
    batch = args.batch_size or (64 if args.recipe == "default" else None)
    labels, test_split = pre / "particles.star", args.test
    if args.labelled:
        labels = _first_rows(labels, args.labelled + int(args.val) + int(args.test))
    held_out = None
    if args.labels != "truth":
        # The same rows for both label kinds: train on the first images, test on the last.
        n_all = _count_rows(labels)
        held_out = _rows(labels, range(n_all - int(args.test), n_all), "last")
        labels, test_split = _rows(labels, range(n_all - int(args.test)), "first"), "0"
    if args.labels == "stage1":
        aligned = work / f"stage1_{args.size}_{_count_rows(labels)}"
        with timed(steps.setdefault("stage1", {})):
            _run(["align", "--particles", str(labels), "--modes", str(sim / "modes.npz"),
                  "--reference", str(sim / "reference.pdb"), "-o", str(aligned),
                  "--workers", str(args.workers), "--quiet"])  # fmt: skip
        with timed(steps.setdefault("evaluate_stage1", {})):
            _run(["evaluate", str(aligned / "particles.star"), "--truth", str(labels),
                  "--modes", str(sim / "modes.npz"),
                  "-o", str(aligned / "evaluation")])  # fmt: skip
        labels = aligned / "particles.star"
        stage1 = json.loads((aligned / "evaluation" / "evaluation.json").read_text())
        record["stage1_labels"] = stage1["results"][0]
    train_args = [
        "train", "--labels", str(labels), "--modes", str(sim / "modes.npz"),
        "-o", str(run), "--recipe", args.recipe, "--epochs", str(args.epochs),
        "--val", args.val, "--test", test_split, "--threads", str(args.threads), "--quiet",
    ]  # fmt: skip
    if args.labels == "stage1":
        train_args += ["--particles", str(pre / "particles.star")]
    if batch is not None:
        train_args += ["--batch-size", str(batch)]
    if args.minutes > 0:
        train_args += ["--max-minutes", str(args.minutes)]
    if args.lr is not None:
        train_args += ["--lr", str(args.lr)]
    if args.seed is not None:
        train_args += ["--seed", str(args.seed)]
    if args.augment is not None:
        train_args += ["--augment", args.augment]
    if args.synthetic > 0:
        reference = str(sim / "reference.pdb")
        train_args += ["--synthetic", str(args.synthetic), "--reference", reference]
    with timed(steps.setdefault("train", {})):
        _run(train_args)
    test_star = held_out or run / "splits" / "test.star"
    n_test = _count_rows(test_star)
    for suffix, extra in (("", []), ("_tta", ["--tta"]))[: 2 if args.tta else 1]:
        pred = run / f"predicted_test{suffix}.star"
        with timed(steps.setdefault(f"predict{suffix}", {})):
            _run(["predict", "--particles", str(test_star), "--checkpoint",
                  str(run), "-o", str(pred), "--threads", str(args.threads), "--quiet",
                  *extra])  # fmt: skip
        steps[f"predict{suffix}"]["images_per_s"] = n_test / steps[f"predict{suffix}"]["wall_s"]
        with timed(steps.setdefault(f"evaluate{suffix}", {})):
            # The preprocessed STAR names the same images and keeps the ground-truth columns.
            _run(["evaluate", str(pred), "--truth", str(pre / "particles.star"),
                  "--modes", str(sim / "modes.npz"), "-o", str(run / f"evaluation{suffix}"),
                  "--paper", "all"])  # fmt: skip
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    config = json.loads((run / "config.json").read_text())
    # Training time from the per-epoch history (a rerun resumes and trains nothing).
    import csv

    history = list(csv.DictReader(open(run / "history.csv")))
    steps["train"]["epochs"] = len(history)
    steps["train"]["train_s"] = sum(float(r["train_s"]) for r in history)
    steps["train"]["train_plus_val_s"] = sum(
        float(r["train_s"]) + float(r["val_s"]) for r in history
    )
    record.update(
        {
            "steps": steps,
            "train": {
                "splits": config["splits"],
                "bf16": config["bf16"],
                "threads": config["threads"],
                "history_last": config["result"]["last"],
                "best": config["result"]["best"],
            },
            "result": evaluation["results"][0],
        }
    )
    if args.tta:
        tta = json.loads((run / "evaluation_tta" / "evaluation.json").read_text())
        record["result_tta"] = tta["results"][0]
    _write(record, args.tag)
    r = evaluation["results"][0]
    amp = r["amplitudes"]
    print(
        f"\nheld-out {r['n']} images: amplitude MAE {amp['mean_over_modes']:.2f} ("
        + " / ".join(f"{m['mean']:.1f}" for m in amp["modes"])
        + f"), angle {r['angles']['axes']['mean']:.2f}° (median "
        f"{r['angles']['axes']['median']:.2f}°, > 10°: {100 * r['angles']['gross_fraction']:.1f}%)"
        f", shifts {r['shifts']['x']['mean']:.3f} / {r['shifts']['y']['mean']:.3f} Å; "
        f"train {steps['train']['train_plus_val_s']:.0f} s ({len(history)} epochs), predict "
        f"{steps['predict']['images_per_s']:.0f} img/s at {args.size}²"
    )
    print((run / "evaluation" / "table.txt").read_text())
    if args.tta:
        print("with --tta:\n" + (run / "evaluation_tta" / "table.txt").read_text())


def _count_rows(star: Path) -> int:
    from deephemnma.io.star import read_particles

    return len(read_particles(star).particles)


def _rows(star: Path, rows: range, name: str) -> Path:
    """A STAR of these particle rows of ``star``, beside it (same image paths)."""
    from deephemnma.io.star import read_particles, select, write_particles

    out = star.with_name(f"{name}_{rows.start}_{rows.stop}.star")
    if not out.exists():
        write_particles(out, select(read_particles(star), np.asarray(rows)))
    return out


def _first_rows(star: Path, n: int) -> Path:
    """A STAR of the first ``n`` particles of ``star``, beside it (same image paths)."""
    if n > (have := _count_rows(star)):
        raise SystemExit(f"--labelled + --val + --test = {n} > {have} images")
    return _rows(star, range(n), "first")


def _write(record: dict, tag: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"stage2_cpu_{tag}.json" if tag else "stage2_cpu.json")
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main_bench()
