"""The DeepHEMNMA network (paper §2.2): ResNet-34 features + MLP → amplitudes | rotation | shifts.

Architecture (paper Fig. 3): a 1-channel ResNet-34 whose ``fc`` layer gives 1,000 features,
then an MLP of ReLU layers 1,000 → 512 → 128 with dropout (0.5 in the paper) after each, then
a linear output layer per parameter type:

- ``amplitudes``: M values (normalized, :class:`TargetScaling`);
- ``rotation``: 4 (unit quaternion ``(w, x, y, z)`` of the active rotation ``Aᵀ``, paper) or 6
  (the first two columns of ``Aᵀ`` — the image x and y axes in the model frame — turned into a
  rotation by Gram–Schmidt, Zhou et al. 2019: continuous, and free of the ``q ≡ −q``
  ambiguity);
- ``shifts``: 2 (``rlnOriginXAngst``, ``rlnOriginYAngst``, normalized).

``separate=True`` gives the paper's three separate networks (one trunk per output type, trained
on the same batches; since they share no parameter, one optimizer over all of them is the
same as three optimizers). ``separate=False`` shares one trunk between the three heads.

Losses (:func:`compute_losses`) are computed on the normalized targets: L1 (paper) or smooth
L1 for amplitudes and shifts; for the rotation ``"l1"`` (paper: L1 between the raw quaternion
output and the target quaternion with ``w ≥ 0``), ``"chordal"`` (squared Frobenius distance of
the decoded rotation matrices, ``‖R̂ − R‖² = 8 sin²(θ/2)``) or ``"geodesic"`` (the angle θ of
``R̂ᵀR`` in radians).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from deephemnma.geometry import (
    canonical_quaternion,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)
from deephemnma.network.resnet import resnet34

HEADS = ("amplitudes", "rotation", "shifts")
ROTATIONS = {"quaternion": 4, "6d": 6}
ROTATION_LOSSES = ("l1", "chordal", "geodesic")
REGRESSION_LOSSES = ("l1", "smooth_l1")

__all__ = [
    "DeepHEMNMANet",
    "HEADS",
    "LossConfig",
    "NetworkSpec",
    "TargetScaling",
    "compute_losses",
    "decode",
    "fold_batchnorm",
    "rotation_from_output",
    "rotation_loss",
    "rotation_target",
]


@dataclass(frozen=True)
class NetworkSpec:
    """What the network is: enough to rebuild it from a checkpoint.

    n_amplitudes: M modes. heads: which outputs. rotation: "6d" or "quaternion".
    separate: one trunk per head (paper) or one shared trunk. dropout: MLP dropout
    probability (paper 0.5). mlp: hidden widths after the ResNet's 1,000 features.
    """

    n_amplitudes: int
    heads: tuple[str, ...] = HEADS
    rotation: str = "6d"
    separate: bool = False
    dropout: float = 0.5
    mlp: tuple[int, ...] = (512, 128)
    in_channels: int = 1

    def __post_init__(self) -> None:
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown or not self.heads:
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {tuple(ROTATIONS)}, got {self.rotation}")
        if "amplitudes" in self.heads and self.n_amplitudes < 1:
            raise ValueError("an amplitude head needs at least one mode")

    def output_size(self, head: str) -> int:
        return {"amplitudes": self.n_amplitudes, "rotation": ROTATIONS[self.rotation], "shifts": 2}[
            head
        ]

    def to_dict(self) -> dict:
        return {**asdict(self), "heads": list(self.heads), "mlp": list(self.mlp)}

    @classmethod
    def from_dict(cls, data: dict) -> NetworkSpec:
        return cls(**{**data, "heads": tuple(data["heads"]), "mlp": tuple(data["mlp"])})


class Trunk(nn.Module):
    """ResNet-34 (``fc`` → 1,000) followed by ReLU/dropout layers 1,000 → 512 → 128."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.resnet = resnet34(num_classes=1000, in_channels=spec.in_channels)
        layers: list[nn.Module] = [nn.ReLU(inplace=True), nn.Dropout(spec.dropout)]
        width = 1000
        for hidden in spec.mlp:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(spec.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.resnet(x))


class DeepHEMNMANet(nn.Module):
    """images (B, 1, H, W) → {head: raw output (B, size)} (see :class:`NetworkSpec`)."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.separate:
            self.trunks = nn.ModuleDict({h: Trunk(spec) for h in spec.heads})
            width = next(iter(self.trunks.values())).out_features
        else:
            self.trunk = Trunk(spec)
            width = self.trunk.out_features
        self.heads = nn.ModuleDict({h: nn.Linear(width, spec.output_size(h)) for h in spec.heads})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.spec.separate:
            return {h: self.heads[h](self.trunks[h](images)) for h in self.spec.heads}
        features = self.trunk(images)
        return {h: self.heads[h](features) for h in self.spec.heads}


# --------------------------------------------------------------------------------------------
# Targets


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device: creating it from Python values is a
    host-to-device copy from pageable memory, which synchronizes the GPU at every step."""
    return torch.tensor(values, device=device, dtype=dtype)


@dataclass(frozen=True)
class TargetScaling:
    """Affine normalization of the regression targets, fitted on the training labels.

    ``normalized = (value − mean) / std`` per amplitude mode and per shift axis (shifts in Å).
    Stored in the checkpoint and inverted identically at prediction.
    """

    amplitude_mean: tuple[float, ...] = ()
    amplitude_std: tuple[float, ...] = ()
    shift_mean_A: tuple[float, float] = (0.0, 0.0)
    shift_std_A: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def fit(cls, amplitudes: np.ndarray | None, shifts_A: np.ndarray | None) -> TargetScaling:
        def stats(values, width):
            if values is None or len(values) == 0:
                return (0.0,) * width, (1.0,) * width
            mean = np.asarray(values, np.float64).mean(0)
            std = np.asarray(values, np.float64).std(0)
            std = np.where(std > 1e-12, std, 1.0)
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)

        amp_mean, amp_std = stats(amplitudes, 0 if amplitudes is None else amplitudes.shape[1])
        shift_mean, shift_std = stats(shifts_A, 2)
        return cls(amp_mean, amp_std, shift_mean, shift_std)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> TargetScaling:
        return cls(**{k: tuple(float(x) for x in v) for k, v in data.items()})

    def _tensors(self, like: torch.Tensor, which: str):
        mean = getattr(self, f"{which}_mean" + ("_A" if which == "shift" else ""))
        std = getattr(self, f"{which}_std" + ("_A" if which == "shift" else ""))
        return _constant(tuple(mean), like.device, like.dtype), _constant(
            tuple(std), like.device, like.dtype
        )

    def normalize_amplitudes(self, q: torch.Tensor) -> torch.Tensor:
        mean, std = self._tensors(q, "amplitude")
        return (q - mean) / std

    def amplitudes(self, normalized: torch.Tensor) -> torch.Tensor:
        mean, std = self._tensors(normalized, "amplitude")
        return normalized * std + mean

    def normalize_shifts(self, shifts_A: torch.Tensor) -> torch.Tensor:
        mean, std = self._tensors(shifts_A, "shift")
        return (shifts_A - mean) / std

    def shifts(self, normalized: torch.Tensor) -> torch.Tensor:
        mean, std = self._tensors(normalized, "shift")
        return normalized * std + mean


def rotation_from_output(raw: torch.Tensor, rotation: str) -> torch.Tensor:
    """Projection matrices ``A`` (B, 3, 3) from the rotation head's raw output.

    "quaternion": (B, 4) normalized to a unit quaternion of ``Aᵀ`` (either sign);
    "6d": (B, 6), Gram–Schmidt of two columns of ``Aᵀ``.
    """
    if rotation == "quaternion":
        active = quaternion_to_matrix(raw)
    elif rotation == "6d":
        active = rotation_6d_to_matrix(raw)
    else:
        raise ValueError(f"unknown rotation representation {rotation!r}")
    return active.transpose(-1, -2)


def rotation_target(matrices: torch.Tensor, rotation: str) -> torch.Tensor:
    """The raw output that represents projection matrices ``A`` exactly (B, 4) or (B, 6)."""
    active = matrices.transpose(-1, -2)
    if rotation == "quaternion":
        return canonical_quaternion(matrix_to_quaternion(active))
    return torch.cat([active[..., :, 0], active[..., :, 1]], -1)


def decode(
    raw: dict[str, torch.Tensor], spec: NetworkSpec, scaling: TargetScaling
) -> dict[str, torch.Tensor]:
    """Physical parameters from raw outputs (computed in float32 or wider).

    Returns the heads present among ``amplitudes`` (B, M), ``matrices`` (B, 3, 3) projection
    matrices ``A``, ``angles_deg`` (B, 3) RELION rot, tilt, psi and ``shifts_A`` (B, 2).
    """
    out = {}
    if "amplitudes" in raw:
        out["amplitudes"] = scaling.amplitudes(raw["amplitudes"].float())
    if "rotation" in raw:
        rot = raw["rotation"].float()
        matrices = rotation_from_output(rot.double(), spec.rotation)
        out["matrices"] = matrices
        out["angles_deg"] = matrix_to_euler(matrices)
    if "shifts" in raw:
        out["shifts_A"] = scaling.shifts(raw["shifts"].float())
    return out


# --------------------------------------------------------------------------------------------
# Losses


@dataclass(frozen=True)
class LossConfig:
    """Per-head losses and weights (module docstring)."""

    regression: str = "l1"
    rotation: str = "chordal"
    weights: dict = field(
        default_factory=lambda: {"amplitudes": 1.0, "rotation": 1.0, "shifts": 1.0}
    )


def _regression(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "smooth_l1":
        return nn.functional.smooth_l1_loss(pred, target, beta=0.1)
    raise ValueError(f"unknown regression loss {kind!r}")


def rotation_loss(raw: torch.Tensor, matrices: torch.Tensor, rotation: str, kind: str):
    """Mean rotation loss of a batch: raw head output (B, 4|6) vs target matrices ``A``."""
    if kind == "l1":
        return (raw - rotation_target(matrices, rotation)).abs().mean()
    pred = rotation_from_output(raw, rotation)
    if kind == "chordal":
        return ((pred - matrices) ** 2).sum((-1, -2)).mean()
    if kind == "geodesic":
        cos = (((pred * matrices).sum((-1, -2)) - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
        return torch.arccos(cos).mean()
    raise ValueError(f"unknown rotation loss {kind!r}")


def compute_losses(
    raw: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    spec: NetworkSpec,
    scaling: TargetScaling,
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """Per-head losses and their weighted sum ``total``.

    targets: physical labels ``amplitudes`` (B, M), ``matrices`` (B, 3, 3), ``shifts_A`` (B, 2).
    Computed in float32 whatever the autocast precision of ``raw``.
    """
    losses: dict[str, torch.Tensor] = {}
    if "amplitudes" in raw:
        target = scaling.normalize_amplitudes(targets["amplitudes"].float())
        losses["amplitudes"] = _regression(raw["amplitudes"].float(), target, config.regression)
    if "rotation" in raw:
        losses["rotation"] = rotation_loss(
            raw["rotation"].float(), targets["matrices"].float(), spec.rotation, config.rotation
        )
    if "shifts" in raw:
        target = scaling.normalize_shifts(targets["shifts_A"].float())
        losses["shifts"] = _regression(raw["shifts"].float(), target, config.regression)
    losses["total"] = sum(config.weights.get(k, 1.0) * v for k, v in losses.items())
    return losses


# --------------------------------------------------------------------------------------------
# Inference helpers


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d into the convolution (in place).

    Exact up to rounding for a model in eval mode; removes one memory pass per convolution.
    """
    for module in list(model.modules()):
        pairs = []
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (n1, m1), (n2, m2) in zip(children, children[1:], strict=False):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                    pairs.append((n1, m1, n2, m2))
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((conv_name, conv, bn_name, bn))
        for _, conv, bn_name, bn in pairs:
            _fold(conv, bn)
            module._modules[bn_name] = nn.Identity()
    return model


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.clone())
    else:
        conv.bias.copy_(conv.bias * scale + bias)
