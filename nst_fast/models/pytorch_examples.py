"""pytorch/examples' fast_neural_style networks (its ``saved_models/*.pth`` and every
``*.model`` its ``neural_style.py train`` writes) as nst-fast's ``TransformerNet``.

The example's network is Johnson et al.'s with an instance norm after every convolution
but the last, reflection padding, nearest upsampling then a convolution, and a linear
output, on pixels in 0-255: nst-fast's network with ``norm_scope=all`` and
``output=linear`` on pixels in [0, 1], once the 255 is folded into the first and last
convolutions. Its files are plain state dicts, recognised here by their keys.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from nst_fast import __version__
from nst_fast.models.recorded import ModelFileError, ModelInfo, build_network, weights_misfit
from nst_fast.models.transformer import ConvBlock, TransformerConfig, TransformerNet

ORIGIN = "pytorch/examples fast_neural_style"
# The published models (candy, mosaic, rain_princess, udnie) and the code that wrote them.
SOURCE = "https://github.com/pytorch/examples/tree/main/fast_neural_style"
# Keys only the example's TransformerNet has: its first and last convolutions.
SIGNATURE = ("conv1.conv2d.weight", "deconv3.conv2d.weight")
# Instance norms of PyTorch before 0.4 kept running statistics they never used in
# training; the example drops these keys before it loads a file, and so does nst-fast.
STALE_STATISTICS = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")
PIXEL_SCALE = 255.0
REMEDY = f"use a file that {ORIGIN}'s neural_style.py eval loads ({SOURCE})"


def is_example_state(state: object) -> bool:
    """Whether a loaded file is a state dict of the example's network (by its keys)."""
    return isinstance(state, dict) and all(key in state for key in SIGNATURE)


def example_layers(residual_blocks: int) -> list[tuple[str, str | None]]:
    """The example's (convolution, the instance norm after it) names, input to output."""
    layers: list[tuple[str, str | None]] = [
        ("conv1.conv2d", "in1"),
        ("conv2.conv2d", "in2"),
        ("conv3.conv2d", "in3"),
    ]
    for i in range(1, residual_blocks + 1):
        layers += [(f"res{i}.conv1.conv2d", f"res{i}.in1"), (f"res{i}.conv2.conv2d", f"res{i}.in2")]
    return [*layers, ("deconv1.conv2d", "in4"), ("deconv2.conv2d", "in5"), ("deconv3.conv2d", None)]


def example_config(state: dict) -> TransformerConfig:
    """The architecture of an example's state dict: its widths and residual blocks (the
    published files have 32, 64, 128 and 5; retrained ones may differ)."""
    blocks = 0
    while f"res{blocks + 1}.conv1.conv2d.weight" in state:
        blocks += 1
    widths = [state.get(f"conv{i}.conv2d.weight") for i in (1, 2, 3)]
    channels = [int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() else 0 for w in widths]
    return TransformerConfig(
        channels=channels,
        residual_blocks=blocks,
        norm="instance",
        output="linear",
        norm_scope="all",
        antialias=False,
        antialias_taps=3,
    )


def _blocks(net: TransformerNet) -> list[tuple[str, str | None]]:
    """nst-fast's (convolution, norm) parameter prefixes, input to output."""
    found = []
    for name, block in net.named_modules():
        if isinstance(block, ConvBlock):
            conv = next(f"{name}.{i}" for i, m in enumerate(block) if isinstance(m, nn.Conv2d))
            norms = [f"{name}.{i}" for i, m in enumerate(block) if isinstance(m, nn.InstanceNorm2d)]
            found.append((conv, norms[0] if norms else None))
    return found


def key_map(net: TransformerNet) -> dict[str, str]:
    """Each of the example's state dict keys and the nst-fast key it becomes."""
    mapping = {}
    pairs = zip(_blocks(net), example_layers(net.config.residual_blocks), strict=True)
    for (conv, norm), (example_conv, example_norm) in pairs:
        for param in ("weight", "bias"):
            mapping[f"{example_conv}.{param}"] = f"{conv}.{param}"
            if norm is not None and example_norm is not None:
                mapping[f"{example_norm}.{param}"] = f"{norm}.{param}"
    return mapping


def load_example(state: dict, path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """An example's state dict (loaded from ``path``) as nst-fast's network, in eval
    mode, with the metadata a model.pt of it carries: the file's stem as its style, and
    its origin. ``ModelFileError`` naming ``path`` when its weights do not fit."""
    state = {k: v for k, v in state.items() if not STALE_STATISTICS.search(str(k))}
    config = example_config(state)
    if min(config.channels) < 1:
        raise ModelFileError(path, f"its conv1, conv2 or conv3 is not a convolution; {REMEDY}")
    net = TransformerNet(config)
    mapping = key_map(net)
    shapes = net.state_dict()
    misfit = weights_misfit({old: shapes[new] for old, new in mapping.items()}, state)
    if misfit:
        raise ModelFileError(
            path, f"its weights do not fit {ORIGIN}'s network ({misfit}); {REMEDY}"
        )
    converted = {mapping[k]: v.float() for k, v in state.items()}
    # x255 into the first convolution, /255 out of the last: exactly the example's
    # function, where leaning on the instance norm's scale invariance would be off by
    # its eps.
    first = mapping["conv1.conv2d.weight"]
    converted[first] = converted[first] * PIXEL_SCALE
    for key in ("deconv3.conv2d.weight", "deconv3.conv2d.bias"):
        converted[mapping[key]] = converted[mapping[key]] / PIXEL_SCALE
    net = build_network(config.to_dict(), converted, path, REMEDY)
    info = ModelInfo(
        style=style_name(path),
        step=0,
        arch=net.config.to_dict(),
        nst_fast_version=__version__,
        extra={"origin": {"format": ORIGIN, "file": os.path.basename(path)}},
    )
    return net, info


def style_name(path: str | os.PathLike) -> str:
    """The style an example's file is named for: ``saved_models/candy.pth`` is candy."""
    return os.path.splitext(os.path.basename(path))[0] or "?"
