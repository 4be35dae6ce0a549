"""torchvision's VGG as the loss network uses it: the architectures, what their ImageNet
weights expect, Gatys' names for their layers, and the weights themselves (torchvision's
download, a local file, or random).

Every way loading weights can fail (offline, a missing file, a file of another layout) is
one line that names ``loss.weights`` and what to pass instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from nst_fast.errors import NstFastError
from nst_fast.files import load_tensors

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
    """A randomly initialised ``torchvision.models.<arch>().features`` (no classifier),
    its ReLUs out of place: the loss network keeps their outputs."""
    if arch not in ARCHITECTURES:
        raise NstFastError(f"loss.network={arch!r}: expected one of {sorted(ARCHITECTURES)}")
    features = models.vgg.make_layers(models.vgg.cfgs[ARCHITECTURES[arch][0]])
    for layer in features:
        if isinstance(layer, nn.ReLU):
            layer.inplace = False
    return features


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


def layer_indices(features: nn.Sequential, arch: str, layers: Iterable[str]) -> dict[int, str]:
    """Index in ``features`` -> name, for the named ReLU ``layers``; a one-line error
    listing the valid names when one is unknown."""
    names, layers = relu_names(features), list(dict.fromkeys(layers))
    unknown = [name for name in layers if name not in names]
    if unknown or not layers:
        raise NstFastError(
            f"unknown loss layer {', '.join(unknown) or '(none given)'} for {arch}; "
            f"valid layers: {', '.join(names)}"
        )
    return {names[name]: name for name in layers}


def load_weights(features: nn.Sequential, arch: str, weights: str) -> None:
    """Fill ``vgg_features(arch)`` from torchvision's ImageNet download (``'imagenet'``), a
    local file, or keep them ``'random'``."""
    if weights == "random":
        return
    if weights == "imagenet":
        imagenet = ARCHITECTURES[arch][1]
        try:
            state = imagenet.get_state_dict(progress=True)
        except Exception as err:  # URLError, OSError, hash mismatch: all mean "no weights"
            raise NstFastError(
                f"could not download the {arch} ImageNet weights from {imagenet.url} ({err}); "
                f"offline, pass loss.weights=PATH to a local torchvision {arch}().features "
                "state dict"
            ) from err
        state = {k.removeprefix("features."): v for k, v in state.items() if "features." in k}
    else:
        state = _load_state_file(weights)
    try:
        features.load_state_dict(state)
    except RuntimeError as err:
        first = next(iter(state), "nothing")
        raise NstFastError(
            f"loss.weights={weights}: not the layout of torchvision's {arch}().features "
            f"(keys '0.weight', '0.bias', ...; this file has '{first}', ...): "
            f"{_first_detail(err)}"
        ) from err


def _first_detail(err: RuntimeError) -> str:
    """load_state_dict's first specific complaint (its first line only says that it failed)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else lines[0]
    return detail if len(detail) <= 120 else detail[: detail.rfind(",", 0, 120)] + ", ..."


def _load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise NstFastError(
            f"loss.weights={path}: no such file; use 'imagenet' (download), 'random' or a path"
        )
    try:
        state = load_tensors(path)
    except ValueError as err:
        raise NstFastError(f"loss.weights={path}: not a PyTorch state dict ({err})") from err
    if not isinstance(state, dict):
        raise NstFastError(f"loss.weights={path}: expected a state dict, found {type(state)}")
    # A whole vgg16() state dict works too: keep its features.
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if "features." in k}
    return state
