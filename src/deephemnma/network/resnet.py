"""ResNet-34 (He et al. 2016), written here layer for layer as torchvision's ``resnet34``.

Module names, parameter names, shapes, buffer names and the initialization are those of
``torchvision.models.resnet34`` (``conv1, bn1, relu, maxpool, layer1 … layer4`` of
``BasicBlock``\\ s with ``downsample = Sequential(conv1x1, BatchNorm2d)``, ``avgpool, fc``), so a
torchvision ``state_dict`` loads with ``strict=True`` and ours loads into torchvision's model.
With 3 input channels and 1000 outputs the model has 21,797,672 parameters.

Particle images have one channel: :func:`resnet34` takes ``in_channels=1``, which changes only
the shape of ``conv1.weight`` to (64, 1, 7, 7). :func:`load_torchvision_state_dict` loads a
3-channel torchvision checkpoint into it by **summing ``conv1.weight`` over the input
channels**: a grey image fed to the 3-channel network as three identical channels gives
``Σ_c w_c * x = (Σ_c w_c) * x``, exactly what the summed 1-channel filter gives. (ImageNet
weights also expect per-channel normalization; a 1-channel input normalized to mean 0, std 1
is the closest match.) torchvision itself is not a dependency.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "load_torchvision_state_dict", "resnet34"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (torchvision ``conv3x3``)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution, no bias (torchvision ``conv1x1``)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or projected) shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with ``BasicBlock`` (groups 1, width 64, no dilation).

    x: (B, in_channels, H, W) → (B, num_classes). Spatial size is reduced 32× before the
    global average pool (any H, W ≥ 32 works; 128² → 4² feature maps).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(
            in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

        # torchvision's initialization.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-dimensional pooled features (B, 512), before ``fc``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet34(num_classes: int = 1000, in_channels: int = 1) -> ResNet:
    """ResNet-34 ([3, 4, 6, 3] basic blocks); 1 input channel by default (particle images)."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)


def load_torchvision_state_dict(
    model: ResNet, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> None:
    """Load a torchvision ``resnet34`` state dict into ``model`` (strict names and shapes).

    If ``model`` has fewer input channels than the checkpoint's ``conv1.weight``, the weight
    is summed over its input channels (module docstring); a 1-channel checkpoint goes into a
    3-channel model by replication divided by 3. ``fc`` must match ``model.fc`` in shape
    (drop ``fc.weight``/``fc.bias`` and pass ``strict=False`` to keep a new head).
    """
    state = dict(state_dict)
    weight = state.get("conv1.weight")
    want = model.conv1.weight.shape[1]
    if weight is not None and weight.shape[1] != want:
        if want == 1:
            state["conv1.weight"] = weight.sum(dim=1, keepdim=True)
        elif weight.shape[1] == 1:
            state["conv1.weight"] = weight.expand(-1, want, -1, -1) / want
        else:
            raise ValueError(f"cannot map conv1 from {weight.shape[1]} to {want} input channels")
    model.load_state_dict(state, strict=strict)
