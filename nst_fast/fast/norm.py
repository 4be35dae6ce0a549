"""Instance norm for channels_last maps, and the one place its statistics are computed.

PyTorch's ``nn.InstanceNorm2d`` reshapes (B, C, H, W) to (1, B*C, H, W) for a batch
norm, which turns channels_last activations back into NCHW (a copy each way, and the
convolutions around it then see mixed layouts). ``FastInstanceNorm`` computes the same
function on the (B, H*W, C) view of channels_last maps:

* training on a CPU: group norm's fused forward with a backward pass written for that
  view (``_CpuInstanceNormFunction``), where PyTorch's CPU group-norm backward costs
  several times its memory traffic;
* inference: group norm's fused kernel, or, when statistics are shared across tiles of
  one image (``recording`` / ``shared``), the explicit statistics below.

Every fast path that needs instance-norm statistics takes them from here: whole maps
(``mean_var``), tiles (``FastInstanceNorm.statistics``) and the four phases of an
upsampled map that was never built (``phase_statistics``, used by the CPU phase output).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nst_fast.compat import native_group_norm
from nst_fast.models.transformer import style_affine


def mean_var(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and (biased) variance of (B, N, C) pixels, in fp32:
    (B, 1, C) each.

    fp32 whatever the input, so half-precision sums of squares cannot overflow; two passes
    (mean, then centred squares), which are as exact as E[x^2] - E[x]^2 is not.
    """
    flat = flat.float()
    mean = flat.mean(1, keepdim=True)
    var = (flat - mean).square_().mean(1, keepdim=True)
    return mean, var


def remove_moments(
    count: int, mean: torch.Tensor, m2: torch.Tensor, part: torch.Tensor
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The (count, mean, sum of squared deviations) of a set after taking ``part``'s
    values (..., n) out of it (Chan et al.'s pairwise formula run backwards)."""
    n_part = part.shape[-1]
    mean_part = part.mean(-1)
    m2_part = (part - mean_part[..., None]).square().sum(-1)
    n_rest = count - n_part
    mean_rest = (mean * count - mean_part * n_part) / n_rest
    m2_rest = m2 - m2_part - (mean_part - mean_rest).square() * (n_rest * n_part / count)
    return n_rest, mean_rest, m2_rest


def phase_statistics(y: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (B, 1, C) of the full-resolution map whose phase (a, c) is
    ``y[:, (2a + c) * C : ..., a : a + h, c : c + w]`` (the phase convolution's grid, see
    ``nst_fast.fast.upsample``).

    Reductions over each phase's strided window are slow on CPUs; the statistics of the
    whole contiguous grid are one fused call, and the row and column each phase leaves
    out are then taken back out exactly.
    """
    b, channels = y.shape[:2]
    c = channels // 4
    n_grid = (h + 1) * (w + 1)
    means, m2s = [], []
    for i in range(b):
        mean, var = torch.batch_norm_update_stats(y[i : i + 1].float(), None, None, 1.0)
        means.append(mean)
        m2s.append(var * n_grid)
    grid_mean, grid_m2 = torch.stack(means), torch.stack(m2s)  # (B, 4C)
    phase_means, phase_m2s = [], []
    for phase in range(4):
        a, cc = divmod(phase, 2)
        block = y[:, phase * c : (phase + 1) * c].float()
        row = block[:, :, h if a == 0 else 0, :]  # (B, C, w+1)
        col = block[:, :, :, w if cc == 0 else 0]  # (B, C, h+1)
        col = col[:, :, :h] if a == 0 else col[:, :, 1:]  # the corner is in the row
        sl = slice(phase * c, (phase + 1) * c)
        _, mean, m2 = remove_moments(
            n_grid, grid_mean[:, sl], grid_m2[:, sl], torch.cat([row, col], dim=2)
        )
        phase_means.append(mean)
        phase_m2s.append(m2)
    stacked = torch.stack(phase_means)  # (4, B, C)
    mean = stacked.mean(0)
    m2 = torch.stack(phase_m2s).sum(0) + h * w * (stacked - mean).square().sum(0)
    return mean[:, None], (m2 / (4 * h * w)).clamp_min(0)[:, None]


class FastInstanceNorm(nn.Module):
    """``nn.InstanceNorm2d(affine=True)``, same parameters (the very same tensors) and
    results, computed without leaving the channels_last layout.

    For tiling, ``shared`` holds (mean, var) to use instead of the input's own (tiles of
    one image are normalized with the whole image's statistics), and ``recording`` makes
    the next call set ``shared``. For video, ``steady`` carries the statistics from frame
    to frame (``SteadyStatistics``).
    """

    def __init__(self, norm: nn.InstanceNorm2d, cpu_training_kernel: bool = False) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.cpu_training_kernel = cpu_training_kernel
        self.recording = False
        self.shared: tuple[torch.Tensor, torch.Tensor] | None = None
        self.steady: SteadyStatistics | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        sharing = self.shared is not None or self.recording or self.steady is not None
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        if not sharing and self.cpu_training_kernel and channels_last and eager_cpu_training(x):
            return _CpuInstanceNormFunction.apply(x, self.weight, self.bias, self.eps)
        if not sharing and (x.dtype == torch.float32 or torch.is_grad_enabled()):
            # group_norm with a group per channel: native channels_last kernels, a fresh
            # tensor (no view that in-place ReLUs would have to copy for the backward).
            return F.group_norm(x, c, self.weight, self.bias, self.eps)
        flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        scale, shift = self.affine(*self.statistics(lambda: mean_var(flat)))
        out = torch.addcmul(shift.to(x.dtype), flat, scale.to(x.dtype))
        return out.view(b, h, w, c).permute(0, 3, 1, 2)

    def affine(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) in fp32 such that the norm is ``x * scale + shift``."""
        scale = torch.rsqrt(var + self.eps) * self.weight.float()
        return scale, self.bias.float() - mean * scale

    def statistics(
        self, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var): the shared ones if set, else ``compute()``'s (carried over from
        earlier frames if ``steady``), kept if recording."""
        if self.shared is not None:
            return self.shared
        mean, var = compute()
        if self.steady is not None:
            mean, var = self.steady(mean, var)
        if self.recording:
            self.shared = (mean, var)
        return mean, var


class SteadyStatistics:
    """Instance-norm statistics carried across the frames of a video.

    Per-frame statistics move with each frame's noise and motion, and every layer's
    normalization moves with them: flicker. Each frame is normalized instead with an
    exponential moving average of the statistics of the frames so far, ``momentum`` the
    weight of the past. ``reset()`` starts afresh (a scene cut).
    """

    def __init__(self, momentum: float) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum {momentum}: expected 0 <= momentum < 1")
        self.momentum = momentum
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics to normalize a batch of consecutive frames (B, 1, C) with."""
        means, variances = [], []
        for frame_mean, frame_var in zip(mean, var, strict=True):
            if self.state is not None:
                past_mean, past_var = self.state
                frame_mean = torch.lerp(frame_mean, past_mean, self.momentum)
                frame_var = torch.lerp(frame_var, past_var, self.momentum)
            self.state = (frame_mean, frame_var)
            means.append(frame_mean)
            variances.append(frame_var)
        return torch.stack(means), torch.stack(variances)


class FastConditionalInstanceNorm(FastInstanceNorm):
    """``ConditionalInstanceNorm2d``, same parameters (the very same tensors) and results:
    ``FastInstanceNorm``'s normalization (its statistics shared across tiles or frames
    alike) without its affine step, then each image's, or each pixel's, own scale and
    shift, in the input's layout."""

    takes_style = True

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        sharing = self.shared is not None or self.recording or self.steady is not None
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        if sharing:
            flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
            mean, var = self.statistics(lambda: mean_var(flat))
            rstd = torch.rsqrt(var + self.eps)
            y = torch.addcmul((-mean * rstd).to(x.dtype), flat, rstd.to(x.dtype))
            y = y.view(b, h, w, c).permute(0, 3, 1, 2)
        elif self.cpu_training_kernel and channels_last and eager_cpu_training(x):
            y = _CpuInstanceNormFunction.apply(x, None, None, self.eps)
        else:
            y = F.group_norm(x, c, None, None, self.eps)
        scale, shift = style_affine(style, self.weight, self.bias, (h, w))
        return torch.addcmul(shift.to(y.dtype), y, scale.to(y.dtype))


def eager_cpu_training(x: torch.Tensor) -> bool:
    """Whether a hand-written CPU training kernel may run: autograd on, on the CPU, and not
    being traced by torch.compile or the ONNX exporter (which want plain ATen ops)."""
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


class _CpuInstanceNormFunction(torch.autograd.Function):
    """Group norm with one group per channel, whose backward pass works on the
    (B, H*W, C) view of channels_last maps: two reductions over the pixels and two fused
    multiply-adds, dx = rstd * w * (dy - mean(dy) - x_hat * mean(dy * x_hat))."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        y, mean, rstd = native_group_norm(x, weight, bias, x.shape[1], eps)
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
