"""Perceptual losses: content (feature L2), style (Gram matrices), total variation, and a
penalty on the grid at the network's stride that the loss network cannot see.

Two scalings are offered. ``normalize=True`` (the default) divides each layer's squared
error by the squared magnitude of its target, so the loss does not depend on the loss
network's activation scale (torchvision's VGG and Caffe-converted VGG weights differ by
~100x) and the weights stay meaningful across networks. ``normalize=False`` is the
classic form (mean squared error, Gram / (C*H*W)) that Johnson et al. and
pytorch/examples tune their weights for (content 1e5, style 1e10).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nst_fast.losses.network import LossNetwork


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): F F^T / (C*H*W) with F the (B, C, H*W) features, in fp32.

    Sums over H*W terms overflow or lose precision in half precision, so autocast is
    turned off here.
    """
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        f = features.float().reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class GramMatrix(nn.Module):
    """``gram_matrix`` as a module, so that ``nst_fast.fast`` can swap a faster one in."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return gram_matrix(features)


# The stride of the default network (three model.channels widths); a network's own is
# TransformerNet.multiple, which training and evaluation pass in.
GRID_PERIOD = 4


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV)."""
    dh = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dw = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dh + dw


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


def squared_error(x: torch.Tensor, target: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Per-sample squared error, mean over the batch; relative to |target|^2 if normalize."""
    x, target = x.float(), target.float().expand_as(x)
    err = (x - target).pow(2)
    if not normalize:
        return err.mean()
    # Sums over dims, not flatten(1): flattening channels_last features copies them.
    dims = tuple(range(1, err.dim()))
    return (err.sum(dims) / target.pow(2).sum(dims).clamp_min(1e-8)).mean()


class PerceptualLoss(nn.Module):
    """Content + weighted style + total-variation loss against one style image."""

    def __init__(
        self,
        network: LossNetwork,
        content_layer: str,
        style_layers: Mapping[str, float],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        normalize: bool = True,
        grid_weight: float = 0.0,
        grid_period: int = GRID_PERIOD,
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layer = content_layer
        self.style_layers = dict(style_layers)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.grid_weight = grid_weight
        self.grid_period = grid_period
        self.normalize = normalize
        self.style_grams: dict[str, torch.Tensor] = {}
        self.gram = GramMatrix()

    @torch.no_grad()
    def set_style(self, style_image: torch.Tensor) -> None:
        """Compute the style targets once: Gram matrices of a (1, 3, H, W) image."""
        features = self.network(style_image)
        self.style_grams = {name: self.gram(features[name]) for name in self.style_layers}

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.style_grams:
            raise RuntimeError("PerceptualLoss.set_style() must be called before the loss")
        out_features = self.network(output)
        with torch.no_grad():
            target = self.network(content, upto=self.content_layer)[self.content_layer]
        content_loss = squared_error(out_features[self.content_layer], target, self.normalize)
        per_layer = {
            name: squared_error(
                self.gram(out_features[name]),
                self.style_grams[name].to(output.device),
                self.normalize,
            )
            for name in self.style_layers
        }
        style_loss = sum(self.style_layers[name] * term for name, term in per_layer.items())
        pixels = output.float()  # one fp32 copy under autocast for both pixel terms
        tv_loss = total_variation(pixels)
        grid_loss = grid_penalty(pixels, self.grid_period)
        total = (
            self.content_weight * content_loss
            + self.style_weight * style_loss
            + self.tv_weight * tv_loss
            + self.grid_weight * grid_loss
        )
        terms = {
            "total": total,
            "content": content_loss,
            "style": style_loss,
            "tv": tv_loss,
            "grid_penalty": grid_loss,
        }
        # Each layer's unweighted term: which scale of texture a network lags on.
        terms.update({f"style/{name}": term for name, term in per_layer.items()})
        return terms
