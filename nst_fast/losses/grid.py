"""The project's own loss term, beside the paper's: a penalty on the grid at the network's
stride that the loss network cannot see (docs/method.md says why)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The stride of the default network (three model.channels widths); a network's own is
# TransformerNet.multiple, which training and evaluation pass in.
GRID_PERIOD = 4


def grid_offsets(
    image: torch.Tensor, period: int = GRID_PERIOD
) -> tuple[torch.Tensor, torch.Tensor]:
    """An image's fine detail (itself minus its 5x5 box blur) and that detail's mean at
    each of the period x period pixel phases: (B, C, H, W) -> detail, (B, C, period, period).

    A transform network that downsamples and upsamples twice can draw a grid of period 4:
    the same offset on every pixel of a phase, which the phase means keep and natural
    detail averages out of.
    """
    blurred = F.avg_pool2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    h, w = (size // period * period for size in image.shape[-2:])
    detail = (image - blurred)[..., :h, :w]
    b, c = detail.shape[:2]
    phases = detail.reshape(b, c, h // period, period, w // period, period).mean(dim=(2, 4))
    return detail, phases


def grid_penalty(image: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """Squared phase offsets of the detail, relative to the detail's variance.

    ``period`` is the transform network's total stride (``TransformerNet.multiple``): 4
    for the default three widths, 8 for four.

    VGG is blind to such a grid (its stride-2 poolings alias it away: removing the grid
    from The Scream network's outputs moved the loss by under 1%), so without this term
    nothing in the loss stops the network drawing one (docs/quality/findings.md, "Four
    styles at 256 px"). The variance is a constant here, so the term only shrinks the
    offsets, not the detail.
    """
    detail, phases = grid_offsets(image, period)
    offsets = phases - phases.mean(dim=(-2, -1), keepdim=True)
    return offsets.pow(2).mean() / detail.detach().var().clamp_min(1e-12)
