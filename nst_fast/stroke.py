"""Stroke size at stylize time: the painting's structures larger or finer than the network
draws them, without training another network (Gatys et al. 2017's scale control, at
stylize time).

A feed-forward network paints strokes of a fixed size in pixels, set by its receptive
field and the style image's size in training. Running it on the photo resized by
1/``stroke`` and resizing its output back makes every stroke ``stroke`` times larger
relative to the photo (``resampled``). Larger strokes (``stroke`` > 1) then come from
a smaller pass, which costs less but loses the photo's fine detail; ``detailed`` adds
the detail of a full-size pass back, the band of spatial frequencies the small pass
cannot hold (a two-level Laplacian pyramid: coarse band from the small pass, fine band
from the full one). Finer strokes (``stroke`` < 1) come from a larger pass, at
1/``stroke``² the cost. docs/quality/stroke compares these with a network trained on the
painting at several sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as F

from nst_fast.errors import NstFastError

Backend = Callable[[torch.Tensor], torch.Tensor]

# Past these the pass is too small to hold a photo's shapes, or too large for its cost.
STROKE_RANGE = (0.25, 4.0)


def check_stroke(stroke: float, said: str) -> None:
    """An ``NstFastError`` naming ``said`` (``--stroke 9``) for a size out of range."""
    low, high = STROKE_RANGE
    if not low <= stroke <= high:
        raise NstFastError(
            f"{said}: expected a factor from {low:g} (finer strokes) to {high:g} (larger); "
            "1 is the network's own"
        )


def scaled(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) resized to ``size`` (h, w), antialiased when shrinking."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    return F.resize(batch, list(size), antialias=True)


def pass_size(size: tuple[int, int], stroke: float) -> tuple[int, int]:
    """The size of the pass that draws strokes ``stroke`` times the network's own."""
    return (max(8, round(size[0] / stroke)), max(8, round(size[1] / stroke)))


def resampled(run: Backend, batch: torch.Tensor, stroke: float) -> torch.Tensor:
    """``run`` on ``batch`` resized by 1/``stroke``, its output resized back.

    ``batch`` may carry per-pixel style weights after its three colour channels
    (``regions.StyleMapped``): they are resized with the photo."""
    size = tuple(batch.shape[-2:])
    if stroke == 1:
        return run(batch)
    out = run(scaled(batch, pass_size(size, stroke)))
    return scaled(out, size).clamp(0, 1)


def detailed(run: Backend, batch: torch.Tensor, stroke: float) -> torch.Tensor:
    """``resampled``, with the fine detail of a full-size pass added back where the strokes
    grow (``stroke`` > 1): the full pass less its own copy through the small size."""
    if stroke <= 1:
        return resampled(run, batch, stroke)
    size = tuple(batch.shape[-2:])
    small = pass_size(size, stroke)
    coarse = scaled(run(scaled(batch, small)), size)
    full = run(batch)
    fine = full - scaled(scaled(full, small), size)
    return (coarse + fine).clamp(0, 1)


METHODS: dict[str, Callable[[Backend, torch.Tensor, float], torch.Tensor]] = {
    "resample": resampled,
    "detail": detailed,
}


def stroke_sized(run: Backend, batch: torch.Tensor, stroke: float) -> torch.Tensor:
    """``run`` on ``batch`` (B, 3 [+ styles], H, W) with strokes ``stroke`` times the
    network's own size, as ``nst-fast stylize --stroke`` draws them: ``detailed`` for
    larger strokes, ``resampled`` for finer ones (docs/quality/control measures why)."""
    return detailed(run, batch, stroke) if stroke > 1 else resampled(run, batch, stroke)
