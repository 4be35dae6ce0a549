"""Stylizing images too large for one pass in overlapping tiles, blended without seams.

Tiles overlap and are blended with a cosine window; every tile is normalized with the
instance-norm statistics of the whole image (``shared_statistics``), so the seams do not
show. ``Stylizer`` decides per batch: one pass where it fits the memory budget
(``nst_fast.memory``), else, or after the pass runs out of memory, tiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nst_fast.memory import is_out_of_memory, release_cached_memory
from nst_fast.prepared import Backend, forward, instance_norms

# Room each tile leaves to its neighbours. The default network sees about 55 px either
# side of a pixel (two 9x9 convs, two stride-2 levels, ten 3x3 convs at quarter size),
# so a 128 px overlap keeps the blended zone clear of tile-edge padding effects.
DEFAULT_OVERLAP = 128
# The network's first 9x9 convolution pads 4 px by reflection, which needs 5 px a side.
MIN_SIDE = 8


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 4) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length``, overlapping >= ``overlap``.

    Starts are multiples of ``multiple`` (the network's total stride) so every tile sees
    the same stride-2 sampling grid as the whole image would; the last tile ends flush.
    """
    if length <= tile:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step))
    last = (length - tile) // multiple * multiple
    if last + tile < length:
        raise ValueError(f"length {length} is not a multiple of {multiple}")
    if starts[-1] != last:
        starts.append(last)
    return starts


def ramp(length: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blend weights for one tile: 0 over the outer quarter of the ``overlap`` at an
    end that meets a neighbour (the pixels that tile-edge padding disturbs), a raised
    cosine over the middle half, 1 elsewhere. Two ramps facing each other sum to 1."""
    weights = torch.ones(length)
    n = min(overlap, length // 2)
    margin = n // 4
    if n > 0:
        up = torch.zeros(n)
        middle = n - 2 * margin
        up[margin : n - margin] = 0.5 - 0.5 * torch.cos(
            math.pi * (torch.arange(middle) + 0.5) / middle
        )
        up[n - margin :] = 1
        if rise:
            weights[:n] = up
        if fall:
            weights[-n:] = up.flip(0)
    return weights


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflection-pad (3, H, W) at the bottom and right to a multiple of ``multiple``,
    as the network does to a whole image."""
    pad_h, pad_w = -image.shape[-2] % multiple, -image.shape[-1] % multiple
    if not (pad_h or pad_w):
        return image
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode="reflect")[0]


@contextmanager
def shared_statistics(net: nn.Module, image: torch.Tensor) -> Iterator[None]:
    """Within the block, every instance norm of ``net`` (a prepared network) uses the
    statistics it saw on ``image`` (3, h, w), whatever it is given."""
    norms = instance_norms(net)
    for norm in norms:
        norm.shared, norm.recording = None, True
    try:
        forward(net, image.unsqueeze(0))
        for norm in norms:
            norm.recording = False
        yield
    finally:
        for norm in norms:
            norm.shared, norm.recording = None, False


def stylize_tiled(
    run: Backend,
    image: torch.Tensor,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    multiple: int = 4,
    batch_size: int = 1,
) -> torch.Tensor:
    """Stylize a (3, H, W) image in overlapping ``tile`` px tiles blended without seams.

    ``run`` maps a (B, 3, h, w) batch to its stylization. The image is first padded by
    reflection to a multiple of ``multiple`` at the bottom and right, exactly as the
    network pads a whole image, so tiles line up with the untiled computation.
    """
    _, h, w = image.shape
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(overlap, tile // 2) // multiple * multiple
    padded = pad_to_multiple(image, multiple)
    hp, wp = padded.shape[-2:]
    tile_h, tile_w = min(tile, hp), min(tile, wp)
    ys = tile_starts(hp, tile_h, overlap, multiple)
    xs = tile_starts(wp, tile_w, overlap, multiple)
    out = torch.zeros(3, hp, wp)
    total = torch.zeros(1, hp, wp)
    boxes = [(y, x) for y in ys for x in xs]
    for i in range(0, len(boxes), batch_size):
        group = boxes[i : i + batch_size]
        crops = torch.stack([padded[:, y : y + tile_h, x : x + tile_w] for y, x in group])
        for (y, x), result in zip(group, run(crops), strict=True):
            wy = ramp(tile_h, overlap, rise=y > 0, fall=y + tile_h < hp)
            wx = ramp(tile_w, overlap, rise=x > 0, fall=x + tile_w < wp)
            weight = wy[:, None] * wx[None, :]
            out[:, y : y + tile_h, x : x + tile_w] += weight * result.float()
            total[:, y : y + tile_h, x : x + tile_w] += weight
    return (out / total)[:, :h, :w]


@dataclass
class Stylizer:
    """Stylizes batches of same-size images, in tiles where one pass would not fit.

    ``tile``: None tiles only images over ``max_pixels`` (or after running out of GPU
    memory), 0 never tiles, N always tiles with N px tiles.
    """

    run: Backend
    max_pixels: int
    net: nn.Module | None = None
    multiple: int = 4
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    # Images tiled without shared statistics (exported formats): their seams can show.
    tiled_alone: int = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] to its stylization, fp32 on the CPU, same size."""
        b, _, h, w = batch.shape
        if min(h, w) < MIN_SIDE:  # stylized with its border repeated out, then cropped
            grown = (0, max(0, MIN_SIDE - w), 0, max(0, MIN_SIDE - h))
            return self(F.pad(batch, grown, mode="replicate"))[..., :h, :w]
        if self.tile == 0 or (self.tile is None and b * h * w <= self.max_pixels):
            try:
                return self.run(batch)
            except Exception as err:
                if self.tile == 0 or not is_out_of_memory(err):
                    raise
            # Out of memory: half the size that failed, the cache emptied outside the
            # handler, where the traceback no longer holds the failed pass's tensors.
            self.max_pixels = min(self.max_pixels, h * w) // 2
            release_cached_memory()
        if b > 1 and h * w <= self.max_pixels and self.tile is None:
            return torch.cat([self(image[None]) for image in batch])
        return torch.stack([self.tiled(image) for image in batch])

    def tile_size(self) -> int:
        if self.tile:
            return self.tile
        # Square tiles using the memory budget, never so small that the overlap dominates.
        return max(4 * self.overlap, math.isqrt(self.max_pixels))

    def tiled(self, image: torch.Tensor) -> torch.Tensor:
        """One (3, H, W) image in tiles, normalized with whole-image statistics."""
        _, h, w = image.shape
        padded = pad_to_multiple(image, self.multiple)

        def tiles() -> torch.Tensor:
            return stylize_tiled(self.run, padded, self.tile_size(), self.overlap, self.multiple)[
                :, :h, :w
            ]

        if self.net is None:  # exported formats: each tile normalizes with its own statistics
            self.tiled_alone += 1
            return tiles()
        statistics = self.statistics_image(padded)
        with shared_statistics(self.net, statistics):
            return tiles()

    def statistics_image(self, image: torch.Tensor) -> torch.Tensor:
        """The image itself when one pass over it fits, else the largest downscale that does.

        Downscaled statistics are close, not equal: texture at a coarser scale has a
        little more variance per pixel (see docs/inference.md, "Tiling").
        """
        _, h, w = image.shape
        if h * w <= self.max_pixels:
            return image
        factor = math.sqrt(self.max_pixels / (h * w))
        size = [max(self.multiple, int(h * factor)), max(self.multiple, int(w * factor))]
        return F.interpolate(image[None], size=size, mode="area")[0]
