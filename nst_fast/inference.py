"""Stylizing images with a trained transform network: one forward pass per image."""

from __future__ import annotations

import torch

from nst_fast.device import inference_dtype
from nst_fast.models.transformer import TransformerNet


@torch.inference_mode()
def stylize(net: TransformerNet, images: torch.Tensor, half: bool = True) -> torch.Tensor:
    """Stylize a (3, H, W) image or a (B, 3, H, W) batch in [0, 1]; returns fp32 on the CPU.

    Runs on the network's device, in half precision on GPUs (``half``), channels_last.
    """
    param = next(net.parameters())
    dtype = inference_dtype(param.device, half)
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    batch = batch.to(param.device, dtype).contiguous(memory_format=torch.channels_last)
    with torch.autocast(param.device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = net(batch)
    out = out.float().clamp(0, 1).cpu()
    return out[0] if images.dim() == 3 else out
