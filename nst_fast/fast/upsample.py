"""Nearest x2 upsampling then a 3x3 convolution, computed on the low-resolution grid.

Each of the four output phases (even/odd row x even/odd column) of
``conv(reflection_pad(upsample_nearest_x2(x), 1))`` is a 2x2 convolution of the
low-resolution input, so one convolution to 4 x out channels computes them all: 16
multiply-adds per output pixel and channel pair instead of 36, and no upsampled copy in
memory. The upsampled image's reflected border equals the low-res image's replicated
border. The phases are then interleaved into the full-size output by one row gather
(whose backward pass is one scatter, not a zeroed copy per phase).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nst_fast.fast.conv import conv2d
from nst_fast.models.transformer import StyledSequential, takes_style


def _phase_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-tap kernel along ``dim`` seen from the grid before nearest x2 upsampling: even
    output rows read low-res rows (i-1, i, i) and odd ones (i, i, i+1), so each phase is
    a 2-tap kernel, (w0, w1 + w2) and (w0 + w1, w2)."""
    w0, w1, w2 = weight.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def phase_kernel(conv: nn.Conv2d | nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The 3x3 ``conv`` after nearest x2 upsampling as one 2x2 convolution of the low-res
    input to 4 * out channels, phase-major: channel (2a + c) * out + k is output k at
    phase (a, c) (even/odd row, even/odd column)."""
    rows = _phase_taps(conv.weight, 2)
    kernel = torch.cat([k for r in rows for k in _phase_taps(r, 3)])
    return kernel, None if conv.bias is None else conv.bias.repeat(4)


@functools.lru_cache(maxsize=16)
def phase_rows(b: int, h: int, w: int, border: int, device: torch.device) -> torch.Tensor:
    """Rows of the phase convolution's (B, h+1, w+1, 4 phases) output grid that make the
    (B, h + 2*border, w + 2*border, 2, 2) map of phases, the full-resolution map's
    reflection border of 2*border pixels included.

    Phase (p, q) at low-res position (m, n) is grid row (m + p, n + q). A reflection of
    the full-resolution map becomes, per phase: phase 0 reflects at the start (m -> -m)
    and repeats the edge at the end (m -> 2h-1-m); phase 1 the other way round. With
    ``border=0``, ``.permute(0, 1, 3, 2, 4)`` of the result is the interleaved map.

    Made outside inference mode: a cached index also serves training, where autograd keeps
    it for the backward pass (inference tensors cannot be kept).
    """

    def source(length: int, phase: int) -> torch.Tensor:
        m = torch.arange(-border, length + border, device=device)
        start = -m if phase == 0 else -m - 1
        end = 2 * length - 1 - m if phase == 0 else 2 * length - 2 - m
        return torch.where(m < 0, start, torch.where(m >= length, end, m)) + phase

    with torch.inference_mode(False):
        n = torch.arange(b, device=device).view(-1, 1, 1)
        phases = [
            ((n * (h + 1) + source(h, p).view(1, -1, 1)) * (w + 1) + source(w, q).view(1, 1, -1))
            * 4
            + 2 * p
            + q
            for p in (0, 1)
            for q in (0, 1)
        ]
        return torch.stack(phases, dim=-1).unflatten(-1, (2, 2))


@functools.lru_cache(maxsize=16)
def interleave_rows(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """``phase_rows`` without a border, in the full-resolution map's pixel order."""
    with torch.inference_mode(False):
        return phase_rows(b, h, w, 0, device).permute(0, 1, 3, 2, 4).flatten()


def upsample_conv2d(x: torch.Tensor, conv: nn.Conv2d | nn.Module) -> torch.Tensor:
    """``conv(reflection_pad(upsample_nearest_x2(x), 1))`` for a 3x3 ``conv``, without
    upsampling. The result keeps ``x``'s memory layout."""
    kernel, bias = phase_kernel(conv)
    y = conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    b, _, h, w = x.shape
    out_channels = kernel.shape[0] // 4
    rows = y.permute(0, 2, 3, 1).reshape(-1, out_channels)  # (B, h+1, w+1, 4 phases)
    index = interleave_rows(b, h, w, y.device)
    out = rows.index_select(0, index).view(b, 2 * h, 2 * w, out_channels).permute(0, 3, 1, 2)
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return out if channels_last else out.contiguous()


class PhaseUpsampleConv(StyledSequential):
    """A decoder block [nearest x2 upsampling, reflection pad, 3x3 conv, norm..., ReLU]
    (same children, so the same parameter names) whose first three layers run as
    ``upsample_conv2d``."""

    @staticmethod
    def supports(block: nn.Module) -> bool:
        layers = list(block) if isinstance(block, nn.Sequential) else []
        return (
            len(layers) >= 3
            and isinstance(layers[0], nn.Upsample)
            and layers[0].scale_factor in (2, 2.0, (2.0, 2.0))
            and layers[0].mode == "nearest"
            and isinstance(layers[1], nn.ReflectionPad2d)
            and tuple(layers[1].padding) == (1, 1, 1, 1)
            and tuple(layers[2].weight.shape[-2:]) == (3, 3)
            and getattr(layers[2], "stride", (1, 1)) in (1, (1, 1))
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return super().forward(x, style)  # both fuse the plain form themselves
        x = upsample_conv2d(x, self[2])
        for layer in list(self)[3:]:
            x = layer(x, style) if takes_style(layer) else layer(x)
        return x
