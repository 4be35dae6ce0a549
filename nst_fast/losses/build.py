"""The perceptual loss a config describes (the ``loss`` and ``style`` groups), or a
one-line error naming the option that cannot build it."""

from __future__ import annotations

from nst_fast.errors import NstFastError
from nst_fast.losses.grid import GRID_PERIOD
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import PerceptualLoss


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
    )
