"""``deephemnma train``: Stage 2, a ResNet-34 + MLP network on Stage-1 (or true) labels."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from deephemnma.cli.main import app

_out = Console()


@app.command("train")
def train_command(
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="RELION STAR with the labels: Stage-1 estimates or, for experiments, the "
        "ground truth (angles in °, origins in Å, deephemnmaAmplitudeNN).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder (checkpoints, splits, history.csv, curves.png). "
        "Rerunning the same command resumes.",
    ),
    particles: Path = typer.Option(
        None,
        "--particles",
        help="RELION STAR of the images to train on (default: the --labels file's images); "
        "rows are matched to the labels by rlnImageName.",
    ),
    modes: Path = typer.Option(
        None, "--modes", help="Modes file (.npz); checks that it holds the labelled modes."
    ),
    reference: Path = typer.Option(
        None,
        "--reference",
        help="Structure the modes describe (PDB/mmCIF, or the pseudoatoms of a map); needed "
        "by --synthetic.",
    ),
    recipe: str = typer.Option(
        "default",
        help="'paper': 3 networks, quaternion, L1, Adam 1e-5 ÷10 every 80 epochs, batch 2, "
        "400 epochs. 'default': one network with 3 heads, 6D rotation, AdamW one-cycle, "
        "batch 128, bf16 where fast, rotation augmentation. Options below override it.",
    ),
    epochs: int = typer.Option(None, help="Epochs (paper: 400; default recipe: 60)."),
    batch_size: int = typer.Option(None, help="Global batch size in images (paper: 2)."),
    lr: float = typer.Option(
        None,
        help="Peak learning rate (paper: 1e-5; default recipe: 1e-3 × batch/256, at most 1e-3).",
    ),
    weight_decay: float = typer.Option(None, help="Weight decay (paper: 1e-5)."),
    schedule: str = typer.Option(
        None, help="onecycle | step (÷ 1/gamma every --step-epochs) | constant."
    ),
    step_epochs: int = typer.Option(None, help="Epochs between lr divisions (paper: 80)."),
    rotation: str = typer.Option(None, help="Rotation output: 6d | quaternion (paper)."),
    rotation_loss: str = typer.Option(
        None, help="chordal | geodesic | l1 (L1 on the quaternion, paper)."
    ),
    heads: str = typer.Option(
        None, help="Parameters to learn, comma-separated: amplitudes,rotation,shifts (all)."
    ),
    separate: bool = typer.Option(
        None, "--separate/--shared", help="One network per parameter type (paper) or shared."
    ),
    dropout: float = typer.Option(
        None, help="MLP dropout probability (paper: 0.5; default recipe: 0.1)."
    ),
    loss_weights: str = typer.Option(
        None,
        help="Weights of the per-head losses, e.g. 'amplitudes=1,rotation=0.25,shifts=1'.",
    ),
    augment: str = typer.Option(
        None,
        help="Label-exact augmentation: rotation (any in-plane angle + mirror) | dihedral "
        "(multiples of 90° + mirror) | none; '+shift' (e.g. rotation+shift, or shift alone) "
        "also moves each image to another training image's shift (Fourier translation; the "
        "shift label changes with it).",
    ),
    synthetic: float = typer.Option(
        None,
        help="Share of each training batch (0 ≤ share < 1) whose particle signal is swapped "
        "for the reference rendered with another particle's amplitudes, orientation and "
        "shift: the image keeps its own noise, the labels are exact (docs/network.md). Needs "
        "--reference and --modes, and labels of all three parameter types. 0: off.",
    ),
    cuda_graphs: bool = typer.Option(
        None,
        "--cuda-graphs/--no-cuda-graphs",
        help="On one GPU, replay the network's training forward and backward as CUDA graphs "
        "(a step is otherwise bound by launching ~800 small operations; docs/network.md). "
        "Ignored on the CPU and under torchrun. Default: on where it applies (steps 17% "
        "faster on an H100); --no-cuda-graphs for the ordinary passes.",
    ),
    normalization: str = typer.Option(
        None, help="Input normalization: per-image (mean 0, std 1) | dataset | none."
    ),
    precision: str = typer.Option(
        None, help="auto (bf16 where the hardware is fast at it) | bf16 | fp32."
    ),
    patience: int = typer.Option(
        None, help="Early stopping: epochs without a lower validation loss (0: off)."
    ),
    val: str = typer.Option(
        None, help="Validation split: count, fraction (<1) or auto = min(2,000, 10 %)."
    ),
    test: str = typer.Option(
        None, help="Small test split: count, fraction or auto = min(2,000, 10 %)."
    ),
    labels_suffix: str = typer.Option(
        "", help="Suffix of the label amplitude columns (deephemnmaAmplitude07 + SUFFIX)."
    ),
    seed: int = typer.Option(None, help="Seed for splits, weights, batches, augmentation."),
    workers: int = typer.Option(
        None, "--workers", help="Data-loading processes (-1: auto, 0 on CPU)."
    ),
    max_minutes: float = typer.Option(
        None,
        help="Time budget in minutes, start-up included: a few steps are timed first and "
        "the run gets as many epochs (at most --epochs) as fit; the learning-rate schedule "
        "spans them. 0: none.",
    ),
    preload: str = typer.Option(
        None,
        help="Load the training and validation images onto the device once: auto (on a GPU "
        "when they take ≤ 30 % of its memory; 14,000 images of 128² take 0.9 GB) | yes | no.",
    ),
    device: str = typer.Option("auto", help="cpu | cuda | cuda:N | auto."),
    threads: int = typer.Option(None, help="CPU threads for torch (default: torch's choice)."),
    restart: bool = typer.Option(False, help="Ignore an existing checkpoint and start over."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train the network to predict normal-mode amplitudes, orientations (RELION Euler angles
    in degrees) and shifts (Å) from particle images. Multi-GPU: launch with
    'torchrun --nproc_per_node G -m deephemnma train …'."""
    from deephemnma.network.train import recipe_config, train

    config = recipe_config(
        recipe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        step_epochs=step_epochs,
        rotation=rotation,
        rotation_loss=rotation_loss,
        heads=None if heads is None else tuple(h.strip() for h in heads.split(",") if h.strip()),
        separate=separate,
        dropout=dropout,
        loss_weights=None if loss_weights is None else _parse_weights(loss_weights),
        augment=augment,
        normalization=normalization,
        precision=precision,
        patience=patience,
        val=val,
        test=test,
        seed=seed,
        num_workers=workers,
        preload=preload,
        max_minutes=max_minutes,
        synthetic=synthetic,
        cuda_graphs=cuda_graphs,
    )
    result = train(
        labels,
        out,
        config,
        particles=particles,
        modes=modes,
        labels_suffix=labels_suffix,
        device=device,
        threads=threads,
        progress=not quiet,
        restart=restart,
        log=_out.print,
        reference=reference,
    )
    best = result["best"]
    if best["epoch"] is not None and os.environ.get("RANK", "0") == "0":
        _out.print(
            f"best epoch {best['epoch']} (validation loss {best['val_loss']:.4g}): "
            f"{result['checkpoint']}"
        )


def _parse_weights(text: str) -> dict:
    from deephemnma.errors import InputError

    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(
                "not a weight", field="--loss-weights", expected="head=number,…", found=part
            ) from None
    return weights
