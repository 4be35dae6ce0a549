"""The image-transform network of Johnson et al. (2016), with Ulyanov's instance norm.

Reflection padding everywhere (no border artefacts), strided convolutions to downsample,
residual blocks at the lowest resolution, and nearest-neighbour upsampling followed by a
convolution instead of transposed convolutions, which avoids checkerboard artefacts
(Odena et al. 2016).

This file is the method as the paper draws it, in plain torch modules. Faster modules
that compute the same function are swapped in by ``nst_fast.fast.accelerate``, keeping
these modules' parameter names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from nst_fast.errors import ConfigError

NORMS = ("instance", "batch")
OUTPUTS = ("linear", "tanh")
NORM_SCOPES = ("all", "residual", "encoder")


@dataclass
class TransformerConfig:
    """Everything needed to rebuild the network; stored inside exported models.

    No defaults here: the values ``nst-fast train`` uses live in conf/model/johnson.yaml
    (``default_transformer_config``), and files of earlier versions are completed by
    ``nst_fast.export.recorded_arch``.
    """

    channels: list[int]  # widths at full, half, quarter ... resolution
    residual_blocks: int
    norm: str  # one of NORMS
    output: str  # "tanh": Johnson et al.'s scaled tanh into (0, 1); "linear": unbounded
    # "all": a norm after every convolution but the last (Johnson et al.);
    # "residual": none in the upsampling decoder; "encoder": only in the encoder.
    norm_scope: str

    def to_dict(self) -> dict:
        return asdict(self)


def norm_layer(kind: str | None, channels: int) -> list[nn.Module]:
    """The normalization after a convolution: Ulyanov's instance norm (learned scale and
    shift per channel), batch norm, or none."""
    if kind is None:
        return []
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    return [nn.BatchNorm2d(channels)]


class ConvBlock(nn.Sequential):
    """[nearest x2 upsampling,] reflection pad, convolution, [norm,] [ReLU]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str | None = "instance",
        relu: bool = True,
        upsample: bool = False,
    ) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
        layers += [
            nn.ReflectionPad2d(kernel_size // 2),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride),
            *norm_layer(norm, out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), as Johnson et al.'s supplementary material draws it."""

    def __init__(self, channels: int, norm: str | None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm),
            ConvBlock(channels, channels, 3, norm=norm, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Maps an RGB image in [0, 1] to its stylized version: about [0, 1] ("linear",
    unclamped) or squashed into (0, 1) ("tanh").

    Height and width are any size: the image is padded by reflection to a multiple of the
    network's total stride and the output cropped back, so it keeps the input's size.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        ch, norm = list(config.channels), config.norm
        residual_norm = None if config.norm_scope == "encoder" else norm
        decoder_norm = norm if config.norm_scope == "all" else None
        self.encoder = nn.Sequential(
            ConvBlock(3, ch[0], 9, norm=norm),
            *(ConvBlock(a, b, 3, stride=2, norm=norm) for a, b in pairwise(ch)),
        )
        self.residuals = nn.Sequential(
            *(ResidualBlock(ch[-1], residual_norm) for _ in range(config.residual_blocks))
        )
        self.decoder = nn.Sequential(
            *(ConvBlock(a, b, 3, norm=decoder_norm, upsample=True) for a, b in pairwise(ch[::-1])),
            ConvBlock(ch[0], 3, 9, norm=None, relu=False),
        )
        self.multiple = 2 ** (len(ch) - 1)  # total stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        y = self.decoder(self.residuals(self.encoder(x)))
        if self.config.output == "tanh":
            y = 0.5 * (torch.tanh(y) + 1)
        return y[..., :h, :w]


def check_config(config: TransformerConfig) -> None:
    """A ConfigError (a ValueError) naming the ``model.*`` option that cannot build a network."""
    for key, allowed in (("norm", NORMS), ("output", OUTPUTS), ("norm_scope", NORM_SCOPES)):
        if getattr(config, key) not in allowed:
            raise ConfigError(f"model.{key}={getattr(config, key)!r}: expected one of {allowed}")
    if len(config.channels) < 2 or min(config.channels) < 1:
        raise ConfigError("model.channels needs at least two widths, e.g. [32, 64, 128]")
    if config.residual_blocks < 0:
        raise ConfigError(f"model.residual_blocks={config.residual_blocks}: expected 0 or more")


def default_transformer_config(**overrides: Any) -> TransformerConfig:
    """The architecture ``nst-fast train`` builds (conf/model/johnson.yaml), with
    ``overrides``."""
    from nst_fast.config import group_defaults

    values = {**group_defaults("model", "johnson"), **overrides}
    if isinstance(values.get("channels"), Sequence):
        values["channels"] = list(values["channels"])
    return TransformerConfig(**values)


def transformer_net(**overrides: Any) -> TransformerNet:
    """Build the Johnson transform network (torchvision-style builder): the trained
    defaults of conf/model/johnson.yaml, any field overridden by keyword."""
    return TransformerNet(default_transformer_config(**overrides))
