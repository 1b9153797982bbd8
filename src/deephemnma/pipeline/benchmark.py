"""``deephemnma benchmark paper-ak``: the paper's synthetic benchmark through the whole
pipeline, scored against the ground truth, with the cost extrapolated to a million images.

Scales: ``tiny`` (a few minutes on 2 CPU cores: 400 images, 64² inputs, a network trained
for a few epochs — too little to learn orientations, which the refinement then has to
recover), ``small`` (5,000 images at 128²; about an hour or two on CPU) and ``paper`` (the
full protocol: 70,000 images, 20,000 for Stage 1, 128², the paper's splits; Stage 2 wants a
GPU). Every number of the output table is computed from this run; the paper's are quoted
beside them from its Tables 1–4 (:data:`deephemnma.evaluate.PAPER_ROWS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_write_text
from deephemnma.pipeline.config import ProjectConfig, apply


@dataclass(frozen=True)
class Scale:
    n_images: int
    sections: dict


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        400,
        {
            "preprocess": {"size": 64},
            "stage1": {"n_images": 200, "sizes": "32,64", "steps": "20,10", "chunk_size": 50},
            "train": {"epochs": 4, "batch_size": 32, "val": "20", "test": "20"},
            "predict": {"refine_sizes": "32,64", "refine_steps": "15,10"},
            "analyze": {"method": "bins", "groups": 4, "min_per_group": 40, "gif": True},
            # The 64² images: a 256³ map of 4 tiny groups would cost minutes and GBs.
            "reconstruct": {"min_particles": 40, "original_size": False},
        },
    ),
    "small": Scale(
        5000,
        {
            "stage1": {"n_images": 2000},
            "train": {"epochs": 30},
            "analyze": {"method": "density", "groups": 10, "min_per_group": 100},
        },
    ),
    "paper": Scale(
        70_000,
        {
            "stage1": {"n_images": 20_000},
            "train": {"val": "2000", "test": "2000"},
            "analyze": {"method": "density", "groups": 10, "min_per_group": 900},
            "reconstruct": {"min_particles": 900},
        },
    ),
}

# Compute of the paper's pipelines for one million 128² images (paper §3.1.4 / BENCHMARK.md).
PAPER_COST_1M = {
    "HEMNMA (paper)": {"cpu_h": 64_000.0, "gpu_h": 0.0},
    "DeepHEMNMA (paper)": {"cpu_h": 1_232.0, "gpu_h": 233.0},
}
MILLION = 1_000_000
PAPER_STAGE1_IMAGES = 20_000
PAPER_TRAIN_IMAGES = 14_055


def benchmark_config(scale: str, root: Path, overrides: dict | None = None) -> ProjectConfig:
    """The project configuration of a scale, reading the simulated data in ``root/simulate``."""
    if scale not in SCALES:
        raise InputError("unknown scale", field="--scale", expected=" | ".join(SCALES),
                         found=scale)  # fmt: skip
    sim = root / "simulate"
    config = ProjectConfig(folder=str(root))
    config = apply(config, SCALES[scale].sections)
    config = replace(
        config,
        project=replace(
            config.project,
            particles=str(sim / "particles.star"),
            reference=str(sim / "reference.pdb"),
            modes_file=str(sim / "modes.npz"),
            truth=str(sim / "particles.star"),
        ),
    )
    return apply(config, overrides or {}, "command line")


def simulate_paper_ak(
    root: Path, n_images: int, seed: int, progress: bool, device: str = "cpu"
) -> Path:
    """The paper's images (resumable; the same seed and device give the same images; on a
    GPU, rendering does not hold up the benchmark: one CPU core takes 18 minutes for the
    paper's 70,000)."""
    from deephemnma.simulate import paper_ak_config, paper_ak_reference, simulate_dataset

    structure, modes = paper_ak_reference(progress=False)
    config = paper_ak_config(n_images=n_images, seed=seed)
    return simulate_dataset(
        structure, modes, config, root / "simulate", progress=progress, device=device
    )


def cost_table(root: Path, n_total: int) -> dict:
    """Measured seconds per image of each stage and their extrapolation to a million images
    (Stage 1 on the paper's 20,000, training scaled to the paper's 14,055 training images at
    the same epochs, prediction (+ refinement) on the remaining 980,000)."""
    import torch

    def record(step):
        path = root / step / "step.json"
        return json.loads(path.read_text()) if path.exists() else None

    stage1, train, predict = record("stage1"), record("train"), record("predict")
    if not (stage1 and train and predict):
        return {}

    def cpu(record) -> float:
        # Measured CPU time when the run recorded it, else wall time × worker processes.
        extra = record["extra"]
        return extra.get("cpu_s") or record["seconds"] * extra.get("workers", 1)

    n_stage1 = stage1["extra"]["particles"]
    stage1_cpu_s = cpu(stage1) / n_stage1
    history = (root / "train" / "history.csv").read_text().strip().splitlines()
    epochs = max(len(history) - 1, 1)
    n_train = _train_images(root)
    try:
        used = json.loads((root / "train" / "config.json").read_text()).get("device", "cpu")
    except (OSError, ValueError):
        used = "cuda" if torch.cuda.is_available() else "cpu"
    device = "gpu" if str(used).startswith("cuda") else "cpu"
    # Training on a GPU is counted in GPU-hours of wall time; on a CPU in CPU-hours.
    train_s = train["seconds"] if device == "gpu" else cpu(train)
    train_s_per_image_epoch = train_s / (epochs * max(n_train, 1))
    n_predicted = max(predict["extra"].get("particles", 0), 1)
    predict_cpu_s = cpu(predict) / n_predicted
    rest = MILLION - PAPER_STAGE1_IMAGES
    ours = {
        "stage1_h": PAPER_STAGE1_IMAGES * stage1_cpu_s / 3600,
        "train_h": PAPER_TRAIN_IMAGES * epochs * train_s_per_image_epoch / 3600,
        "predict_h": rest * predict_cpu_s / 3600,
    }
    cpu_h = ours["stage1_h"] + ours["predict_h"] + (ours["train_h"] if device == "cpu" else 0)
    gpu_h = ours["train_h"] if device == "gpu" else 0.0
    return {
        "measured": {
            "images": n_total,
            "stage1_cpu_s_per_image": stage1_cpu_s,
            "train_s_per_image_epoch": train_s_per_image_epoch,
            "train_epochs": epochs,
            "train_device": device,
            "predict_cpu_s_per_image": predict_cpu_s,
        },
        "million": {
            "deephemnma (this run)": {"cpu_h": cpu_h, "gpu_h": gpu_h, **ours},
            "deephemnma Stage 1 on every image": {
                "cpu_h": MILLION * stage1_cpu_s / 3600,
                "gpu_h": 0.0,
            },
            **PAPER_COST_1M,
        },
    }


def _train_images(root: Path) -> int:
    try:
        splits = json.loads((root / "train" / "splits.json").read_text())
        return int(splits["counts"]["train"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def format_cost(cost: dict) -> str:
    """The million-image cost comparison as a Markdown table."""
    if not cost:
        return "(cost table: stage timings missing)\n"
    lines = ["| pipeline, 1,000,000 images | CPU-hours | GPU-hours |", "|---|---|---|"]
    for name, row in cost["million"].items():
        lines.append(f"| {name} | {row['cpu_h']:,.1f} | {row['gpu_h']:,.1f} |")
    m = cost["measured"]
    lines.append("")
    lines.append(
        f"Measured here: Stage 1 {m['stage1_cpu_s_per_image']:.3f} CPU-s/image; training "
        f"{m['train_s_per_image_epoch'] * 1000:.1f} ms per image-epoch on {m['train_device']} "
        f"({m['train_epochs']} epochs); prediction + refinement "
        f"{m['predict_cpu_s_per_image']:.3f} CPU-s/image."
    )
    return "\n".join(lines) + "\n"


def run_benchmark(
    scale: str,
    root: str | Path,
    overrides: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> dict:
    """Simulate, run every step, and write ``ROOT/benchmark.json`` and ``benchmark.md``."""
    from deephemnma.pipeline.run import run_project

    root = Path(root).resolve()
    config = benchmark_config(scale, root, overrides)
    config = replace(config, project=replace(config.project, progress=progress))
    log(f"[bold]simulate[/]: {SCALES[scale].n_images} paper-ak images")
    from deephemnma.network.train import resolve_device

    device = str(resolve_device(config.project.device))
    simulate_paper_ak(root, SCALES[scale].n_images, seed, progress, device)
    run_project(config, root, log=log)
    evaluation = json.loads((root / "evaluate" / "evaluation.json").read_text())
    cost = cost_table(root, SCALES[scale].n_images)
    record = {"scale": scale, "evaluation": evaluation, "cost": cost}
    atomic_write_text(root / "benchmark.json", json.dumps(record, indent=2, default=str))
    table = (root / "evaluate" / "table.txt").read_text()
    text = f"# paper-ak benchmark, scale {scale}\n\n```\n{table}\n```\n\n{format_cost(cost)}"
    atomic_write_text(root / "benchmark.md", text)
    return record
