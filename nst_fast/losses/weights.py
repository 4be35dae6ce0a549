"""The loss network's weights: torchvision's ImageNet download, a local file, or random.

Every way this can fail (offline, a missing file, a file of another layout) is one line
that names ``loss.weights`` and what to pass instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum

from nst_fast.errors import NstFastError
from nst_fast.files import load_tensors


def load_weights(features: nn.Sequential, arch: str, weights: str, imagenet: WeightsEnum) -> None:
    """Fill VGG ``features`` from torchvision (``weights='imagenet'``: the ``imagenet``
    enum's download), a local file, or keep them ``'random'``."""
    if weights == "random":
        return
    if weights == "imagenet":
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
