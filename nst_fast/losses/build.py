"""The perceptual loss a config describes (the ``loss`` and ``style`` groups), or a
one-line error naming the option that cannot build it."""

from __future__ import annotations

import torch

from nst_fast.errors import NstFastError
from nst_fast.losses.grid import GRID_PERIOD
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import PerceptualLoss
from nst_fast.losses.vgg import MIN_IMAGE_SIZE


def build_criterion(
    loss: dict, style: dict, grid_period: int = GRID_PERIOD, network: LossNetwork | None = None
) -> PerceptualLoss:
    """The perceptual loss of ``loss`` (a LossConfig dict), with per-style weight overrides;
    ``grid_period``: the total stride of the network it trains (``TransformerNet.multiple``);
    ``network``: a loss network of ``loss`` to share (the losses of several styles do).
    """

    def weight(name: str) -> float:
        own = style.get(name)
        return float(loss[name] if own is None else own)

    if not loss["style_layers"]:
        raise NstFastError(
            "loss.style_layers: empty; name at least one VGG layer and its weight, "
            "e.g. loss.style_layers={relu3_3:1.0}"
        )
    for name, layer_weight in loss["style_layers"].items():
        if layer_weight < 0:
            raise NstFastError(f"loss.style_layers.{name}={layer_weight}: expected 0 or more")
    scales = style_scales(loss)
    layers = [loss["content_layer"], *loss["style_layers"]]
    if network is None:
        network = LossNetwork(loss["network"], layers, loss["weights"])
    return PerceptualLoss(
        network,
        content_layer=loss["content_layer"],
        style_layers=loss["style_layers"],
        weights={
            "content": weight("content_weight"),
            "style": weight("style_weight"),
            "tv": weight("tv_weight"),
            "grid_penalty": float(loss.get("grid_weight", 0.0)),  # absent in older checkpoints
        },
        normalize=loss["normalize"],
        grid_period=grid_period,
        style_scales=scales,
    )


def style_scales(loss: dict) -> dict[float, float]:
    """``loss.style_scales`` with their weights (factor -> weight), or a one-line error.
    A loss saved before the pyramid (no such keys) is the single full-size scale."""
    factors = list(loss.get("style_scales") or [1])
    weights = loss.get("style_scale_weights")
    weights = [1.0] * len(factors) if weights is None else list(weights)
    listed = f"loss.style_scales={_listed(factors)}"
    for factor in factors:
        if not factor >= 1:
            raise NstFastError(
                f"{listed}: {factor:g} is not a downscale factor; expected 1 or more "
                "(1: full size, 2: half, 4: quarter)"
            )
    if len(set(factors)) < len(factors):
        raise NstFastError(f"{listed}: a factor given twice; give each size once")
    if len(weights) != len(factors):
        raise NstFastError(
            f"loss.style_scale_weights={_listed(weights)}: {len(weights)} weight(s) for "
            f"{len(factors)} scale(s) in {listed}; give one weight per scale, or null for equal"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise NstFastError(
            f"loss.style_scale_weights={_listed(weights)}: expected weights of 0 or more, not all 0"
        )
    return {float(f): float(w) for f, w in zip(factors, weights, strict=True)}


def check_scale_sizes(loss: dict, sizes: dict[str, int]) -> None:
    """A one-line error when an image of ``sizes`` (what it is -> its shorter side, e.g.
    ``{"data.image_size=256": 256}``) shrunk by the largest of ``loss.style_scales``
    falls below the smallest image VGG takes (``MIN_IMAGE_SIZE``)."""
    scales = style_scales(loss)
    largest = max(scales)
    for what, size in sizes.items():
        if size / largest < MIN_IMAGE_SIZE:
            raise NstFastError(
                f"loss.style_scales={_listed(list(scales))}: {what} shrunk {largest:g}x is "
                f"{size / largest:.3g} px, below the {MIN_IMAGE_SIZE} px VGG takes; use "
                f"factors of at most {size // MIN_IMAGE_SIZE} or a larger image"
            )


def check_style_image(loss: dict, image: torch.Tensor, source: str) -> None:
    """``check_scale_sizes`` for a loaded (3, H, W) style ``image`` read from ``source``:
    before the loss network is built, so that the one line comes before VGG's download."""
    side = min(image.shape[-2:])
    check_scale_sizes(loss, {f"the style image {source} ({side} px)": side})


def check_same_style_scales(saved: dict | None, loss: dict) -> None:
    """A one-line error when a checkpoint being resumed was trained with another style
    pyramid than ``loss`` (a LossConfig dict), naming the overrides that would resume it.
    The config is composed anew on resume, so a changed default would otherwise change the
    loss mid-run; a checkpoint from before the pyramid (no such keys) trained on [1]."""
    before, now = style_scales(saved or {}), style_scales(loss)
    if _shares(before) != _shares(now):
        weights = (saved or {}).get("style_scale_weights")
        raise NstFastError(
            f"this checkpoint was trained with 'loss.style_scales={_listed(list(before))}' "
            f"'loss.style_scale_weights={'null' if weights is None else _listed(weights)}'; "
            "add those to the command to resume it"
        )


def _shares(scales: dict[float, float]) -> dict[float, float]:
    """Each scale's share of the style term: the weights as the loss uses them."""
    total = sum(scales.values())
    return {factor: round(weight / total, 9) for factor, weight in scales.items()}


def _listed(values: list) -> str:
    return "[" + ",".join(f"{v:g}" for v in values) + "]"
