"""Perceptual losses: content (feature L2), style (Gram matrices), total variation, and a
penalty on the grid at the network's stride that the loss network cannot see.

The style term can be taken on a pyramid (Snelgrove 2017; Wang et al. 2017): the output
and the style image each shrunk 2x, 4x, ..., Gram matrices matched at every size. A Gram
matrix of full-size features mostly sees fine texture; the painting's large shapes fill
VGG's receptive fields only on the smaller copies. ``style_scales={1: 1.0}`` (the
default) is the single-scale loss of Gatys et al. and Johnson et al.

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


def downscale(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``image`` (B, 3, H, W) shrunk ``factor`` times (sides rounded), anti-aliased, in fp32
    (PyTorch has no bf16 anti-aliased resize on the CPU); ``image`` itself at factor 1."""
    if factor == 1:
        return image
    h, w = image.shape[-2:]
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    with torch.autocast(image.device.type, enabled=False):
        return F.interpolate(
            image.float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )


def scale_name(factor: float) -> str:
    """The name of the style term at 1/``factor`` size: 'style@1/2' for factor 2."""
    return f"style@1/{factor:g}"


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
    style image; ``weights`` by term name (``grid_penalty`` may be left out: 0).

    ``style_scales``: downscale factor -> weight; the style term is the weighted mean of
    the layer-weighted Gram errors of the output and the style image shrunk by each
    factor (1: full size).
    """

    def __init__(
        self,
        network: LossNetwork,
        content_layer: str,
        style_layers: Mapping[str, float],
        weights: Mapping[str, float],
        normalize: bool = True,
        grid_period: int = GRID_PERIOD,
        style_scales: Mapping[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layer = content_layer
        self.style_layers = dict(style_layers)
        self.weights = {"grid_penalty": 0.0, **weights}
        self.grid_period = grid_period
        self.normalize = normalize
        self.style_scales = dict(style_scales or {1: 1.0})
        self.style_image: torch.Tensor | None = None
        self.style_grams: dict[str, torch.Tensor] = {}  # at full size
        self.scaled_grams: dict[float, dict[str, torch.Tensor]] = {}  # by factor, as needed
        self.gram = GramMatrix()
        # Style targets and the pyramid's smaller copies need VGG only up to the deepest
        # style layer (None: all of it, for a stand-in network without named layers).
        depth = {name: index for index, name in getattr(network, "indices", {}).items()}
        self.deepest_style_layer = max(self.style_layers, key=depth.get) if depth else None

    @torch.no_grad()
    def set_style(self, style_image: torch.Tensor) -> None:
        """Compute the style targets once: Gram matrices of a (1, 3, H, W) image, at full
        size and at each of ``style_scales``' sizes."""
        self.style_image = style_image
        self.style_grams = self._grams(style_image)
        self.scaled_grams = {
            factor: self._grams(downscale(style_image, factor))
            for factor in self.style_scales
            if factor != 1
        }

    def _grams(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.network(image, upto=self.deepest_style_layer)
        return {name: self.gram(features[name]) for name in self.style_layers}

    def style_errors(
        self, output: torch.Tensor, factor: float, features: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """Each style layer's unweighted Gram error of ``output`` against the style image,
        both shrunk ``factor`` times; ``features``: the VGG features of ``output`` itself,
        where already computed (factor 1)."""
        if factor == 1:
            targets = self.style_grams
            if features is None:
                features = self.network(output, upto=self.deepest_style_layer)
        else:
            if factor not in self.scaled_grams:  # a figure at a size not trained on
                with torch.no_grad():
                    self.scaled_grams[factor] = self._grams(downscale(self.style_image, factor))
            targets = self.scaled_grams[factor]
            features = self.network(downscale(output, factor), upto=self.deepest_style_layer)
        return {
            name: squared_error(
                self.gram(features[name]), targets[name].to(output.device), self.normalize
            )
            for name in self.style_layers
        }

    def layer_weighted(self, errors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The style term of per-layer ``errors``: their sum, weighted by ``style_layers``."""
        return sum(self.style_layers[name] * term for name, term in errors.items())

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.style_grams:
            raise RuntimeError("PerceptualLoss.set_style() must be called before the loss")
        out_features = self.network(output)
        with torch.no_grad():
            target = self.network(content, upto=self.content_layer)[self.content_layer]
        content_loss = squared_error(out_features[self.content_layer], target, self.normalize)
        per_layer = self.style_errors(output, 1, out_features)
        by_scale = {
            factor: self.layer_weighted(
                per_layer if factor == 1 else self.style_errors(output, factor)
            )
            for factor in self.style_scales
        }
        style_loss = sum(w * by_scale[f] for f, w in self.style_scales.items()) / sum(
            self.style_scales.values()
        )
        pixels = output.float()  # one fp32 copy under autocast for both pixel terms
        terms = {
            "content": content_loss,
            "style": style_loss,
            "tv": total_variation(pixels),
            "grid_penalty": grid_penalty(pixels, self.grid_period),
        }
        total = sum(weight * terms[name] for name, weight in self.weights.items())
        # Each layer's unweighted term: which scale of texture a network lags on; and the
        # style term at each smaller size trained on.
        layers = {f"style/{name}": term for name, term in per_layer.items()}
        scales = {scale_name(f): term for f, term in by_scale.items() if f != 1}
        return {"total": total, **terms, **layers, **scales}
