"""The transform network's last two layers, rewritten for fast CPU inference.

The decoder ends with: nearest x2 upsampling and a 3x3 convolution (computed as four
phase convolutions at low resolution, see ``nst_fast.fast.upsample``), instance norm
(only with ``model.norm_scope=all``), ReLU, then a 9x9 convolution down to 3 channels at
full resolution. oneDNN runs that last convolution far below the CPU's peak: 3 output
channels leave its vector registers mostly empty.

``PhaseOutput`` never builds the full-resolution map. It keeps the four phases as
channels of a half-resolution "space-to-depth" map (4 x C channels) and computes the
9x9 convolution there as a 5x5 convolution to 4 x 4 channels (the 3 colours per output
phase and one zero channel: 16 outputs vectorize better than 12), then interleaves the
small colour output. The phases' reflection padding is one row gather that also
replaces the interleaving copy. Same function, to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from nst_fast.fast.norm import phase_statistics
from nst_fast.fast.upsample import PhaseUpsampleConv, phase_kernel, phase_rows
from nst_fast.models.transformer import takes_style


class PhaseOutput(nn.Module):
    """``output_conv(relu(norm(upsample_conv(x))))`` on a space-to-depth map.

    The upsampling block's norm, where it has one (``model.norm_scope=all``), is a
    ``nst_fast.fast.norm.FastInstanceNorm``, whose ``statistics`` lets tiles
    share the whole image's statistics and whose ``affine`` turns them into the
    per-channel scale and shift.
    """

    def __init__(self, upsample: nn.Sequential, output: nn.Sequential) -> None:
        super().__init__()
        if not self.supports(upsample, output):
            raise ValueError("PhaseOutput takes an upsampling block and a 9x9 conv")
        conv, out_conv = upsample[2], output[1]
        self.norm = _block_norm(upsample)
        self.channels, self.out_channels = conv.out_channels, out_conv.out_channels
        kernel, bias = phase_kernel(conv)
        self.up_weight = nn.Parameter(kernel, requires_grad=False)
        bias = kernel.new_zeros(kernel.shape[0]) if bias is None else bias
        self.up_bias = nn.Parameter(bias, requires_grad=False)
        out_kernel, out_bias = space_to_depth_kernel(out_conv.weight, out_conv.bias)
        self.out_weight = nn.Parameter(out_kernel, requires_grad=False)
        self.out_bias = nn.Parameter(out_bias, requires_grad=False)

    @staticmethod
    def supports(upsample: nn.Module, output: nn.Module) -> bool:
        """An upsampling block, un-normalized or normalized by a ``statistics``-sharing
        instance norm, then a stride-1 9x9 convolution to at most 4 channels."""
        if not (PhaseUpsampleConv.supports(upsample) and isinstance(output, nn.Sequential)):
            return False
        layers, out_layers = list(upsample), list(output)
        norm = _block_norm(upsample)
        return (
            len(layers) in (4, 5)
            and (norm is None or (hasattr(norm, "statistics") and hasattr(norm, "affine")))
            and not takes_style(norm)  # its forward takes no style weights
            and isinstance(layers[-1], nn.ReLU)
            and len(out_layers) == 2
            and isinstance(out_layers[0], nn.ReflectionPad2d)
            and isinstance(out_layers[1], nn.Conv2d)
            and out_layers[1].kernel_size == (9, 9)
            and out_layers[1].stride == (1, 1)
            and out_layers[1].out_channels <= 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self.channels
        y = nn.functional.conv2d(
            nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), self.up_weight, self.up_bias
        )  # (B, 4C, h+1, w+1), phase-major channels
        y = y.contiguous(memory_format=torch.channels_last)
        rows = y.permute(0, 2, 3, 1).reshape(-1, c)  # one row per pixel and phase
        padded = rows.index_select(0, phase_rows(b, h, w, 2, y.device).flatten())
        flat = padded.view(b, -1, 4 * c)  # (B, (h+4)*(w+4), 4C)
        if self.norm is not None:
            statistics = self.norm.statistics(lambda: phase_statistics(y, h, w))
            scale, shift = self.norm.affine(*statistics)
            flat.mul_(scale.repeat(1, 1, 4).to(flat.dtype))
            flat.add_(shift.repeat(1, 1, 4).to(flat.dtype))
        flat.clamp_min_(0)
        z = flat.view(b, h + 4, w + 4, 4 * c).permute(0, 3, 1, 2)
        out = nn.functional.conv2d(z, self.out_weight, self.out_bias)  # (B, 16, h, w)
        # Channel (2r + s) * 4 + o is colour o of output pixel (2i + r, 2j + s). One copy
        # makes the dense channels_last image (elementwise ops after it run 5x slower on
        # a strided view).
        out = out.permute(0, 2, 3, 1).reshape(b, h, w, 2, 2, 4)[..., : self.out_channels]
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.out_channels)
        return out.permute(0, 3, 1, 2)


def _block_norm(upsample: nn.Sequential) -> nn.Module | None:
    """The norm between an upsampling block's convolution and its ReLU, if it has one."""
    between = list(upsample)[3:-1]
    return between[0] if between else None


def space_to_depth_kernel(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A 9x9 stride-1 conv (O <= 4 outputs, C inputs) as a 5x5 conv on the 2x2
    space-to-depth input (channel (2p + q) * C + c is input channel c at phase (p, q))
    whose output channel (2r + s) * 4 + o is output o at phase (r, s)."""
    o_count, c, k, _ = weight.shape
    kernel = weight.new_zeros(16, 4 * c, 5, 5)
    half = k // 2
    for r, s, p, q in (
        (r, s, p, q) for r in (0, 1) for s in (0, 1) for p in (0, 1) for q in (0, 1)
    ):
        for dy in range(-2, 3):
            ky = 2 * dy + p - r + half
            for dx in range(-2, 3):
                kx = 2 * dx + q - s + half
                if 0 <= ky < k and 0 <= kx < k:
                    rows = slice((2 * r + s) * 4, (2 * r + s) * 4 + o_count)
                    cols = slice((2 * p + q) * c, (2 * p + q + 1) * c)
                    kernel[rows, cols, dy + 2, dx + 2] = weight[:, :, ky, kx]
    out_bias = weight.new_zeros(16)
    if bias is not None:
        for phase in range(4):
            out_bias[phase * 4 : phase * 4 + o_count] = bias
    return kernel, out_bias
