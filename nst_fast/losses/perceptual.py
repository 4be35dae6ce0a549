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
from torch import nn

from nst_fast.losses.grid import GRID_PERIOD, grid_penalty
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


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV)."""
    dh = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dw = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dh + dw


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
    """The weighted sum of content, style, total-variation and grid terms against one
    style image; ``weights`` by term name (``grid_penalty`` may be left out: 0)."""

    def __init__(
        self,
        network: LossNetwork,
        content_layer: str,
        style_layers: Mapping[str, float],
        weights: Mapping[str, float],
        normalize: bool = True,
        grid_period: int = GRID_PERIOD,
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layer = content_layer
        self.style_layers = dict(style_layers)
        self.weights = {"grid_penalty": 0.0, **weights}
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
        terms = {
            "content": content_loss,
            "style": style_loss,
            "tv": total_variation(pixels),
            "grid_penalty": grid_penalty(pixels, self.grid_period),
        }
        total = sum(weight * terms[name] for name, weight in self.weights.items())
        # Each layer's unweighted term: which scale of texture a network lags on.
        layers = {f"style/{name}": term for name, term in per_layer.items()}
        return {"total": total, **terms, **layers}
