"""Stylizing with a trained transform network: an image or a batch, the frames of a clip,
an image of any size. The Python API of one image (docs/inference.md, "Python").

Three things on top of a plain ``net(x)``:

* speed: the network runs channels_last (oneDNN's convolutions are faster in that
  layout on CPUs, Tensor Cores want it on GPUs) with the faster modules of
  ``nst_fast.fast`` swapped in, in half precision on GPUs and on CPUs with native bf16
  (``device.inference_dtype``); the copy that runs is ``nst_fast.prepared``'s;
* memory: images too large for one pass (``nst_fast.memory``) are stylized in
  overlapping tiles sharing the instance-norm statistics of the whole image
  (``nst_fast.tiling``), so the seams do not show;
* colour: ``preserve_color`` (luminance-only transfer) and ``blend`` (strength), from
  ``nst_fast.colour``.

``prepare``, ``Stylizer``, ``preserve_color`` and ``blend`` are importable from here as
the documented API says; each lives in the module of its concept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import torch
from torch import nn

from nst_fast.colour import blend, preserve_color
from nst_fast.device import inference_dtype
from nst_fast.fast.norm import SteadyStatistics
from nst_fast.memory import max_pixels
from nst_fast.prepared import forward, instance_norms, prepare, prepared
from nst_fast.regions import style_mapped, with_style_map
from nst_fast.tiling import DEFAULT_OVERLAP, Stylizer

if TYPE_CHECKING:
    from nst_fast.models.transformer import TransformerNet

# The documented Python API of this module, some of it at home elsewhere.
__all__ = [
    "Stylizer",
    "blend",
    "prepare",
    "preserve_color",
    "steady_statistics",
    "stylize",
    "stylize_frames",
    "stylize_large",
]


@torch.inference_mode()
def stylize(
    net: nn.Module,
    images: torch.Tensor,
    half: bool = True,
    fast: bool = True,
    style: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stylize a (3, H, W) image or a (B, 3, H, W) batch in [0, 1]; returns fp32 on the CPU.

    Runs on the network's device, in half precision (``half``) where the hardware
    computes in it (``device.inference_dtype``); ``fast=False`` runs the plain modules.
    ``style``, for a network of several styles: their weights (styles,) for the whole
    image, or per pixel (styles, H, W), or (B, styles, H, W) for a batch
    (``nst_fast.regions``).
    """
    device = next(net.parameters()).device
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    net, batch = styled(net, batch, style)
    ready = prepared(net, device, inference_dtype(device, half), fast)
    out = forward(ready, batch)
    return out[0] if images.dim() == 3 else out


def styled(
    net: nn.Module, batch: torch.Tensor, style: torch.Tensor | None
) -> tuple[nn.Module, torch.Tensor]:
    """The network and the input to run for ``style`` (see ``stylize``): the network of
    one style or blend, or the network that takes per-pixel weights beside the photos."""
    if style is None:
        return net, batch
    if style.dim() == 1:
        return net.single_style(style), batch
    return style_mapped(net), with_style_map(batch, style)


@contextmanager
def steady_statistics(net: nn.Module, momentum: float) -> Iterator[Callable[[], None]]:
    """Within the block, the calls of ``net`` (a prepared network) are the consecutive
    frames of one video: every instance norm normalizes with the moving average of the
    frames' statistics (``nst_fast.fast.norm.SteadyStatistics``). Yields the function that
    starts the average afresh, for a scene cut."""
    norms = instance_norms(net)
    for norm in norms:
        norm.steady = SteadyStatistics(momentum)

    def reset() -> None:
        for norm in norms:
            norm.steady.reset()

    try:
        yield reset
    finally:
        for norm in norms:
            norm.steady = None


def stylize_frames(
    net: nn.Module, frames: torch.Tensor, momentum: float | None = None, fast: bool = True
) -> torch.Tensor:
    """Stylize the consecutive frames (T, 3, H, W) of a clip one by one, as a video is,
    in fp32; with ``momentum``, with steady statistics (``steady_statistics``)."""
    device = next(net.parameters()).device
    ready = prepared(net, device, torch.float32, fast)
    steady = steady_statistics(ready, momentum) if momentum is not None else nullcontext()
    with steady:
        return torch.cat([forward(ready, frame[None]) for frame in frames])


def stylize_large(
    net: TransformerNet,
    image: torch.Tensor,
    half: bool = True,
    fast: bool = True,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    style: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stylize a (3, H, W) image in [0, 1] of any size as ``nst-fast stylize`` does a
    model.pt: in one pass where it fits the device's budget (``max_pixels``), else, or
    after the pass runs out of memory, in tiles sharing its statistics (``Stylizer``).
    Device, precision and ``style`` as ``stylize``; returns fp32 on the CPU."""
    device = next(net.parameters()).device
    dtype = inference_dtype(device, half)
    run_net, batch = styled(net, image[None], style)
    ready = prepared(run_net, device, dtype, fast)
    stylizer = Stylizer(
        lambda batch: forward(ready, batch),
        max_pixels(device, list(net.config.channels), dtype),
        net=ready,
        multiple=net.multiple,
        tile=tile,
        overlap=overlap,
    )
    return stylizer(batch)[0]
