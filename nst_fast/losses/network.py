"""The frozen VGG loss network: named ReLU outputs, truncated after the deepest one in use."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision import models

from nst_fast.errors import NstFastError
from nst_fast.losses.weights import load_weights

# Every pretrained VGG in torchvision expects RGB in [0, 1] normalized with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The smallest image side VGG takes up to its deepest style layer: four 2x poolings
# (relu5_1) leave 16 px one pixel.
MIN_IMAGE_SIZE = 16

# name -> (torchvision's layer config, its ImageNet weights enum)
ARCHITECTURES = {
    "vgg16": ("D", models.VGG16_Weights.IMAGENET1K_V1),
    "vgg19": ("E", models.VGG19_Weights.IMAGENET1K_V1),
}


def vgg_features(arch: str) -> nn.Sequential:
    """A randomly initialised ``torchvision.models.<arch>().features`` (no classifier)."""
    if arch not in ARCHITECTURES:
        raise NstFastError(f"loss.network={arch!r}: expected one of {sorted(ARCHITECTURES)}")
    return models.vgg.make_layers(models.vgg.cfgs[ARCHITECTURES[arch][0]])


def relu_names(features: nn.Sequential) -> dict[str, int]:
    """Map 'relu{block}_{conv}' (Gatys' naming) to the index of that ReLU in ``features``."""
    names, block, conv = {}, 1, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


class LossNetwork(nn.Module):
    """A frozen VGG that returns the activations of the requested ReLU layers.

    It takes RGB images in [0, 1] and applies ImageNet normalization itself, and keeps
    only the layers up to the deepest one requested: nothing beyond is ever computed.
    """

    def __init__(self, arch: str = "vgg16", layers: Iterable[str] = (), weights: str = "imagenet"):
        super().__init__()
        layers = list(dict.fromkeys(layers))
        features = vgg_features(arch)
        names = relu_names(features)
        unknown = [name for name in layers if name not in names]
        if unknown or not layers:
            raise NstFastError(
                f"unknown loss layer {', '.join(unknown) or '(none given)'} for {arch}; "
                f"valid layers: {', '.join(names)}"
            )
        load_weights(features, arch, weights, ARCHITECTURES[arch][1])
        self.indices = {names[name]: name for name in layers}
        self.features = features[: max(self.indices) + 1]
        for layer in self.features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # activations are kept as outputs
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

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
