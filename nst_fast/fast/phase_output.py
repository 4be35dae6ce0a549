"""The transform network's last two layers, rewritten for fast CPU inference.

The decoder ends with: nearest x2 upsampling and a 3x3 convolution (computed as four
phase convolutions at low resolution, see ``upsample_conv2d``), instance norm (only with
``model.norm_scope=all``), ReLU, then a 9x9 convolution down to 3 channels at full
resolution. oneDNN runs that last convolution at about a third of the CPU's peak (3
output channels leave its vector registers mostly empty): 277 ms of a 1.8 s forward pass
at 1024 px on the 2-core CPU.

``PhaseOutput`` never builds the full-resolution map. It keeps the four phases as
channels of a half-resolution "space-to-depth" map (4 x 32 channels) and computes the
9x9 convolution there as a 5x5 convolution to 4 x 4 channels (the 3 colours per output
phase and one zero channel: 16 outputs vectorize better than 12), then interleaves the
small colour output. The phases' reflection padding is one row gather that also
replaces the interleaving copy. Same function, to float rounding; used by
``nst_fast.inference.prepare`` on the CPU. At 1024 px: 136 ms for the 5x5 convolution,
and the forward pass 1.80 -> 1.72 s.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nst_fast.models.transformer import UpsampleConvBlock, phase_kernel


class PhaseOutput(nn.Module):
    """``output_conv(relu(norm(upsample_conv(x))))`` on a space-to-depth map.

    The upsampling block's norm, where it has one (``model.norm_scope=all``), is a
    ``nst_fast.inference.ChannelsLastInstanceNorm``, whose ``statistics`` lets tiles
    share the whole image's statistics and whose ``affine`` turns them into the
    per-channel scale and shift.
    """

    def __init__(self, upsample: UpsampleConvBlock, output: nn.Sequential) -> None:
        super().__init__()
        if not self.supports(upsample, output):
            raise ValueError("PhaseOutput takes an UpsampleConvBlock and a 9x9 conv")
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
        if not (isinstance(upsample, UpsampleConvBlock) and isinstance(output, nn.Sequential)):
            return False
        layers, out_layers = list(upsample), list(output)
        norm = _block_norm(upsample)
        return (
            len(layers) in (4, 5)
            and (norm is None or (hasattr(norm, "statistics") and hasattr(norm, "affine")))
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
        padded = rows.index_select(0, _padded_index(b, h, w, y.device))
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


def _block_norm(upsample: UpsampleConvBlock) -> nn.Module | None:
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


def phase_statistics(y: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and variance (B, 1, C) of the full-resolution map whose phase
    (a, c) is ``y[:, (2a + c) * C : ..., a : a + h, c : c + w]``.

    Strided reductions over the phases' windows are slow on CPU (130 ms at 1024 px);
    batch norm's statistics of the whole contiguous grid take 8 ms, and the row and
    column each phase leaves out are taken back out exactly (Chan et al.'s pairwise
    formula).
    """
    b, channels = y.shape[:2]
    c = channels // 4
    n_full, n_valid = (h + 1) * (w + 1), h * w
    means, m2s = [], []
    for i in range(b):
        mean, var = torch.batch_norm_update_stats(y[i : i + 1].float(), None, None, 1.0)
        means.append(mean)
        m2s.append(var * n_full)
    mean_full, m2_full = torch.stack(means), torch.stack(m2s)  # (B, 4C)
    valid_means, valid_m2s = [], []
    for phase in range(4):
        a, cc = divmod(phase, 2)
        block = y[:, phase * c : (phase + 1) * c].float()
        row = block[:, :, h if a == 0 else 0, :]  # (B, C, w+1)
        col = block[:, :, :, w if cc == 0 else 0]  # (B, C, h+1)
        col = col[:, :, :h] if a == 0 else col[:, :, 1:]  # the corner is in the row
        left_out = torch.cat([row, col], dim=2)
        n_out = left_out.shape[2]
        mean_out = left_out.mean(2)
        m2_out = (left_out - mean_out[..., None]).square().sum(2)
        sl = slice(phase * c, (phase + 1) * c)
        mean_valid = (mean_full[:, sl] * n_full - mean_out * n_out) / n_valid
        delta = mean_out - mean_valid
        m2_valid = m2_full[:, sl] - m2_out - delta.square() * (n_valid * n_out / n_full)
        valid_means.append(mean_valid)
        valid_m2s.append(m2_valid)
    phase_means = torch.stack(valid_means)  # (4, B, C)
    mean = phase_means.mean(0)
    m2 = torch.stack(valid_m2s).sum(0) + n_valid * (phase_means - mean).square().sum(0)
    return mean[:, None], (m2 / (4 * n_valid)).clamp_min(0)[:, None]


@functools.lru_cache(maxsize=8)
def _padded_index(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Rows of the phase grid (B, h+1, w+1, 4 phases) for the space-to-depth map with a
    2-pixel border: (B, h+4, w+4, 4 phases).

    Phase (p, q) at position (m, n) is grid row (m + p, n + q). The full-resolution
    map's 4-pixel reflection border becomes, per phase: phase 0 reflects at the start
    (m -> -m) and repeats the edge at the end (m -> 2h-1-m); phase 1 the other way round
    (m -> -m-1 at the start, m -> 2h-2-m at the end).
    """

    def source(length: int, phase: int) -> torch.Tensor:
        m = torch.arange(-2, length + 2, device=device)
        start = -m if phase == 0 else -m - 1
        end = 2 * length - 1 - m if phase == 0 else 2 * length - 2 - m
        return torch.where(m < 0, start, torch.where(m >= length, end, m)) + phase

    with torch.inference_mode(False):
        n = torch.arange(b, device=device).view(-1, 1, 1, 1)
        blocks = []
        for p in (0, 1):
            for q in (0, 1):
                rows = source(h, p).view(1, -1, 1)
                cols = source(w, q).view(1, 1, -1)
                blocks.append(((n[..., 0] * (h + 1) + rows) * (w + 1) + cols) * 4 + 2 * p + q)
        return torch.stack(blocks, dim=-1).flatten()
