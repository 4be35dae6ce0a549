"""The frozen VGG loss network: named ReLU outputs, truncated after the deepest one in use."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from nst_fast.losses import vgg


class LossNetwork(nn.Module):
    """A frozen VGG that returns the activations of the requested ReLU layers.

    It takes RGB images in [0, 1] and applies ImageNet normalization itself, and keeps
    only the layers up to the deepest one requested: nothing beyond is ever computed.
    """

    def __init__(self, arch: str = "vgg16", layers: Iterable[str] = (), weights: str = "imagenet"):
        super().__init__()
        features = vgg.vgg_features(arch)
        self.indices = vgg.layer_indices(features, arch, layers)  # before a weight download
        vgg.load_weights(features, arch, weights)
        self.features = features[: max(self.indices) + 1]
        self.requires_grad_(False)
        self.eval()
        mean, std = (
            torch.tensor(v).view(1, 3, 1, 1) for v in (vgg.IMAGENET_MEAN, vgg.IMAGENET_STD)
        )
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True) -> LossNetwork:
        return super().train(False)  # frozen: dropout/batch-norm free, but stay in eval

    def forward(self, image: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Activations by layer name; ``upto`` stops after that layer (less work)."""
        x = (image - self.mean) / self.std
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.indices:
                out[self.indices[index]] = x
                if self.indices[index] == upto:
                    break
        return out
