"""Gram matrices without an NCHW copy of channels_last features, and with a backward pass
that uses the product's symmetry.

F, the (B, H*W, C) pixels-by-channels matrix, is a view of both layouts, and the
gradient of F^T F / n is dF = F (G' + G'^T) / n: one batched matmul where autograd's
bmm backward makes two.
"""

from __future__ import annotations

import torch
from torch import nn

from nst_fast.losses.perceptual import gram_matrix


class _GramFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and c > 1
        if channels_last:
            f = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        else:
            f = x.reshape(b, c, h * w).transpose(1, 2)
        ctx.save_for_backward(f)
        ctx.shape, ctx.channels_last = x.shape, channels_last
        return torch.bmm(f.transpose(1, 2), f) / (c * h * w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (f,) = ctx.saved_tensors
        b, c, h, w = ctx.shape
        grad_f = torch.bmm(f, (grad + grad.transpose(1, 2)) / (c * h * w))  # (B, H*W, C)
        if ctx.channels_last:
            return grad_f.view(b, h, w, c).permute(0, 3, 1, 2)
        return grad_f.transpose(1, 2).reshape(b, c, h, w)


class FastGramMatrix(nn.Module):
    """``nst_fast.losses.perceptual.GramMatrix``: the same function, fp32 as there."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return gram_matrix(features)
        with torch.autocast(features.device.type, enabled=False):
            return _GramFunction.apply(features.float())
