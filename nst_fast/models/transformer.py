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

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from nst_fast.config_files import group_defaults
from nst_fast.errors import ConfigError

NORMS = ("instance", "batch")
OUTPUTS = ("linear", "tanh")
NORM_SCOPES = ("all", "residual", "encoder")
# Settings of the model/ config group that say where training starts, not what the
# network is: never part of the architecture a model file records.
STARTS = ("init",)


@dataclass
class TransformerConfig:
    """Everything needed to rebuild the network; stored inside exported models.

    No defaults here: the values ``nst-fast train`` uses live in conf/model/johnson.yaml
    (``default_transformer_config``), and files of earlier versions are completed by
    ``nst_fast.models.recorded.recorded_arch``.
    """

    channels: list[int]  # widths at full, half, quarter ... resolution
    residual_blocks: int
    norm: str  # one of NORMS
    output: str  # "tanh": Johnson et al.'s scaled tanh into (0, 1); "linear": unbounded
    # "all": a norm after every convolution but the last (Johnson et al.);
    # "residual": none in the upsampling decoder; "encoder": only in the encoder.
    norm_scope: str
    # True: a low-pass filter before each strided convolution (Zhang 2019) and smooth
    # instead of nearest upsampling, so that a photo moved by less than the total stride
    # gives an output moved with it instead of strokes re-drawn on the stride's grid.
    antialias: bool
    # The low-pass filter's taps a side, odd, from 3: the binomial filter before each
    # strided convolution; the upsampling interpolates with the one a tap longer. Longer
    # filters leave less of the grid, and fewer of the finest strokes.
    antialias_taps: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> TransformerConfig:
        """The architecture among the ``model`` group's settings, which also say where
        training starts (``STARTS``); any other key is a TypeError, as for the class."""
        values = {k: v for k, v in settings.items() if k not in STARTS}
        if isinstance(values.get("channels"), Sequence):
            values["channels"] = list(values["channels"])
        return cls(**values)


class ConditionalInstanceNorm2d(nn.Module):
    """Dumoulin et al. (2017): instance norm with a learned scale and shift per style.

    ``style`` (B, styles) weighs the styles' scales and shifts: a one-hot row is one
    style, other rows blend them, which is how the paper interpolates between styles.
    A map (B, styles, H, W) weighs them pixel by pixel (the paper's spatial mixing of
    styles): regions of one image in different styles, meeting in feature space.
    """

    takes_style = True  # StyledSequential hands it the style weights

    def __init__(self, channels: int, styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(styles, channels))
        self.bias = nn.Parameter(torch.zeros(styles, channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = nn.functional.instance_norm(x, eps=self.eps)
        scale, shift = style_affine(style, self.weight, self.bias, x.shape[-2:])
        return x * scale + shift


def style_affine(
    style: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale and shift, broadcastable to a normalized (B, C, h, w) map of ``size``
    (h, w), of the styles' ``weight`` and ``bias`` (styles, C) mixed by ``style``:
    (B, styles) per image, (B, C, 1, 1) each; or a map (B, styles, H, W) per pixel, H and
    W a multiple of h and w (``style_at``), (B, C, h, w) each."""
    if style.dim() == 2:
        return tuple(  # type: ignore[return-value]
            (style @ p)[..., None, None] for p in (weight, bias)
        )
    pixels = style_at(style, size).permute(0, 2, 3, 1).to(weight.dtype)  # (B, h, w, styles)
    # Views of channels_last maps: the layout the fast paths keep.
    return tuple((pixels @ p).permute(0, 3, 1, 2) for p in (weight, bias))  # type: ignore[return-value]


def style_at(style: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A per-pixel style map (B, styles, H, W) at a layer's ``size`` (h, w): each of its
    pixels takes the mean weights of the image pixels it stands for. The network works
    on images padded to a multiple of its stride, so the factors are whole numbers and
    a crop of the map at a multiple of the stride (a tile) gives the crop of this."""
    if tuple(style.shape[-2:]) == tuple(size):
        return style
    return nn.functional.adaptive_avg_pool2d(style, tuple(size))


def norm_layer(kind: str | None, channels: int, styles: int = 1) -> list[nn.Module]:
    """The normalization after a convolution: Ulyanov's instance norm (learned scale and
    shift per channel; per style and channel when the network carries several styles),
    batch norm, or none."""
    if kind is None:
        return []
    if kind == "instance" and styles > 1:
        return [ConditionalInstanceNorm2d(channels, styles)]
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    return [nn.BatchNorm2d(channels)]


class StyledSequential(nn.Sequential):
    """``nn.Sequential`` that hands the style weights to the layers that take them."""

    takes_style = True

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, style) if takes_style(layer) else layer(x)
        return x


def takes_style(layer: nn.Module) -> bool:
    """Whether ``layer``'s forward takes the style weights (its class says so)."""
    return getattr(layer, "takes_style", False)


def binomial(taps: int) -> torch.Tensor:
    """The 1-D binomial filter of ``taps`` taps (a row of Pascal's triangle), summing to 1:
    [1, 2, 1] / 4 for 3, [1, 4, 6, 4, 1] / 16 for 5."""
    row = torch.tensor([math.comb(taps - 1, k) for k in range(taps)], dtype=torch.float32)
    return row / row.sum()


class LowPass(nn.Module):
    """Reflection padding by ``padding`` of a map low-passed on each channel by the 2-D
    binomial filter of ``taps`` taps a side: the padding of a strided convolution that
    first removes what the stride would fold back as aliases (Zhang 2019, "Making
    Convolutional Networks Shift-Invariant Again"). It stands where the padding stands, so
    the convolution keeps its parameter names."""

    def __init__(self, channels: int, padding: int, taps: int = 3) -> None:
        super().__init__()
        row = binomial(taps)
        kernel = row[:, None] * row[None, :]
        # Not a parameter and not saved: a fixed part of the architecture.
        self.register_buffer(
            "kernel", kernel.expand(channels, 1, taps, taps).clone(), persistent=False
        )
        self.pad = nn.ReflectionPad2d(padding + taps // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel.to(x.dtype)
        return nn.functional.conv2d(self.pad(x), kernel, groups=x.shape[1])


class SmoothUpsample(nn.Module):
    """x2 upsampling that keeps pixel centres (bilinear: each new pixel 3:1 of its nearest
    two), then for ``taps`` > 3 a binomial low-pass of ``taps`` - 2 taps. Together they
    interpolate with the binomial filter one tap longer than the encoder's ``taps``
    (bilinear is [1, 3, 3, 1] / 4 on the zero-filled grid), so the decoder passes no more
    of the low-resolution grid's images than the encoder's filter let in."""

    def __init__(self, channels: int, taps: int) -> None:
        super().__init__()
        self.smooth = LowPass(channels, 0, taps - 2) if taps > 3 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.smooth(up)


class ConvBlock(StyledSequential):
    """[x2 upsampling,] reflection pad, convolution, [norm,] [ReLU].

    ``antialias_taps`` (0: none): ``SmoothUpsample`` instead of nearest upsampling, and a
    strided convolution's padding a ``LowPass``, of that many taps."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str | None = "instance",
        relu: bool = True,
        upsample: bool = False,
        styles: int = 1,
        antialias_taps: int = 0,
    ) -> None:
        layers: list[nn.Module] = []
        if antialias_taps and upsample:
            layers.append(SmoothUpsample(in_channels, antialias_taps))
        elif upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        pad = kernel_size // 2
        layers += [
            LowPass(in_channels, pad, antialias_taps)
            if antialias_taps and stride > 1
            else nn.ReflectionPad2d(pad),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride),
            *norm_layer(norm, out_channels, styles),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), as Johnson et al.'s supplementary material draws it."""

    takes_style = True

    def __init__(self, channels: int, norm: str | None, styles: int = 1) -> None:
        super().__init__()
        self.body = StyledSequential(
            ConvBlock(channels, channels, 3, norm=norm, styles=styles),
            ConvBlock(channels, channels, 3, norm=norm, relu=False, styles=styles),
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.body(x, style)


class TransformerNet(nn.Module):
    """Maps an RGB image in [0, 1] to its stylized version: about [0, 1] ("linear",
    unclamped) or squashed into (0, 1) ("tanh").

    Height and width are any size: the image is padded by reflection to a multiple of the
    network's total stride and the output cropped back, so it keeps the input's size.

    With ``styles`` > 1 the network carries several styles (Dumoulin et al. 2017): its
    instance norms are conditional, and ``forward`` takes the style weights.
    """

    def __init__(self, config: TransformerConfig, styles: int = 1) -> None:
        super().__init__()
        check_config(config)
        if styles < 1 or (styles > 1 and config.norm != "instance"):
            raise ConfigError(f"{styles} styles: need 1 or more, and model.norm=instance for 2+")
        self.config, self.styles = config, styles
        ch, norm = list(config.channels), config.norm
        taps = config.antialias_taps if config.antialias else 0
        residual_norm = None if config.norm_scope == "encoder" else norm
        decoder_norm = norm if config.norm_scope == "all" else None
        self.encoder = StyledSequential(
            ConvBlock(3, ch[0], 9, norm=norm, styles=styles),
            *(
                ConvBlock(a, b, 3, stride=2, norm=norm, styles=styles, antialias_taps=taps)
                for a, b in pairwise(ch)
            ),
        )
        self.residuals = StyledSequential(
            *(ResidualBlock(ch[-1], residual_norm, styles) for _ in range(config.residual_blocks))
        )
        self.decoder = StyledSequential(
            *(
                ConvBlock(
                    a, b, 3, norm=decoder_norm, upsample=True, styles=styles, antialias_taps=taps
                )
                for a, b in pairwise(ch[::-1])
            ),
            ConvBlock(ch[0], 3, 9, norm=None, relu=False),
        )
        self.multiple = 2 ** (len(ch) - 1)  # total stride

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``style``: for a network of several styles, their weights, (styles,) for the
        whole batch, (B, styles) per image, or (B, styles, H, W) per pixel (H, W the
        image's); a one-hot row picks one style."""
        if (style is None) != (self.styles == 1):
            raise ValueError(f"a network of {self.styles} style(s) takes style weights iff 2+")
        h, w = x.shape[-2:]
        if style is not None:
            style = self.check_style(style, x)
        x = pad_to_multiple(x, self.multiple)
        if style is not None and style.dim() == 4:
            style = pad_to_multiple(style, self.multiple)
        y = self.decoder(self.residuals(self.encoder(x, style), style), style)
        if self.config.output == "tanh":
            y = 0.5 * (torch.tanh(y) + 1)
        return y[..., :h, :w]

    def check_style(self, style: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The style weights as (B, styles) or (B, styles, H, W), on ``x``'s device;
        a ValueError for any other shape."""
        if style.dim() == 4:
            if style.shape[1] != self.styles or style.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"a style map of shape {tuple(style.shape)} for images of "
                    f"{tuple(x.shape)}: expected (B, {self.styles}, H, W) of the images' H, W"
                )
            return style.to(x.device, torch.float32).expand(x.shape[0], -1, -1, -1)
        if style.dim() not in (1, 2) or style.shape[-1] != self.styles:
            raise ValueError(
                f"style weights of shape {tuple(style.shape)}: expected ({self.styles},), "
                f"(B, {self.styles}) or (B, {self.styles}, H, W)"
            )
        return style.to(x.device, torch.float32).expand(x.shape[0], self.styles)

    def single_style(self, weights: torch.Tensor) -> TransformerNet:
        """The one-style network of style weights (styles,): every conditional norm's
        scales and shifts mixed by ``weights``, the rest shared. For a whole image this is
        the network itself with those weights, ready for every single-style path."""
        net = TransformerNet(self.config).to(next(self.parameters()).device)
        state = self.state_dict()
        for name, module in self.named_modules():
            if isinstance(module, ConditionalInstanceNorm2d):
                for key in (f"{name}.weight", f"{name}.bias"):
                    state[key] = weights.to(state[key]) @ state[key]
        net.load_state_dict(state)
        return net.train(self.training)

    def each_style(self) -> list[TransformerNet]:
        """One network per style this one carries, in order (itself for one style)."""
        if self.styles == 1:
            return [self]
        return [self.single_style(torch.eye(self.styles)[i]) for i in range(self.styles)]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (..., H, W) padded by reflection at the bottom and right to a multiple of
    ``multiple`` in H and W (itself when it is one already): what the network does before
    its strided layers, and what runners of an export that takes only multiples do."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not (pad_h or pad_w):
        return x
    return nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def check_config(config: TransformerConfig) -> None:
    """A ConfigError (a ValueError) naming the ``model.*`` option that cannot build a network."""
    for key, allowed in (("norm", NORMS), ("output", OUTPUTS), ("norm_scope", NORM_SCOPES)):
        if getattr(config, key) not in allowed:
            raise ConfigError(f"model.{key}={getattr(config, key)!r}: expected one of {allowed}")
    if len(config.channels) < 2 or min(config.channels) < 1:
        raise ConfigError("model.channels needs at least two widths, e.g. [32, 64, 128]")
    if config.antialias_taps < 3 or config.antialias_taps % 2 == 0:
        raise ConfigError(
            f"model.antialias_taps={config.antialias_taps}: expected an odd number from 3, e.g. 5"
        )
    if config.residual_blocks < 0:
        raise ConfigError(f"model.residual_blocks={config.residual_blocks}: expected 0 or more")


def default_transformer_config(**overrides: Any) -> TransformerConfig:
    """The architecture ``nst-fast train`` builds (conf/model/johnson.yaml), with
    ``overrides``."""
    return TransformerConfig.of({**group_defaults("model", "johnson"), **overrides})


def transformer_net(**overrides: Any) -> TransformerNet:
    """Build the Johnson transform network (torchvision-style builder): the trained
    defaults of conf/model/johnson.yaml, any field overridden by keyword."""
    return TransformerNet(default_transformer_config(**overrides))
