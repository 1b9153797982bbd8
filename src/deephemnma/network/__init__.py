"""Stage 2 of DeepHEMNMA: a ResNet-34 + MLP network that predicts normal-mode amplitudes,
orientations and shifts from particle images (paper §2.2). See docs/network.md.

- :mod:`~deephemnma.network.resnet`: ResNet-34, torchvision-compatible names and weights.
- :mod:`~deephemnma.network.model`: the network, its heads, target scaling, losses.
- :mod:`~deephemnma.network.data`: labels, splits, input normalization, label-exact
  augmentation, memory-mapped batches.
- :mod:`~deephemnma.network.train`: recipes (``paper``, ``default``) and the training loop
  (checkpoints, resume, early stopping, DDP).
- :mod:`~deephemnma.network.predict`: streamed, resumable prediction into a STAR file.
- :mod:`~deephemnma.network.checkpoint`: checkpoint files.
"""

from deephemnma.network.checkpoint import load_network
from deephemnma.network.model import DeepHEMNMANet, NetworkSpec, TargetScaling
from deephemnma.network.predict import predict
from deephemnma.network.resnet import load_torchvision_state_dict, resnet34
from deephemnma.network.train import RECIPES, TrainConfig, recipe_config, train

__all__ = [
    "RECIPES",
    "DeepHEMNMANet",
    "NetworkSpec",
    "TargetScaling",
    "TrainConfig",
    "load_network",
    "load_torchvision_state_dict",
    "predict",
    "recipe_config",
    "resnet34",
    "train",
]
