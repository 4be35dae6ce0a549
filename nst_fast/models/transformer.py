"""The image-transform network of Johnson et al. (2016), with Ulyanov's instance norm.

Reflection padding everywhere (no border artefacts), strided convolutions to downsample,
residual blocks at the lowest resolution, and nearest-neighbour upsampling followed by a
convolution instead of transposed convolutions, which avoids checkerboard artefacts
(Odena et al. 2016). The upsampling convolutions are computed on the low-resolution grid
(``upsample_conv2d``): the same function in 4/9 of the multiply-adds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise

import torch
from torch import nn

from nst_fast.device import is_channels_last


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters, same results) computed as a group norm with
    one group per channel.

    PyTorch's instance norm reshapes (B, C, H, W) to (1, B*C, H, W) for a batch norm, which
    turns channels_last activations back into NCHW (a copy each way, and convolutions then
    see mixed layouts) and returns a view that in-place ReLUs must copy again in the
    backward pass. ``group_norm`` has native channels_last kernels and returns a fresh
    tensor: on a 2-core CPU the transform network's forward + backward at 256 px ran
    1.3-2x faster with it (channels_last), and channels_last then pays there.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.track_running_stats:
            return super().forward(x)
        if _eager_cpu_training(x) and is_channels_last(x):
            return _CpuInstanceNorm.apply(x, self.weight, self.bias, self.eps)
        return nn.functional.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


def _eager_cpu_training(x: torch.Tensor) -> bool:
    """Whether the CPU training kernels below may run: autograd on, on the CPU, and not
    being traced by torch.compile or the ONNX exporter (which want plain ATen ops)."""
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


class _CpuInstanceNorm(torch.autograd.Function):
    """Group norm with one group per channel, whose backward pass works on the
    (B, H*W, C) view of channels_last maps.

    PyTorch's CPU group-norm backward took 15.8 ms a call in the training step (batch 4,
    256 px), several times what its memory traffic needs. Here it is two reductions over
    the pixels and two fused multiply-adds: dx = rstd * w * (dy - mean(dy) - x_hat *
    mean(dy * x_hat)). Forward + backward on the 2-core CPU: 32 channels at 256 px 69 ->
    26 ms, 128 channels at 64 px 20 -> 4 ms.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        b, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, b, c, h * w, c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, mean, rstd = ctx.saved_tensors
        b, c, h, w = x.shape
        n = h * w
        pixels = x.permute(0, 2, 3, 1).reshape(b, n, c)
        dy = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        dy = dy.reshape(b, n, c)
        rstd = rstd.view(b, 1, c)
        x_hat = torch.addcmul(-mean.view(b, 1, c) * rstd, pixels, rstd)
        sum_dy = dy.sum(1, keepdim=True)
        sum_dy_x_hat = (dy * x_hat).sum(1, keepdim=True)
        scale = rstd * (1.0 if weight is None else weight.view(1, 1, c))
        dx = torch.addcmul(dy, x_hat, sum_dy_x_hat / -n, out=x_hat)  # x_hat's last use
        dx = torch.addcmul(sum_dy * scale / -n, dx, scale, out=dx)
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_weight = sum_dy_x_hat.sum((0, 1))
        if ctx.needs_input_grad[2]:
            grad_bias = sum_dy.sum((0, 1))
        return dx.view(b, h, w, c).permute(0, 3, 1, 2), grad_weight, grad_bias, None


class _CpuConv2d(torch.autograd.Function):
    """``F.conv2d`` whose backward takes the weight gradient in NCHW.

    oneDNN's channels_last weight-gradient kernels are slow on AVX2 CPUs: on the 2-core
    CPU, batch 4 at 256 px, the residual blocks' 128-channel 3x3 convolution took 53 ms
    channels_last and 35 ms NCHW (plus 5 ms to copy its input and gradient to NCHW), the
    output 9x9 convolution 140 and 78 ms, the upsampling convolution 86 and 37 ms. The
    input gradient stays channels_last, where it is as fast or faster.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return nn.functional.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        conv = (ctx.stride, [0, 0], [1, 1], False, [0, 0], 1)
        grad_x = grad_weight = grad_bias = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, *conv, [True, False, False]
            )[0]
        if need_weight or need_bias:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad.contiguous(),
                x.contiguous(),
                weight.contiguous(),
                [weight.shape[0]] if need_bias else None,
                *conv,
                [False, need_weight, need_bias],
            )
        return grad_x, grad_weight, grad_bias, None


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1
) -> torch.Tensor:
    """Unpadded ``F.conv2d``; when training channels_last on a CPU, with NCHW weight
    gradients (see ``_CpuConv2d``)."""
    if (
        _eager_cpu_training(x)
        and weight.requires_grad
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        if torch.is_autocast_enabled("cpu"):
            # Cast as autocast would inside conv2d, but before the function saves its
            # inputs: its backward calls convolution_backward, which autocast does not
            # see and which needs one dtype for the input, weight and gradient.
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return _CpuConv2d.apply(x, weight, bias, (stride, stride))
    return nn.functional.conv2d(x, weight, bias, stride)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (unpadded: the blocks pad by reflection) through ``conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride[0])


NORMS = {"instance": lambda c: InstanceNorm2d(c, affine=True), "batch": nn.BatchNorm2d}
OUTPUTS = ("linear", "tanh")
NORM_SCOPES = ("all", "residual", "encoder")


@dataclass
class TransformerConfig:
    """Everything needed to rebuild the network; stored inside exported models."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    residual_blocks: int = 5
    norm: str = "instance"
    # "tanh": squashed into (0, 1) like Johnson et al.'s scaled tanh; "linear": the last
    # convolution as it is (pytorch/examples, and every model.pt that records no output).
    output: str = "tanh"
    # "all": a norm after every convolution but the last (Johnson et al., Ulyanov et al.);
    # "residual": in the encoder and the residual blocks, none in the upsampling decoder;
    # "encoder": only in the downsampling encoder.
    norm_scope: str = "all"

    def to_dict(self) -> dict:
        return asdict(self)


class ConvBlock(nn.Sequential):
    """Reflection pad, convolution, then optionally norm and ReLU."""

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
        layers: list[nn.Module] = []
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [
            nn.ReflectionPad2d(kernel_size // 2),
            Conv2d(in_channels, out_channels, kernel_size, stride),
        ]
        if norm is not None:
            layers.append(NORMS[norm](out_channels))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _phase_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-tap kernel along ``dim`` seen from the grid before nearest x2 upsampling.

    Even output rows read low-res rows (i-1, i, i) and odd ones (i, i, i+1), so each
    phase is a 2-tap kernel: (w0, w1 + w2) and (w0 + w1, w2).
    """
    w0, w1, w2 = weight.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def phase_kernel(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The 3x3 ``conv`` after nearest x2 upsampling as one 2x2 convolution of the low-res
    input to 4 * out channels, phase-major: channel (2a + c) * out + k is output k at
    phase (a, c) (even/odd row, even/odd column)."""
    rows = _phase_taps(conv.weight, 2)
    kernel = torch.cat([k for r in rows for k in _phase_taps(r, 3)])
    return kernel, None if conv.bias is None else conv.bias.repeat(4)


def upsample_conv2d(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(reflection_pad(upsample_nearest_x2(x), 1))`` for a 3x3 ``conv``, without
    upsampling.

    Each of the four output phases (even/odd row x even/odd column) is a 2x2 convolution
    of the low-res input; one convolution computes all four (4 * out channels), and the
    phases are interleaved into the full-size output. The upsampled image's reflected
    border equals the low-res image's replicated border. 16 multiply-adds per output
    pixel and channel pair instead of 36, and no upsampled copy in memory: the decoder's
    two upsampling layers at 256 px, batch 4, channels_last, forward + backward took
    360 + 527 ms plain and 182 + 461 ms this way on the 2-core CPU.
    """
    kernel, bias = phase_kernel(conv)
    y = conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    b, _, h, w = x.shape
    # Interleave as one row gather in (B, H, W, C) order: a view of channels_last
    # activations, and a backward pass that is one scatter, not a zeroed copy per phase.
    rows = y.permute(0, 2, 3, 1).reshape(-1, conv.out_channels)
    out = rows.index_select(0, _interleave_index(b, h, w, y.device))
    out = out.view(b, 2 * h, 2 * w, conv.out_channels).permute(0, 3, 1, 2)
    channels_last = is_channels_last(x)
    return out if channels_last else out.contiguous()


@functools.lru_cache(maxsize=8)
def _interleave_index(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Rows of the phase convolution's (B, h+1, w+1, 2, 2) grid in output order: output
    pixel (2i + a, 2j + c) is phase (a, c) at low-res position (i + a, j + c).

    Made outside inference mode: a cached index also serves training, where autograd
    keeps it for the backward pass (inference tensors cannot be kept).
    """
    with torch.inference_mode(False):
        n, i, a, j, c = (
            torch.arange(size, device=device).view([-1 if d == k else 1 for d in range(5)])
            for k, size in enumerate((b, h, 2, w, 2))
        )
        return ((((n * (h + 1) + i + a) * (w + 1) + j + c) * 2 + a) * 2 + c).flatten()


class UpsampleConvBlock(ConvBlock):
    """Nearest x2 upsampling, reflection pad, 3x3 convolution, norm, ReLU.

    The layers are those of ``ConvBlock(..., upsample=True)`` (same parameters and
    state-dict keys); the forward pass computes the first three as ``upsample_conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str | None) -> None:
        super().__init__(in_channels, out_channels, 3, norm=norm, upsample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            # ONNX runtimes fuse Resize + Conv well but run the phase interleave's
            # scatter ops slowly (onnxruntime CPU, 1024 px: 4.99 s fused, 2.87 s plain).
            # torch.compile (2.14) fails on the backward of the replicate pad of
            # channels_last maps (a wrong stride in its meta kernel), and fuses the
            # upsampling into the padding copy itself.
            return super().forward(x)
        x = upsample_conv2d(x, self[2])
        for layer in list(self)[3:]:
            x = layer(x)
        return x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str | None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm),
            ConvBlock(channels, channels, 3, norm=norm, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Maps an RGB image in [0, 1] to its stylized version: about [0, 1] ("linear", unclamped)
    or squashed into [0, 1] ("tanh").

    Height and width are any size; inside, the image is padded to a multiple of
    2**(len(channels) - 1) by reflection and the output cropped back, so the output
    always has the input's size without shift.
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TransformerConfig()
        if config.norm not in NORMS:
            raise ValueError(f"model.norm={config.norm!r}: expected one of {sorted(NORMS)}")
        if config.output not in OUTPUTS:
            raise ValueError(f"model.output={config.output!r}: expected one of {OUTPUTS}")
        if config.norm_scope not in NORM_SCOPES:
            raise ValueError(
                f"model.norm_scope={config.norm_scope!r}: expected one of {NORM_SCOPES}"
            )
        ch = list(config.channels)
        if len(ch) < 2:
            raise ValueError("model.channels needs at least two widths, e.g. [32, 64, 128]")
        norm = config.norm
        down = [ConvBlock(3, ch[0], 9, norm=norm)]
        down += [ConvBlock(a, b, 3, stride=2, norm=norm) for a, b in pairwise(ch)]
        residual_norm = None if config.norm_scope == "encoder" else norm
        decoder_norm = norm if config.norm_scope == "all" else None
        up = [UpsampleConvBlock(a, b, norm=decoder_norm) for a, b in pairwise(ch[::-1])]
        self.encoder = nn.Sequential(*down)
        self.residuals = nn.Sequential(
            *(ResidualBlock(ch[-1], residual_norm) for _ in range(config.residual_blocks))
        )
        self.decoder = nn.Sequential(*up, ConvBlock(ch[0], 3, 9, norm=None, relu=False))
        self.multiple = 2 ** (len(ch) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        y = self.decoder(self.residuals(self.encoder(x)))
        if self.config.output == "tanh":
            y = 0.5 * (torch.tanh(y) + 1)
        return y[..., :h, :w]


def transformer_net(
    channels: Sequence[int] = (32, 64, 128),
    residual_blocks: int = 5,
    norm: str = "instance",
    output: str = "tanh",
    norm_scope: str = "all",
) -> TransformerNet:
    """Build the Johnson transform network (torchvision-style builder)."""
    config = TransformerConfig(list(channels), residual_blocks, norm, output, norm_scope)
    return TransformerNet(config)
