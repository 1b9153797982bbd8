"""Every GPU measurement in one prepared run (a lent GPU comes for minutes, once):

    python bench/gpu_session.py --out DIR [--device cuda] [--budget-s 470]

1. simulate ``--n-set1 + --n-test`` paper-ak images (256², 0.325 Å, SNR 0.1, CTF) in one
   process per core, preprocess them (phase flip, 128² at 0.65 Å);
2. Stage 2 (issue 6): train the default recipe on image set 1, on its ground truth or (``--labels
   stage1``, the paper's protocol) on Stage 1's estimates, made on the device first (past
   ``--stage1-timeout-s``, those of the chunks finished by then), predict the small test split
   and the large test set (image set 2), evaluate both against the ground truth next to the
   paper's Tables 1 and 3;
3. prediction throughput end to end from MRCS stacks (``--throughput-repeat`` × the large
   test set, rows repeated, so the page cache holds the stacks as after a first pass);
4. Stage 3 (issue 8): image set 2 cut into ``--groups`` equal bins along the helix (ground
   truth, as ``bench/reconstruct.py --groups-protocol``), each reconstructed from the 256²
   images with the network's 128²-predicted poses; FSC against the bin's centroid model;
5. Stage 1 on the GPU (issue 5): ``align --device cuda`` on ``--align-n`` images of set 2,
   evaluated; chunks of ``--chunk`` so that a time-out still leaves a measured rate;
6. hybrid refinement on the GPU (issue 7): ``refine --device cuda`` from the network's
   predictions of the same images, evaluated;
7. the paper recipe's training speed (batch 2, fp32, three networks) on ``--paper-n`` images.

Every step has a time-out and the whole run a budget: a step that would not fit is skipped
and the results so far are kept. Writes ``OUT/results.json`` (after every step),
``OUT/session.log`` (every command's output) and ``OUT/artifacts.tar.gz`` (tables, curves,
figures). With ``--device cpu`` and small sizes it is a dry run of the same code paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class Session:
    """Runs the steps' commands with time-outs; keeps the log and the results."""

    def __init__(self, out: Path, work: Path, budget_s: float) -> None:
        self.out, self.work = out, work
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.results: dict = {"steps": {}}
        self.background: list[subprocess.Popen] = []  # CPU work the end waits for
        self.log = open(out / "session.log", "a", buffering=1)  # noqa: SIM115
        path = f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"
        self.env = {**os.environ, "PYTHONPATH": path}

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def say(self, text: str) -> None:
        line = f"[{time.perf_counter() - self.t0:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        tmp.replace(self.out / "results.json")

    def record(self, name: str, **values) -> None:
        self.results["steps"].setdefault(name, {}).update(values)
        self.save()

    def start(self, args: list[str], threads: int | None = None) -> subprocess.Popen:
        env = dict(self.env)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log.write(f"$ {' '.join(args)}\n")
        return subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.work
        )

    def run(self, name: str, args: list[str], timeout_s: float, threads=None) -> dict:
        """Run a command; returns {rc, wall_s, timed_out}. Output goes to the log."""
        return self.run_together({name: args}, timeout_s, threads)[name]

    def run_together(
        self, commands: dict[str, list[str]], timeout_s: float, threads=None
    ) -> dict[str, dict]:
        """Run commands side by side, one shared time-out; {name: {rc, wall_s, timed_out}}.
        Short GPU commands spend most of their time starting Python and CUDA, which overlaps."""
        timeout_s = max(1.0, min(timeout_s, self.left_s() - 5))
        t = time.perf_counter()
        procs = {}
        for name, args in commands.items():
            self.say(f"{name}: start (time-out {timeout_s:.0f} s)")
            procs[name] = self.start(args, threads)
        infos = {}
        for name, proc in procs.items():
            try:
                rc = proc.wait(timeout=max(0.1, timeout_s - (time.perf_counter() - t)))
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                rc, timed_out = proc.wait(), True
            info = {"rc": rc, "wall_s": round(time.perf_counter() - t, 2), "timed_out": timed_out}
            self.say(f"{name}: {info}")
            self.record(name, **info)
            infos[name] = info
        return infos

    def dh(self, name: str, args: list[str], timeout_s: float) -> dict:
        return self.run(name, [sys.executable, "-m", "deephemnma", *args], timeout_s)

    def fits(self, name: str, need_s: float) -> bool:
        if self.left_s() < need_s:
            self.say(f"{name}: skipped ({self.left_s():.0f} s left, needs {need_s:.0f})")
            self.record(name, skipped=True)
            return False
        return True

    def pack(self, paths: list[Path]) -> None:
        """Small outputs into OUT/artifacts.tar.gz (the lease returns few files)."""
        tmp = self.out / "artifacts.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for p in paths:
                if p.exists() and (p.is_dir() or p.stat().st_size < 4_000_000):
                    tar.add(p, arcname=str(p.relative_to(self.work)), filter=_small)
        tmp.replace(self.out / "artifacts.tar.gz")


def _small(info: tarfile.TarInfo):
    if info.isfile() and (info.size > 4_000_000 or info.name.endswith((".mrc", ".mrcs", ".pt"))):
        return None
    return info


# --------------------------------------------------------------------------------------------
# Data


def simulate(s: Session, args) -> bool:
    total = args.n_set1 + args.n_test
    per = -(-total // args.shards)
    s.say(f"simulate: {total} images in {args.shards} shards of {per}")
    t = time.perf_counter()
    dh = [sys.executable, "-m", "deephemnma"]

    def shard(k: int, device: str) -> subprocess.Popen:
        command = [*dh, "simulate", "--preset", "paper-ak", "-n", str(per), "--seed",
                   str(1000 + k), "--chunk-size", "500", "-o", f"sim_{k}", "--device", device,
                   "--quiet"]  # fmt: skip
        return s.start(command, threads=1)

    procs = [shard(k, args.sim_device) for k in range(args.shards)]
    failed = [k for k, p in enumerate(procs) if p.wait() != 0]
    if failed and args.sim_device != "cpu":
        # The same shards on the CPU (a resumed simulation keeps the finished stacks).
        s.say(f"simulate: {len(failed)} shards failed on {args.sim_device}; on the CPU instead")
        s.record("simulate", device_failed=len(failed))
        procs = [shard(k, "cpu") for k in failed]
    else:
        procs = [procs[k] for k in failed]
    ok = all(p.wait() == 0 for p in procs)
    sim_s = time.perf_counter() - t
    procs = [
        s.start(
            [
                *dh,
                "preprocess",
                f"sim_{k}/particles.star",
                "--size",
                "128",
                "-o",
                f"pre_{k}",
                "--quiet",
            ],  # fmt: skip
            threads=1,
        )
        for k in range(args.shards)
    ]
    ok = ok and all(p.wait() == 0 for p in procs)
    s.record(
        "simulate",
        ok=ok,
        images=total,
        simulate_s=round(sim_s, 1),
        preprocess_s=round(time.perf_counter() - t - sim_s, 1),
    )
    return ok and merge(s, args)


def merge(s: Session, args) -> bool:
    """set1/test STARs at 128² (aligned) and at 256² (the originals, same rows)."""
    import pandas as pd

    from deephemnma.io.star import read_particles, select, write_particles

    modes = [np.load(s.work / f"sim_{k}" / "modes.npz")["vectors"] for k in range(args.shards)]
    same = all(np.array_equal(modes[0], m) for m in modes[1:])
    for kind, folder in (("", "pre"), ("_orig", "sim")):
        tables = []
        for k in range(args.shards):
            relocated = s.work / f"shard{kind}_{k}.star"
            write_particles(relocated, read_particles(s.work / f"{folder}_{k}" / "particles.star"))
            tables.append(read_particles(relocated))
        rows = pd.concat([t.particles for t in tables], ignore_index=True)
        merged = replace(tables[0], particles=rows)
        write_particles(s.work / f"set1{kind}.star", select(merged, range(args.n_set1)))
        test = range(args.n_set1, args.n_set1 + args.n_test)
        write_particles(s.work / f"test{kind}.star", select(merged, test))
    s.record("simulate", shards_share_modes=bool(same))
    return same


def subset(s: Session, source: str, target: str, n: int, repeat: int = 1) -> Path:
    import pandas as pd

    from deephemnma.io.star import read_particles, select, write_particles

    table = select(read_particles(s.work / source), range(n))
    if repeat > 1:
        table = replace(table, particles=pd.concat([table.particles] * repeat, ignore_index=True))
    write_particles(s.work / target, table)
    return s.work / target


# --------------------------------------------------------------------------------------------
# Stage 2


def stage1_labels(s: Session, args) -> str:
    """Labels for training: Stage 1 on image set 1 on the device (``--labels stage1``, the
    paper's protocol) when it finishes within ``--stage1-timeout-s``, else the ground truth;
    or a STAR given as ``--labels PATH`` (rows naming images of set1.star)."""
    if args.labels not in ("truth", "stage1"):
        return str(Path(args.labels).resolve())
    if args.labels != "stage1":
        return "set1.star"
    out = s.work / "stage1_set1"
    command = ["align", "--particles", "set1.star", "--modes", "sim_0/modes.npz",
               "--reference", "sim_0/reference.pdb", "-o", str(out), "--device", args.device,
               "--chunk-size", str(args.stage1_chunk), "--quiet"]  # fmt: skip
    chunked(s, "stage1_labels", command, out, args.n_set1, args.stage1_timeout_s)
    star = out / "particles.star"
    if not star.exists():
        star = finished_chunks(s, out)
    if star is None:
        s.say("stage1_labels: too few images aligned in time; training on the ground truth")
        return "set1.star"
    # CPU work: in the background while the GPU trains.
    s.background.append(s.start([sys.executable, "-m", "deephemnma", "evaluate", str(star),
                                 "--truth", "set1.star", "--modes", "sim_0/modes.npz", "-o",
                                 "eval_stage1_labels"], threads=2))  # fmt: skip
    s.record("stage1_labels", used=True)
    return str(star)


def finished_chunks(s: Session, out: Path, least: float = 0.4) -> Path | None:
    """After a time-out: the Stage-1 labels of the chunks that did finish (a prefix: one
    device worker aligns them in order), as ``out/finished.star``; None under a share
    ``least`` of image set 1 (8,000 of the paper's 20,000)."""
    from deephemnma.align.run import chunk_plan, write_results
    from deephemnma.io.star import read_particles, select

    if not (out / "config.json").exists():  # stopped before it claimed the folder
        return None
    table = read_particles(s.work / "set1.star")
    record = json.loads((out / "config.json").read_text())
    chunks, paths, todo = chunk_plan(out, len(table.particles), record["chunk_size"])
    k = todo[0][0] if todo else len(chunks)  # chunks before the first unfinished one
    done = chunks[k - 1][1] if k else 0
    s.record("stage1_labels", finished_images=done)
    if done < least * len(table.particles):
        return None
    star = write_results(
        select(table, range(done)), paths[:k], record["mode_numbers"], out / "finished.star"
    )
    s.say(f"stage1_labels: time-out; training on the {done} images aligned in time")
    return star


def train_default(s: Session, args, labels: str) -> dict:
    """The default recipe with a time budget: ``train --max-minutes`` plans as many epochs
    (at most ``--epochs``) as fit, so the one-cycle schedule ends inside the time-out."""
    shutil.rmtree(s.work / "run", ignore_errors=True)
    # What is left after training must still predict and score the test sets (~25 s).
    timeout_s = min(args.train_timeout_s, s.left_s() - args.after_train_s)
    minutes = max(0.2, (timeout_s - 15) / 60)  # the margin: the last save, the curves
    launcher = [sys.executable, "-m", "deephemnma"]
    if args.ngpu > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                    str(args.ngpu), "-m", "deephemnma"]  # fmt: skip
    return s.run(
        "train_default",
        [
            *launcher,
            "train",
            "--labels",
            labels,
            "--particles",
            "set1.star",
            "--modes",
            "sim_0/modes.npz",
            "-o",
            "run",
            "--epochs",
            str(args.epochs),
            "--max-minutes",
            f"{minutes:.3f}",
            "--batch-size",
            str(args.batch),
            "--device",
            args.device,
            *(["--augment", args.augment] if args.augment else []),
            *(["--lr", str(args.lr)] if args.lr else []),
            "--cuda-graphs" if args.cuda_graphs else "--no-cuda-graphs",
            *(
                ["--synthetic", str(args.synthetic), "--reference", "sim_0/reference.pdb"]
                if args.synthetic
                else []
            ),
            "--quiet",
        ],  # fmt: skip
        timeout_s=timeout_s,
    )


def train_and_predict(s: Session, args) -> bool:
    r = train_default(s, args, stage1_labels(s, args))
    history = training_history(s.work / "run")
    if history:
        s.record("train_default", **history)
    if not any((s.work / "run" / name).exists() for name in ("checkpoint.pt", "best.pt")):
        return False
    if r["timed_out"]:
        s.say("training timed out: predicting with its last checkpoint")
    dh = [sys.executable, "-m", "deephemnma", "predict", "--checkpoint", "run",
          "--device", args.device, "--batch-size", "1024", "--quiet"]  # fmt: skip
    commands = {
        name: [*dh, "--particles", star, "-o", out, *extra]
        for name, star, out, extra in (
            ("predict_small", "run/splits/test.star", "pred_small.star", []),
            ("predict_small_tta", "run/splits/test.star", "pred_small_tta.star", ["--tta"]),
            ("predict_large", "test.star", "pred_large.star", []),
            ("predict_large_tta", "test.star", "pred_large_tta.star", ["--tta"]),
            (
                "predict_large_tta16",
                "test.star",
                "pred_large_tta16.star",
                ["--tta", "--tta-turns", "2"],
            ),
        )
    }
    for name, info in s.run_together(commands, 120).items():
        if info["rc"] != 0 and not info["timed_out"]:
            # Keep the accuracy run's results whatever the default reader does on this machine.
            s.record(name, reader_fallback="processes")
            s.run(name, [*commands[name], "--reader", "processes"], 120)
    return (s.work / "pred_large.star").exists()


def training_history(run: Path) -> dict:
    import pandas as pd

    for name in ("history.csv", "curves.csv"):
        if (run / name).exists():
            frame = pd.read_csv(run / name)
            info = {"epochs_done": int(len(frame)), "history_columns": list(frame.columns)}
            for col in frame.columns:
                if col.endswith("_s") or "loss" in col:
                    info[f"{col}_last"] = float(frame[col].iloc[-1])
                    if col.endswith("_s"):
                        info[f"{col}_sum"] = float(frame[col].sum())
            return info
    return {}


def evaluate(s: Session, args) -> list[subprocess.Popen]:
    """The test sets' evaluations, in the background (CPU work while the GPU goes on)."""
    dh = [sys.executable, "-m", "deephemnma", "evaluate"]
    jobs = []
    for pred, truth, out, paper in (
        ("pred_small.star", "set1.star", "eval_small", "table1"),
        ("pred_small_tta.star", "set1.star", "eval_small_tta", "table1"),
        ("pred_large.star", "test.star", "eval_large", "table3"),
        ("pred_large_tta.star", "test.star", "eval_large_tta", "table3"),
        ("pred_large_tta16.star", "test.star", "eval_large_tta16", "table3"),
    ):
        if (s.work / pred).exists():
            jobs.append(
                s.start(
                    [
                        *dh,
                        pred,
                        "--truth",
                        truth,
                        "--modes",
                        "sim_0/modes.npz",
                        "-o",
                        out,
                        "--paper",
                        paper,
                    ],
                    threads=2,
                )  # fmt: skip
            )
    return jobs


def throughput(s: Session, args) -> None:
    n = args.n_test
    star = subset(s, "test.star", "big.star", n, repeat=args.throughput_repeat)
    images = n * args.throughput_repeat
    for run in args.throughput_runs.split(","):
        reader, workers = run.split(":")
        name = f"predict_throughput_{reader}" + (f"_{workers}" if int(workers) >= 0 else "")
        if not s.fits(name, 40):
            return
        r = s.dh(
            name,
            [
                "predict",
                "--particles",
                str(star),
                "--checkpoint",
                "run",
                "-o",
                f"{name}.star",
                "--device",
                args.device,
                "--batch-size",
                str(args.predict_batch),
                "--workers",
                workers,
                "--reader",
                reader,
                # no --chunk-size: the default chunks, as a user runs it
            ],  # fmt: skip
            timeout_s=90,
        )
        s.record(name, images=images, images_per_s_cli_wall=round(images / r["wall_s"], 1),
                 **_reported(s.out / "session.log"))  # fmt: skip


def _reported(log: Path) -> dict:
    """The rate and the time split of predict's last closing line in the log."""
    from predict_speed import closing_numbers

    text = log.read_text()
    numbers = closing_numbers(text[text.rfind("predicted ") :])
    if "images_per_s" in numbers:
        numbers["images_per_s_reported"] = numbers.pop("images_per_s")
    return numbers


# --------------------------------------------------------------------------------------------
# Stage 3: group FSC with predicted parameters


def groups_fsc(s: Session, args) -> None:
    from deephemnma.groups import from_labels, write_groups
    from deephemnma.io.star import column, read_particles

    truth = read_particles(s.work / "test.star")
    r = np.asarray(column(truth, "deephemnmaTrajectoryR"), dtype=float)
    n = len(r)
    order = np.argsort(r, kind="stable")
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) * args.groups // n
    write_groups(s.work / "groups.json", from_labels(labels, "helix", "bins"))
    out = s.work / "reconstruct_pred"
    s.dh(
        "reconstruct_predicted",
        [
            "reconstruct",
            "pred_large.star",
            "--images",
            "test_orig.star",
            "-o",
            str(out),
            "--groups",
            "groups.json",
            "--modes",
            "sim_0/modes.npz",
            "--min-particles",
            "100",
            "--device",
            args.device,
            "--quiet",
        ],  # fmt: skip
        timeout_s=args.reconstruct_timeout_s,
    )
    summary = out / "summary.json"
    if summary.exists():
        groups = json.loads(summary.read_text())["groups"]
        keys = ("resolution_fsc0143_A", "resolution_fsc05_A", "resolution_model_fsc0143_A",
                "resolution_model_fsc05_A")  # fmt: skip
        s.record(
            "reconstruct_predicted",
            groups=len(groups),
            mean={k: float(np.mean([g[k] for g in groups])) for k in keys},
            per_group=[{k: g[k] for k in ("name", "n_particles", *keys)} for g in groups],
        )


# --------------------------------------------------------------------------------------------
# Stage 1 and refinement on the device


def chunked(s: Session, name: str, command: list[str], out: Path, n: int, timeout_s: float):
    r = s.dh(name, command, timeout_s)
    done = sum(1 for _ in (out / "chunks").glob("chunk_*.npz")) if (out / "chunks").exists() else 0
    s.record(name, chunks_done=done, images_done=min(n, done * args_chunk(command)),
             images_per_s=round(min(n, done * args_chunk(command)) / r["wall_s"], 2))  # fmt: skip
    return r


def args_chunk(command: list[str]) -> int:
    return int(command[command.index("--chunk-size") + 1])


def on_device(s: Session, args, verb: str, source: str) -> None:
    """``align`` (Stage 1) or ``refine`` (hybrid, from the network's predictions) of the first
    ``--align-n`` images of ``source`` on the device, then their evaluation."""
    n, out = args.align_n, s.work / verb
    subset(s, source, f"{verb}_in.star", n)
    command = [verb, "--particles", f"{verb}_in.star", "--modes", "sim_0/modes.npz",
               "--reference", "sim_0/reference.pdb", "-o", str(out), "--device", args.device,
               "--chunk-size", str(args.chunk), "--quiet"]  # fmt: skip
    if args.align_batch:
        command += ["--batch-size", str(args.align_batch)]
    stage1_star = s.work / "align" / "particles.star"
    if verb == "refine" and stage1_star.exists():
        # Stage 1's scores of the same images set the failure threshold (as the pipeline does).
        command += ["--score-reference", str(stage1_star)]
    timeout_s = args.align_timeout_s if verb == "align" else args.refine_timeout_s
    chunked(s, f"{verb}_gpu", command, out, n, timeout_s)
    if (out / "particles.star").exists():
        command = ["evaluate", str(out / "particles.star"), "--truth", "test.star", "--modes",
                   "sim_0/modes.npz", "-o", f"eval_{verb}"]  # fmt: skip
        s.dh(f"evaluate_{verb}", command, 60)


def paper_recipe(s: Session, args) -> None:
    n = args.paper_n
    subset(s, "set1.star", "paper_in.star", n)
    s.dh(
        "train_paper_speed",
        [
            "train",
            "--recipe",
            "paper",
            "--labels",
            "paper_in.star",
            "--particles",
            "paper_in.star",
            "--modes",
            "sim_0/modes.npz",
            "-o",
            "run_paper",
            "--epochs",
            "1",
            "--val",
            "100",
            "--test",
            "100",
            "--device",
            args.device,
            "--quiet",
        ],  # fmt: skip
        timeout_s=args.paper_timeout_s,
    )
    history = training_history(s.work / "run_paper")
    if history:
        s.record("train_paper_speed", train_images=n - 200, **history)


# --------------------------------------------------------------------------------------------


def table_of(folder: Path) -> dict:
    """The evaluation's summary numbers, whatever file holds them."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            found[path.name] = json.loads(path.read_text())
        except ValueError:
            continue
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/tmp/deephemnma-gpu-session")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=470)
    p.add_argument("--shards", type=int, default=os.cpu_count() or 2)
    p.add_argument("--sim-device", default="cpu", help="where to render the images: cpu | cuda")
    p.add_argument("--n-set1", type=int, default=20000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=400, help="at most; the time-out decides")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--augment", default=None, help="train --augment (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="train --lr (default: the recipe's)")
    p.add_argument(
        "--synthetic", type=float, default=0.0, help="train --synthetic (share of each batch)"
    )
    p.add_argument("--train-timeout-s", type=float, default=170)
    p.add_argument(
        "--after-train-s",
        type=float,
        default=30,
        help="budget kept for predicting and scoring after training",
    )
    p.add_argument(
        "--labels", default="truth", help="truth | stage1 (Stage 1 on the device) | a labels STAR"
    )
    p.add_argument("--ngpu", type=int, default=1, help="GPUs for training (> 1: torchrun)")
    p.add_argument("--stage1-timeout-s", type=float, default=240)
    p.add_argument(
        "--stage1-chunk", type=int, default=2000, help="Stage-1 labels: images per chunk"
    )
    p.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train --cuda-graphs (the default) or --no-cuda-graphs",
    )
    p.add_argument("--predict-batch", type=int, default=1024)
    p.add_argument("--throughput-repeat", type=int, default=20)
    p.add_argument(
        "--throughput-runs",
        default="threads:-1,processes:-1,threads:8",
        help="predict's --reader:--workers per run (-1: its default)",
    )
    p.add_argument(
        "--steps",
        default="throughput,reconstruct,align,refine,paper",
        help="optional steps after training and prediction (none: only Stage 2)",
    )
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--reconstruct-timeout-s", type=float, default=90)
    p.add_argument("--align-n", type=int, default=1000)
    p.add_argument("--align-batch", type=int, default=0, help="0: the CLI's device default")
    p.add_argument("--chunk", type=int, default=250)
    p.add_argument("--align-timeout-s", type=float, default=60)
    p.add_argument("--refine-timeout-s", type=float, default=45)
    p.add_argument("--paper-n", type=int, default=1200)
    p.add_argument("--paper-timeout-s", type=float, default=40)
    args = p.parse_args()

    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    s = Session(out, work, args.budget_s)
    import torch

    s.results["args"] = vars(args)
    s.results["machine"] = {
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
    }
    s.save()
    artifacts = [work / n for n in ("run/history.csv", "run/curves.png", "run/config.json",
                                    *EVALUATIONS, "reconstruct_pred", "align/summary.json",
                                    "refine/summary.json", "run_paper/history.csv")]  # fmt: skip
    try:
        if not simulate(s, args):
            s.say("simulation failed; see the log")
            return
        if not train_and_predict(s, args):
            s.say("no trained network; see the log")
            return
        s.background += evaluate(s, args)
        wanted = set(args.steps.split(","))
        if "reconstruct" in wanted and s.fits("reconstruct_predicted", 40):
            groups_fsc(s, args)
        if "throughput" in wanted:
            throughput(s, args)
        if "align" in wanted and s.fits("align_gpu", 30):
            on_device(s, args, "align", "test.star")
        if "refine" in wanted and s.fits("refine_gpu", 30):
            on_device(s, args, "refine", "pred_large.star")
        for job in s.background:
            try:
                job.wait(timeout=max(1, s.left_s() - 10))
            except subprocess.TimeoutExpired:
                job.kill()
        for name in EVALUATIONS:
            if (work / name).exists():
                s.results[name] = table_of(work / name)
        s.save()
        if "paper" in wanted and s.fits("train_paper_speed", 25):
            paper_recipe(s, args)
    finally:
        s.pack(artifacts)
        s.save()
        s.say("done")
        print_summary(s.results)


EVALUATIONS = ("eval_small", "eval_small_tta", "eval_large", "eval_large_tta",
               "eval_large_tta16", "eval_align", "eval_refine", "eval_stage1_labels")  # fmt: skip


def _metrics(evaluation: dict) -> str:
    r = evaluation.get("evaluation.json", {}).get("results", [{}])[0]
    if not r:
        return "–"
    amp = r["amplitudes"]["mean_over_modes"]
    ang = r["angles"]["axes"]
    sx, sy = r["shifts"]["x"]["mean"], r["shifts"]["y"]["mean"]
    rmsd = r["rmsd"]
    text = (
        f"n {r['n']}  amp MAE {amp:.2f}  angle {ang['mean']:.2f}±{ang['std']:.2f}° "
        f"(median {ang['median']:.2f}°, >10° {100 * r['angles']['gross_fraction']:.2f}%)  "
        f"shift {sx:.3f}/{sy:.3f} Å  RMSD amp/ang/shift {rmsd['amplitudes']['mean']:.2f}/"
        f"{rmsd['angles']['mean']:.2f}/{rmsd['shifts']['mean']:.2f} Å"
    )
    confidence = r.get("confidence")
    if confidence:  # with --tta: what keeping the most consistent particles gives
        kept = "  ".join(
            f"{k['fraction']:.0%}: {k['angle_mean_deg']:.2f}°/{k['amplitude_mae']:.2f}"
            for k in confidence["kept_lowest_spread"]
        )
        text += f"  | spread rho {confidence['spearman_spread_vs_angle_error']:.2f}  {kept}"
    return text


def print_summary(results: dict) -> None:
    """The figures that matter, last in the output (a lease returns the output's tail)."""
    steps = results["steps"]
    print("\n==== summary ====", results.get("machine"))
    for name, info in steps.items():
        keep = {k: v for k, v in info.items() if k not in ("history_columns", "per_group")}
        print(f"{name}: {json.dumps(keep, default=str)}")
    for name in EVALUATIONS:
        if name in results:
            print(f"{name}: {_metrics(results[name])}")


if __name__ == "__main__":
    main()
