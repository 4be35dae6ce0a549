"""A convolution for CPU training whose weight gradient is taken in NCHW.

oneDNN's channels_last weight-gradient kernels ran at about half speed on an AVX2 CPU
(docs/performance.md), while its channels_last forward and input-gradient kernels are
as fast as NCHW or faster. ``CpuTrainingConv2d`` keeps the forward pass and the input
gradient channels_last and copies the input and the gradient to NCHW for the weight
gradient alone.
"""

from __future__ import annotations

import torch
from torch import nn

from nst_fast.compat import conv2d_backward
from nst_fast.fast.norm import eager_cpu_training


class _CpuConv2dFunction(torch.autograd.Function):
    """``F.conv2d`` (unpadded) with the weight gradient computed in NCHW."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return nn.functional.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_x = grad_weight = grad_bias = None
        if need_x:  # channels_last, as the forward pass ran
            grad_x = conv2d_backward(grad, x, weight, ctx.stride, (True, False, False))[0]
        if need_weight or need_bias:  # NCHW copies
            _, grad_weight, grad_bias = conv2d_backward(
                grad.contiguous(),
                x.contiguous(),
                weight.contiguous(),
                ctx.stride,
                (False, need_weight, need_bias),
            )
        return grad_x, grad_weight, grad_bias, None


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1
) -> torch.Tensor:
    """Unpadded ``F.conv2d``; when training channels_last on a CPU, with NCHW weight
    gradients."""
    if (
        eager_cpu_training(x)
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
        return _CpuConv2dFunction.apply(x, weight, bias, (stride, stride))
    return nn.functional.conv2d(x, weight, bias, stride)


class CpuTrainingConv2d(nn.Module):
    """An unpadded ``nn.Conv2d`` (the same weight and bias tensors) through ``conv2d``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("CpuTrainingConv2d takes unpadded, undilated, ungrouped convs")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride = conv.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride)
