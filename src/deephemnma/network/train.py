"""Stage 2 training: images + Stage-1 (or ground-truth) labels → a checkpointed network.

Two recipes (:data:`RECIPES`; every field can be overridden):

- ``paper`` (§2.2): three separate ResNet-34 + MLP networks (amplitudes, quaternion,
  shifts), L1 loss, Adam, lr 1e-5 divided by 10 every 80 epochs, weight decay 1e-5 (L2, added
  to the gradients as Adam does), dropout 0.5, batch 2, 400 epochs, float32, no augmentation.
  Targets are normalized (mean 0, std 1 per amplitude and shift; the paper does not say) and
  the quaternion of ``Aᵀ`` with ``w ≥ 0`` is the rotation target.
- ``default``: one shared network with three heads, a 6D rotation output with the chordal
  loss ``‖R̂ − R‖²_F`` (no ``q ≡ −q`` ambiguity), AdamW with a one-cycle schedule peaking at
  1e-3 × batch/256 (at most 1e-3; :func:`scaled_lr`), batch 128, bf16 autocast and
  channels-last where the hardware has fast bf16 (CUDA; CPUs with AMX or AVX-512 BF16), and
  exact in-plane rotation + mirror augmentation (:mod:`deephemnma.network.data`).

Output folder: ``config.json`` (inputs, configuration, versions, timings), ``splits.json``
and ``splits/{train,val,test}.star``, ``checkpoint.pt`` (every epoch, for resuming),
``best.pt`` (lowest validation loss, for ``predict``), ``history.csv`` and ``curves.png``.

**Resume**: rerunning the same command continues from ``checkpoint.pt``. Every random draw
is seeded by (seed, epoch[, batch, rank]) — the batch order, the augmentation, dropout — and
the model, optimizer and scheduler states are restored, so the resumed loss curve is the one
an uninterrupted run gives (bit for bit on the same machine and thread count).

**Multi-GPU**: run under ``torchrun --nproc_per_node G``; each rank takes ``batch/G`` images of
every global batch, gradients are averaged by DistributedDataParallel (NCCL on CUDA, gloo on
CPU); rank 0 writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from deephemnma import __version__
from deephemnma.errors import InputError, check_settings
from deephemnma.network.checkpoint import BEST, LAST, CheckpointWriter, read_checkpoint
from deephemnma.network.data import (
    AUGMENTATIONS,
    InputNormalization,
    Labels,
    ParticleBatches,
    ParticleDataset,
    PreloadedBatches,
    augment_batch,
    available_heads,
    batch_seed,
    make_splits,
    read_labels,
    read_splits,
    write_splits,
)
from deephemnma.network.model import (
    HEADS,
    REGRESSION_LOSSES,
    ROTATION_LOSSES,
    ROTATIONS,
    DeepHEMNMANet,
    LossConfig,
    NetworkSpec,
    TargetScaling,
    compute_losses,
    decode,
)
from deephemnma.network.synthetic import SignalSwap, make_signal_swap, swap_signals

__all__ = ["RECIPES", "TrainConfig", "recipe_config", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Learning rates per step of the global batch; epochs over the
    training split; ``patience``: epochs without a lower validation loss before stopping
    (0: never stop early); ``synthetic``: the share of each training batch whose particle
    signal is swapped for other labels' (:mod:`deephemnma.network.synthetic`; needs the
    reference)."""

    recipe: str = "default"
    epochs: int = 60
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.15
    step_epochs: int = 80
    step_gamma: float = 0.1
    heads: tuple[str, ...] = HEADS
    separate: bool = False
    rotation: str = "6d"
    rotation_loss: str = "chordal"
    regression_loss: str = "l1"
    loss_weights: dict = field(
        default_factory=lambda: {"amplitudes": 1.0, "rotation": 0.25, "shifts": 1.0}
    )
    dropout: float = 0.1
    augment: str = "rotation"
    normalization: str = "per-image"
    precision: str = "auto"
    channels_last: bool = True
    patience: int = 0
    grad_clip: float = 0.0
    val: str = "auto"
    test: str = "auto"
    seed: int = 0
    num_workers: int = -1
    preload: str = "auto"
    max_minutes: float = 0.0
    synthetic: float = 0.0
    cuda_graphs: bool | None = None  # None: where they apply (one CUDA process)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "≥ 1"),
            (self.batch_size >= 1, "batch_size", "≥ 1"),
            (self.optimizer in ("adam", "adamw", "sgd"), "optimizer", "adam | adamw | sgd"),
            (self.lr > 0, "lr", "> 0"),
            (self.schedule in ("step", "onecycle", "constant"), "schedule", "step | onecycle"),
            (bool(self.heads) and set(self.heads) <= set(HEADS), "heads", ", ".join(HEADS)),
            (self.rotation in ROTATIONS, "rotation", " | ".join(ROTATIONS)),
            (self.rotation_loss in ROTATION_LOSSES, "rotation_loss", " | ".join(ROTATION_LOSSES)),
            (
                self.rotation_loss != "l1" or self.rotation == "quaternion",
                "rotation_loss",
                "l1 only with --rotation quaternion",
            ),
            (
                self.regression_loss in REGRESSION_LOSSES,
                "regression_loss",
                " | ".join(REGRESSION_LOSSES),
            ),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (self.augment in AUGMENTATIONS, "augment", " | ".join(AUGMENTATIONS)),
            (self.precision in ("auto", "fp32", "bf16"), "precision", "auto | fp32 | bf16"),
            (self.patience >= 0, "patience", "≥ 0"),
            (self.preload in PRELOAD_CHOICES, "preload", " | ".join(PRELOAD_CHOICES)),
            (self.max_minutes >= 0, "max_minutes", "≥ 0 (0: no time budget)"),
            (0 <= self.synthetic < 1, "synthetic", "a share of each batch in [0, 1)"),
            (
                set(self.loss_weights) <= set(HEADS)
                and all(float(w) >= 0 for w in self.loss_weights.values()),
                "loss_weights",
                "non-negative weights of " + ", ".join(HEADS),
            ),
        ]
        check_settings(self, checks, "training")

    def to_dict(self) -> dict:
        return {**asdict(self), "heads": list(self.heads)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "heads" in values:
            values["heads"] = tuple(values["heads"])
        return cls(**values)


RECIPES: dict[str, dict] = {
    "paper": {
        "epochs": 400,
        "batch_size": 2,
        "optimizer": "adam",
        "lr": 1e-5,
        "weight_decay": 1e-5,
        "schedule": "step",
        "step_epochs": 80,
        "step_gamma": 0.1,
        "separate": True,
        "rotation": "quaternion",
        "rotation_loss": "l1",
        "regression_loss": "l1",
        "dropout": 0.5,
        "loss_weights": {"amplitudes": 1.0, "rotation": 1.0, "shifts": 1.0},
        "augment": "none",
        "precision": "fp32",
        "channels_last": False,
        "patience": 0,
    },
    "default": {},
}
"""Overrides of :class:`TrainConfig`'s defaults per recipe (the defaults are ``default``)."""

# Settings that may change when a run is resumed (they do not change what was computed).
_RESUMABLE = {"epochs", "patience", "num_workers", "preload", "cuda_graphs"}

PRELOAD_CHOICES = ("auto", "yes", "no")
PRELOAD_DEVICE_FRACTION = 0.3
"""``preload="auto"`` loads the training and validation images onto a GPU when they take at
most this share of its memory (the network's activations need the rest)."""


LR_REFERENCE_BATCH = 256
"""The default recipe's peak rate (``TrainConfig.lr``, 1e-3) is the one measured at batch 256
on a GPU (BENCHMARK.md's calibration, docs/gpu.md run 1). Smaller batches get a
proportionally smaller peak rate (:func:`scaled_lr`): at 1e-3, batch 128 (GPU run 2) and
batch 64 (CPU) drove the training loss up once the warm-up passed 5e-4 (docs/network.md)."""


def scaled_lr(batch_size: int, lr: float = TrainConfig.lr) -> float:
    """``lr × batch / 256`` below batch 256, ``lr`` from there on (linear scaling is not
    safe upwards with Adam, and nothing larger has been measured)."""
    return lr * min(1.0, batch_size / LR_REFERENCE_BATCH)


def recipe_config(recipe: str = "default", **overrides) -> TrainConfig:
    """The named recipe with ``overrides`` (None values are ignored). The default recipe's
    learning rate, unless given, follows the batch size (:func:`scaled_lr`)."""
    if recipe not in RECIPES:
        raise InputError(
            "unknown recipe", field="recipe", expected=" | ".join(RECIPES), found=recipe
        )
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    if recipe == "default" and "lr" not in values:
        values["lr"] = scaled_lr(values.get("batch_size", TrainConfig.batch_size))
    config = TrainConfig(recipe=recipe, **values)
    config.validate()
    return config


# --------------------------------------------------------------------------------------------
# Devices, precision, distribution


def bf16_fast(device: torch.device) -> bool:
    """Whether bf16 autocast pays off on ``device`` (CUDA ≥ Ampere, or a CPU with AMX /
    AVX-512 BF16 as oneDNN reports it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_fast_kernels(device: torch.device) -> None:
    """Let cuDNN time its algorithms once per input shape (fixed here) and keep the fastest."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available here", field="--device", found=device)
    return dev


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def _all_sum(values: torch.Tensor, d: _Dist, device: torch.device) -> torch.Tensor:
    if d.world > 1:
        values = values.to(device)
        dist.all_reduce(values)
    return values.cpu()


# --------------------------------------------------------------------------------------------
# Data set-up


def _join_labels(particles, labels_table):
    """Particle rows and label rows of the same images (labels may cover a subset)."""
    from deephemnma.evaluate import match_rows

    label_rows, particle_rows, _ = match_rows(labels_table, particles)
    if len(label_rows) == 0:
        raise InputError("no labelled particle", path=labels_table.path, field="rlnImageName")
    return particle_rows, label_rows


def _num_workers(config: TrainConfig, device: torch.device) -> int:
    if config.num_workers >= 0:
        return config.num_workers
    if device.type == "cuda":
        return min(8, max(1, (os.cpu_count() or 2) - 1))
    return 0


def _use_preload(config: TrainConfig, device: torch.device, n_images: int, size: int) -> bool:
    if config.preload != "auto":
        return config.preload == "yes"
    if device.type != "cuda":
        return False  # a CPU trains far slower than one loader process reads
    total = torch.cuda.get_device_properties(device).total_memory
    return PreloadedBatches.nbytes(n_images, size) <= PRELOAD_DEVICE_FRACTION * total


def _batches(dataset, sampler, workers: int, device: torch.device, preload: bool):
    if preload:
        return PreloadedBatches(dataset, sampler, device)
    return _loader(dataset, sampler, workers, device)


def _loader(dataset, sampler, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
    )


def _to_device(
    batch: dict,
    device: torch.device,
    channels_last: bool,
    augment: str,
    normalization: InputNormalization,
    pixel_size_A: float | None = None,
    synthetic: SignalSwap | None = None,
) -> dict:
    """Move a batch to ``device``; swap the signal of part of it (``synthetic``), normalize
    its images and apply the label-exact augmentation there (when the batch carries a seed);
    make the images channels-last."""
    # Positions stay on the host (only their count is used); moving them unpinned would
    # stall the GPU every step.
    out = {
        k: v if k == "positions" else v.to(device, non_blocking=True)
        for k, v in batch.items()
        if k != "seed"
    }
    generator = torch.Generator().manual_seed(int(batch["seed"])) if "seed" in batch else None
    if synthetic is not None and generator is not None:
        images, *labels = swap_signals(
            synthetic, out["images"][:, 0], batch["positions"], out["amplitudes"],
            out["matrices"], out["shifts_A"], generator,
        )  # fmt: skip
        out["images"] = images[:, None]
        out.update(zip(("amplitudes", "matrices", "shifts_A"), labels, strict=True))
    out["images"] = normalization.apply(out["images"])
    if augment != "none" and generator is not None:
        images, matrices, shifts = augment_batch(
            out["images"][:, 0],
            out.get("matrices"),
            out.get("shifts_A"),
            augment,
            generator,
            pixel_size_A,
        )
        out["images"] = images[:, None]
        if matrices is not None:
            out["matrices"] = matrices
        if shifts is not None:
            out["shifts_A"] = shifts
    if channels_last:
        out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
    return out


# --------------------------------------------------------------------------------------------
# Optimizer and schedule


def _optimizer(model: torch.nn.Module, config: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernels are several times faster than the per-tensor loop on CPU.
    fused = {"fused": True} if params and params[0].device.type in ("cpu", "cuda") else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )


def _scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """Stepped once per optimizer step; "step" divides the lr by 1/gamma every step_epochs."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * steps_per_epoch,
            pct_start=config.warmup_fraction,
            div_factor=25.0,
            final_div_factor=1e3,
        )
    step = config.step_epochs * steps_per_epoch if config.schedule == "step" else 10**12
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.step_gamma)


# --------------------------------------------------------------------------------------------
# One epoch


def _run_epoch(
    model,
    loader,
    spec: NetworkSpec,
    scaling: TargetScaling,
    loss_config: LossConfig,
    device: torch.device,
    config: TrainConfig,
    d: _Dist,
    optimizer=None,
    scheduler=None,
    bar=None,
    *,
    normalization: InputNormalization,
    pixel_size_A: float | None = None,
    synthetic: SignalSwap | None = None,
) -> dict:
    """Train (with ``optimizer``) or validate; returns mean losses and, for validation,
    physical errors (amplitude MAE over modes, angle error in degrees, shift MAE in Å).
    ``normalization``: applied to the loader's raw images on ``device``; ``pixel_size_A``:
    theirs (shift augmentation); ``synthetic``: the signal swap of training batches."""
    training = optimizer is not None
    model.train(training)
    use_bf16 = _use_bf16(config, device)
    sums: dict[str, torch.Tensor | float] = {}
    count = 0
    errors = {"amp": 0.0, "angle": 0.0, "shift": 0.0}  # device tensors once added to
    grad = torch.enable_grad() if training else torch.no_grad()
    with grad:
        for batch in loader:
            if len(batch["positions"]) == 0:  # a rank's share of a short last batch
                continue
            augment = config.augment if training else "none"
            batch = _to_device(
                batch, device, config.channels_last, augment, normalization, pixel_size_A,
                synthetic if training else None,
            )  # fmt: skip
            # A graphed forward (--cuda-graphs) needs autocast without its weight cache. The
            # cache saves nothing here anyway: each weight is cast once per forward.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16,
                                cache_enabled=False):  # fmt: skip
                raw = model(batch["images"])
            losses = compute_losses(raw, batch, spec, scaling, loss_config)
            if training:
                optimizer.zero_grad(set_to_none=True)
                losses["total"].backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
            n = batch["images"].shape[0]
            count += n
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double() * n  # no host sync per step
            if not training:
                phys = decode(raw, spec, scaling)
                if "amplitudes" in phys:
                    errors["amp"] += (phys["amplitudes"] - batch["amplitudes"]).abs().sum().double()
                if "matrices" in phys:
                    from deephemnma.geometry import angular_error_deg

                    err = angular_error_deg(phys["matrices"], batch["matrices"].double())
                    errors["angle"] += err.sum().double()
                if "shifts_A" in phys:
                    errors["shift"] += (phys["shifts_A"] - batch["shifts_A"]).abs().sum().double()
            if bar is not None:
                bar.advance(n * d.world)
    keys = sorted(sums)
    totals = _all_sum(
        torch.tensor(
            [float(sums[k]) for k in keys] + [count] + [float(e) for e in errors.values()],
            dtype=torch.float64,
        ),
        d,
        device,
    )
    n = max(float(totals[len(keys)]), 1.0)
    result = {k: float(totals[i]) / n for i, k in enumerate(keys)}
    if not training:
        amp, angle, shift = (float(v) for v in totals[len(keys) + 1 :])
        if "amplitudes" in spec.heads:
            result["amp_mae"] = amp / (n * spec.n_amplitudes)
        if "rotation" in spec.heads:
            result["angle_deg"] = angle / n
        if "shifts" in spec.heads:
            result["shift_mae_A"] = shift / (2 * n)
    return result


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.precision == "bf16":
        return True
    if config.precision == "fp32":
        return False
    return bf16_fast(device)


# --------------------------------------------------------------------------------------------
# Files


def _write_history(folder: Path, history: list[dict]) -> None:
    from deephemnma.io.atomic import atomic_write_text

    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(folder / "history.csv", buffer.getvalue())


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Training and validation loss per epoch (log scale) and validation errors."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deephemnma.io.atomic import atomic_path

    epochs = [row["epoch"] for row in history]
    panels = [("loss", ["train_total", "val_total"], True)]
    for key, label in (("val_amp_mae", "amp. MAE"), ("val_angle_deg", "angle [°]")):
        if key in history[0]:
            panels.append((label, [key], False))
    if "val_shift_mae_A" in history[0]:
        panels.append(("shift MAE [Å]", ["val_shift_mae_A"], False))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, keys, log) in zip(axes[0], panels, strict=True):
        for key in keys:
            ax.plot(epochs, [row[key] for row in history], label=key.replace("_total", ""))
        if log:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _write_config(folder: Path, record: dict) -> None:
    from deephemnma.io.atomic import atomic_write_text

    atomic_write_text(folder / "config.json", json.dumps(record, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------------
# Training: set-up steps


@dataclass(frozen=True)
class _Inputs:
    """Images and labels, joined: ``labels`` rows align with ``particle_rows``."""

    particle_table: object
    particle_rows: np.ndarray
    labels: Labels
    heads: tuple[str, ...]
    image_size: int
    pixel_size_A: float


def _read_inputs(labels, particles, modes, labels_suffix, config, d, log) -> _Inputs:
    from deephemnma.io.star import (
        amplitude_columns,
        common_image_size_px,
        common_pixel_size_A,
        read_particles,
        select,
    )

    labels_table = read_particles(labels)
    particle_table = read_particles(particles) if particles is not None else labels_table
    have = available_heads(labels_table, labels_suffix)
    heads = tuple(h for h in config.heads if h in have)
    if not heads:
        raise InputError(
            "the labels have none of the requested parameters",
            path=labels,
            expected=", ".join(config.heads),
        )
    missing = [h for h in config.heads if h not in have]
    if missing and d.main:
        log(f"labels lack {', '.join(missing)}: training {', '.join(heads)} only")
    particle_rows, label_rows = _join_labels(particle_table, labels_table)
    label_subset = select(labels_table, label_rows)
    mode_filter = None
    if modes is not None and "amplitudes" in heads:
        from deephemnma.nma.modes import load_modes

        mode_filter = list(amplitude_columns(label_subset, labels_suffix))
        load_modes(modes).index_of(mode_filter)  # InputError if the modes file lacks one
    return _Inputs(
        particle_table=particle_table,
        particle_rows=particle_rows,
        labels=read_labels(label_subset, heads, mode_filter, labels_suffix),
        heads=heads,
        image_size=common_image_size_px(particle_table),
        pixel_size_A=common_pixel_size_A(particle_table),
    )


def _previous_run(
    last_path: Path, config: TrainConfig, restart: bool, inputs_sha256: dict[str, str]
) -> tuple[dict | None, TrainConfig]:
    """The checkpoint to resume from, if any, and the configuration to go on with (a time
    budget's run keeps the epoch count it planned); InputError if it was made with other
    settings or on input files of other contents (``inputs_sha256``:
    :func:`deephemnma.io.digest.files_sha256`)."""
    from deephemnma.io.digest import changed_files

    if restart or not last_path.exists():
        return None, config
    previous = read_checkpoint(last_path)
    # Checkpoints of versions before the fingerprints have none to compare.
    other_files = changed_files(previous.get("inputs_sha256", inputs_sha256), inputs_sha256)
    if other_files:
        changed = ", ".join(f"{name} file" for name in other_files)
        raise InputError(
            f"the folder holds a run on other input files (changed: {changed})",
            path=last_path,
            expected="the same files to resume, --restart, or a new folder",
        )
    old = TrainConfig.from_dict(previous["config"])
    if config.max_minutes > 0 and old.max_minutes == config.max_minutes:
        config = replace(config, epochs=old.epochs)
    changed = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in _RESUMABLE and getattr(old, f.name) != getattr(config, f.name)
    ]
    if config.schedule == "onecycle" and old.epochs != config.epochs:
        changed.append("epochs (a one-cycle schedule spans the epochs first planned)")
    if changed:
        raise InputError(
            "the folder holds a run with other settings",
            path=last_path,
            field=", ".join(changed),
            expected="the same settings to resume, --restart, or a new folder",
        )
    return previous, config


def _splits(out: Path, inputs: _Inputs, config: TrainConfig, previous, d: _Dist):
    """Positions (into the labelled particles) of train / val / test; written once, then
    read back, so a resumed run uses the same split."""
    rows = inputs.particle_rows
    if previous is not None and (out / "splits.json").exists():
        position_of_row = {int(r): i for i, r in enumerate(rows)}
        return {
            k: np.array([position_of_row[int(r)] for r in v], dtype=np.int64)
            for k, v in read_splits(out).items()
        }
    splits = make_splits(len(rows), config.val, config.test, config.seed)
    if d.main:
        write_splits(
            out, inputs.particle_table, {k: rows[v] for k, v in splits.items()}, config.seed
        )
    if d.world > 1:
        dist.barrier()
    return splits


def _fit_scalings(inputs: _Inputs, splits, images, config: TrainConfig, previous):
    """Input normalization and target scaling: from the checkpoint, or fitted on the
    training split."""
    if previous is not None:
        return (
            InputNormalization.from_dict(previous["normalization"]),
            TargetScaling.from_dict(previous["scaling"]),
        )
    sample = None
    if config.normalization == "dataset":
        pick = inputs.particle_rows[splits["train"][:1000]]
        sample = images.images(pick)
    train_labels = inputs.labels.take(splits["train"])
    return (
        InputNormalization.fit(config.normalization, sample),
        TargetScaling.fit(train_labels.amplitudes, train_labels.shifts_A),
    )


def _check_batch(config: TrainConfig, n_train: int, d: _Dist) -> None:
    if config.batch_size % d.world:
        raise InputError(
            "the batch size must be a multiple of the number of processes",
            field="--batch-size",
            expected=f"a multiple of {d.world}",
            found=str(config.batch_size),
        )
    if n_train < config.batch_size:
        raise InputError(
            "fewer training particles than one batch",
            field="--batch-size",
            expected=f"≤ {n_train}",
            found=str(config.batch_size),
        )


def _build_model(spec: NetworkSpec, config: TrainConfig, dev, previous, d: _Dist):
    """The network (seeded initial weights, or the checkpoint's) and its DDP wrapper."""
    torch.manual_seed(config.seed)
    model = DeepHEMNMANet(spec).to(dev)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if previous is not None:
        model.load_state_dict(previous["model"])
    if d.world == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    return model, DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None
    )


def _graph(model, config: TrainConfig, image_size: int, dev, d: _Dist, log) -> bool:
    """The training passes as CUDA graphs unless ``--no-cuda-graphs``, where they can be:
    on one CUDA process. Only an explicit ``--cuda-graphs`` says where it is ignored; the
    default stays quiet."""
    from deephemnma.network.graphs import graph_training_passes

    if config.cuda_graphs is False:
        return False
    asked = config.cuda_graphs is True
    say = log if d.main else (lambda *_: None)
    if d.world > 1 or dev.type != "cuda":
        if asked:
            where = "with several processes (DDP)" if d.world > 1 else "not on a CUDA device"
            say(f"--cuda-graphs: ignored ({where})")
        return False
    return graph_training_passes(
        model, config.batch_size, image_size, channels_last=config.channels_last,
        bf16=_use_bf16(config, dev), log=say,
    )  # fmt: skip


@dataclass
class _Progress:
    """What a checkpoint remembers of the run so far (mutable during training)."""

    epoch: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "val_loss": math.inf})
    bad_epochs: int = 0

    @classmethod
    def of(cls, previous: dict | None) -> _Progress:
        if previous is None:
            return cls()
        return cls(
            int(previous["epoch"]),
            list(previous["history"]),
            dict(previous["best"]),
            int(previous["bad_epochs"]),
        )

    def update(self, row: dict, val_loss: float) -> bool:
        """Record an epoch; True when the validation loss improved."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        if val_loss < self.best["val_loss"]:
            self.best, self.bad_epochs = {"epoch": self.epoch, "val_loss": val_loss}, 0
            return True
        self.bad_epochs += 1
        return False

    def stopped(self, patience: int) -> bool:
        return patience > 0 and self.bad_epochs >= patience


def _run_record(labels, particles, modes, labels_suffix, inputs, splits, config, dev, d) -> dict:
    """The start of ``config.json``: inputs, settings, machine."""
    return {
        "command": "train",
        "deephemnma": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "device": str(dev),
        "world_size": d.world,
        "threads": torch.get_num_threads(),
        "bf16": _use_bf16(config, dev),
        "inputs": {
            "labels": str(labels),
            "particles": str(particles if particles is not None else labels),
            "modes": None if modes is None else str(modes),
            "labels_suffix": labels_suffix,
        },
        "heads": list(inputs.heads),
        "mode_numbers": _mode_numbers(inputs),
        "image_size": inputs.image_size,
        "pixel_size_A": inputs.pixel_size_A,
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "config": config.to_dict(),
    }


def _signal_swap(reference, modes, inputs: _Inputs, splits, images, config, dev):
    """The training set's signal swap on ``dev``, or None when ``config.synthetic`` is 0."""
    if config.synthetic <= 0:
        return None
    if reference is None or modes is None:
        raise InputError(
            "synthetic training images are rendered from the reference and its modes",
            field="--reference" if reference is None else "--modes",
            expected="the structure and the modes file the labels were made with",
        )
    train_rows = inputs.particle_rows[splits["train"]]
    swap = make_signal_swap(
        str(reference), str(modes), _mode_numbers(inputs), inputs.particle_table, images,
        train_rows, inputs.labels.take(splits["train"]), config.synthetic,
        inputs.image_size, inputs.pixel_size_A,
    )  # fmt: skip
    return swap.to(dev)


def _mode_numbers(inputs: _Inputs) -> list[int]:
    numbers = inputs.labels.mode_numbers
    return [] if numbers is None else [int(m) for m in numbers]


# --------------------------------------------------------------------------------------------
# Training


def train(
    labels: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    particles: str | Path | None = None,
    modes: str | Path | None = None,
    labels_suffix: str = "",
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    restart: bool = False,
    stop_after_epochs: int | None = None,
    log=print,
    reference: str | Path | None = None,
) -> dict:
    """Train a network on ``particles`` (images; default: the labels file's own images) with
    the labels of ``labels`` (matched by ``rlnImageName``), into ``out_dir``.

    Resumes from ``out_dir/checkpoint.pt`` unless ``restart``. ``stop_after_epochs`` ends this
    call after that many epochs, as a kill would (for tests). Returns a summary: ``history``
    (one dict per epoch), ``best`` (epoch, validation loss), ``epochs_done``,
    ``epochs_this_run``, ``stopped_early``, ``checkpoint`` (best.pt), ``splits`` (STAR paths),
    ``train_seconds``. ``reference``: the structure the modes describe, needed by
    ``config.synthetic`` (:mod:`deephemnma.network.synthetic`).
    """
    from deephemnma.io.digest import files_sha256
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import phase_flipped
    from deephemnma.progress import progress_bar

    config.validate()
    t_start = time.perf_counter()
    d, dev = _init_distributed(resolve_device(device))
    use_fast_kernels(dev)
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    last_path, best_path = out / LAST, out / BEST

    inputs = _read_inputs(labels, particles, modes, labels_suffix, config, d, log)
    inputs_sha256 = files_sha256(
        {"labels": labels, "particles": particles, "modes": modes, "reference": reference}
    )
    previous, config = _previous_run(last_path, config, restart, inputs_sha256)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    splits = _splits(out, inputs, config, previous, d)
    images = ParticleImages(inputs.particle_table)
    normalization, scaling = _fit_scalings(inputs, splits, images, config, previous)
    n_train = len(splits["train"])
    _check_batch(config, n_train, d)

    spec = NetworkSpec(
        n_amplitudes=len(_mode_numbers(inputs)),
        heads=inputs.heads,
        rotation=config.rotation,
        separate=config.separate,
        dropout=config.dropout,
    )
    model, net = _build_model(spec, config, dev, previous, d)
    train_sampler = ParticleBatches(
        n_train,
        config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        augment=config.augment != "none" or config.synthetic > 0,
        rank=d.rank,
        world_size=d.world,
    )
    val_batch = max(config.batch_size, 64 * d.world)
    val_sampler = ParticleBatches(len(splits["val"]), val_batch, rank=d.rank, world_size=d.world)
    workers = _num_workers(config, dev)
    rows, labs = inputs.particle_rows, inputs.labels
    preload = _use_preload(
        config, dev, len(splits["train"]) + len(splits["val"]), inputs.image_size
    )
    train_loader = _batches(
        ParticleDataset(images, rows[splits["train"]], labs.take(splits["train"])),
        train_sampler,
        workers,
        dev,
        preload,
    )
    val_loader = _batches(
        ParticleDataset(images, rows[splits["val"]], labs.take(splits["val"])),
        val_sampler,
        workers,
        dev,
        preload,
    )
    synthetic = _signal_swap(reference, modes, inputs, splits, images, config, dev)
    optimizer = _optimizer(model, config)
    loss_config = LossConfig(
        config.regression_loss, config.rotation_loss, dict(config.loss_weights)
    )
    graphed = _graph(model, config, inputs.image_size, dev, d, log)
    writer = CheckpointWriter()
    if previous is None and config.max_minutes > 0:
        batches = (train_loader, val_loader)
        config = _fit_epochs(
            config, model, net, batches, optimizer, spec, scaling, loss_config, dev, d,
            normalization, t_start, out, log, writer, inputs.pixel_size_A, synthetic,
        )  # fmt: skip
    scheduler = _scheduler(optimizer, config, len(train_sampler))
    if previous is not None:
        optimizer.load_state_dict(previous["optimizer"])
        scheduler.load_state_dict(previous["scheduler"])
    state = _Progress.of(previous)
    base_state = {
        "deephemnma": __version__,
        "spec": spec.to_dict(),
        "normalization": normalization.to_dict(),
        "scaling": scaling.to_dict(),
        "mode_numbers": _mode_numbers(inputs),
        "image_size": inputs.image_size,
        "pixel_size_A": inputs.pixel_size_A,
        "phase_flipped": phase_flipped(inputs.particle_table),
        "config": config.to_dict(),
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "inputs_sha256": inputs_sha256,
    }
    record = _run_record(labels, particles, modes, labels_suffix, inputs, splits, config, dev, d)
    record["cuda_graphs_active"] = bool(graphed)
    if synthetic is not None:
        record["inputs"]["reference"] = str(reference)
        record["synthetic_signal_scale"] = synthetic.scale
    if d.main:
        log(
            f"training {', '.join(inputs.heads)} on {n_train} images ({inputs.image_size}², "
            f"{inputs.pixel_size_A:.3g} Å/px), validating on {len(splits['val'])}; recipe "
            f"{config.recipe}, {config.epochs} epochs × {len(train_sampler)} steps of "
            f"{config.batch_size}, {dev}{' bf16' if record['bf16'] else ''}"
            + (", images preloaded on the device" if preload else "")
            + (f", resuming after epoch {state.epoch}" if state.epoch else "")
        )

    first = state.epoch
    last = (
        config.epochs
        if stop_after_epochs is None
        else min(config.epochs, first + stop_after_epochs)
    )
    train_seconds = 0.0
    total = max(last - first, 0) * len(train_sampler) * config.batch_size
    # closing: the checkpoint in flight is waited for however training ends (complete files).
    with progress_bar(total, "train", enabled=progress and d.main) as bar, closing(writer):
        for epoch in range(first, last):
            if state.stopped(config.patience):
                break
            t0 = time.perf_counter()
            train_sampler.set_epoch(epoch)
            torch.manual_seed(batch_seed(config.seed, epoch, 2**31, d.rank))  # dropout
            train_stats = _run_epoch(
                net, train_loader, spec, scaling, loss_config, dev, config, d,
                optimizer, scheduler, bar, normalization=normalization,
                pixel_size_A=inputs.pixel_size_A, synthetic=synthetic,
            )  # fmt: skip
            t1 = time.perf_counter()
            # Validation on the unwrapped model: no collective inside, so ranks may differ.
            val_stats = _run_epoch(
                model, val_loader, spec, scaling, loss_config, dev, config, d,
                normalization=normalization,
            )  # fmt: skip
            train_seconds += t1 - t0
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v for k, v in train_stats.items()})
            row.update({f"val_{k}": v for k, v in val_stats.items()})
            row.update(
                {
                    "train_s": t1 - t0,
                    "val_s": time.perf_counter() - t1,
                    "train_img_per_s": n_train / (t1 - t0),
                }
            )
            improved = state.update(row, val_stats["total"])
            if d.main:
                snapshot = {
                    **base_state,
                    "model": model.state_dict(),
                    "epoch": state.epoch,
                    "history": state.history,
                    "best": state.best,
                    "bad_epochs": state.bad_epochs,
                }
                resume = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                # Written while the next epoch trains; a kill -9 leaves the last complete one.
                host = writer.snapshot({"snapshot": snapshot, "resume": resume})
                files = [(best_path, host["snapshot"])] if improved else []
                writer.write([*files, (last_path, {**host["snapshot"], **host["resume"]})])
                _write_history(out, state.history)
                log(_epoch_line(row, config.epochs))
            if d.world > 1:
                dist.barrier()
    stopped_early = state.stopped(config.patience)
    if d.main:
        plot_curves(state.history, out / "curves.png")
        record["timings"] = {
            "this_run_s": time.perf_counter() - t_start,
            "train_s_this_run": train_seconds,
            "epochs_this_run": state.epoch - first,
        }
        record["result"] = {
            "epochs_done": state.epoch,
            "best": state.best,
            "stopped_early": stopped_early,
            "last": state.history[-1] if state.history else None,
        }
        _write_config(out, record)
        if stopped_early:
            log(f"early stop: no validation improvement in {config.patience} epochs")
    return {
        "epochs_done": state.epoch,
        "epochs_this_run": state.epoch - first,
        "best": state.best,
        "stopped_early": stopped_early,
        "history": state.history,
        "checkpoint": str(best_path),
        "splits": {k: str(out / "splits" / f"{k}.star") for k in splits},
        "train_seconds": train_seconds,
    }


def _fit_epochs(
    config: TrainConfig,
    model,
    net,
    batches,
    optimizer,
    spec,
    scaling,
    loss_config,
    dev: torch.device,
    d: _Dist,
    normalization,
    started: float,
    out: Path,
    log,
    writer: CheckpointWriter,
    pixel_size_A: float | None = None,
    synthetic: SignalSwap | None = None,
) -> TrainConfig:
    """``config`` with as many epochs (at most ``config.epochs``) as fit ``max_minutes``
    counted from ``started``. A few training steps, one validation pass and one checkpoint
    (its copy to the host, and its background write where that outlasts an epoch) are timed
    first; the network and the optimizer are then put back as they were, so
    the training that follows is exactly a run planned with that many epochs (the one-cycle
    schedule needs its length up front)."""
    import copy
    import itertools
    from types import SimpleNamespace

    train_loader, val_loader = batches

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    steps = len(train_loader)
    warm, timed = min(3, steps), min(10, steps)
    args = (spec, scaling, loss_config, dev, config, d)
    no_schedule = SimpleNamespace(step=lambda: None)
    # The first steps pay for kernel selection and loader start-up: not timed.
    _run_epoch(net, itertools.islice(train_loader, warm), *args, optimizer, no_schedule,
               normalization=normalization, pixel_size_A=pixel_size_A,
               synthetic=synthetic)  # fmt: skip
    sync()
    t = time.perf_counter()
    _run_epoch(net, itertools.islice(train_loader, timed), *args, optimizer, no_schedule,
               normalization=normalization, pixel_size_A=pixel_size_A,
               synthetic=synthetic)  # fmt: skip
    sync()
    step_s = (time.perf_counter() - t) / timed
    if dev.type == "cuda":
        # The first evaluation pass selects kernels for its own batch shapes (the last
        # batch is short): run 5's H100 (docs/gpu.md) timed 0.6 s for a pass that then
        # took 0.07 s, and planned 200 epochs where 280 fitted.
        _run_epoch(model, val_loader, *args, normalization=normalization)
        sync()
    t = time.perf_counter()
    _run_epoch(model, val_loader, *args, normalization=normalization)
    sync()
    val_s = time.perf_counter() - t
    copy_s = write_s = 0.0
    if d.main:  # the training loop's checkpoint: a copy in its time, the write beside it
        t = time.perf_counter()
        state = {"model": model.state_dict()}
        host = writer.snapshot({"snapshot": state, "resume": {"optimizer": optimizer.state_dict()}})
        copy_s = time.perf_counter() - t
        probe = out / ".timing.pt"
        writer.write([(probe, {**host["snapshot"], **host["resume"]})])
        writer.wait()
        probe.unlink()
        write_s = time.perf_counter() - t - copy_s
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)

    busy_s = steps * step_s + val_s
    save_s = copy_s + max(0.0, write_s - busy_s)  # a write longer than an epoch holds it up
    epoch_s = busy_s + save_s
    left_s = 60.0 * config.max_minutes - (time.perf_counter() - started)
    epochs = max(1, min(config.epochs, int(left_s / epoch_s)))
    # Every rank must plan the same schedule: rank 0's plan wins.
    epochs = int(_all_sum(torch.tensor([float(epochs) if d.main else 0.0]), d, dev)[0])
    if d.main:
        log(
            f"time budget {config.max_minutes:g} min: {epochs} epochs of ~{epoch_s:.1f} s "
            f"({1e3 * step_s:.0f} ms per step of {config.batch_size}, validation "
            f"{val_s:.1f} s, checkpoint {save_s:.1f} s)"
        )
    return replace(config, epochs=epochs)


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [
        f"epoch {row['epoch']}/{epochs}",
        f"loss {row['train_total']:.4f}/{row['val_total']:.4f}",
    ]
    if "val_amp_mae" in row:
        parts.append(f"amp {row['val_amp_mae']:.2f}")
    if "val_angle_deg" in row:
        parts.append(f"angle {row['val_angle_deg']:.2f}°")
    if "val_shift_mae_A" in row:
        parts.append(f"shift {row['val_shift_mae_A']:.3f} Å")
    parts.append(f"{row['train_img_per_s']:.0f} img/s")
    return "  ".join(parts)


def replace_config(config: TrainConfig, **changes) -> TrainConfig:
    """``dataclasses.replace`` that validates."""
    new = replace(config, **changes)
    new.validate()
    return new
