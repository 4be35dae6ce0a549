"""Stylizing images with a trained transform network: one forward pass per image.

Three things on top of a plain ``net(x)``:

* speed: the network runs channels_last (oneDNN's convolutions are faster in that
  layout on CPUs, Tensor Cores want it on GPUs) with the faster modules of
  ``nst_fast.fast`` swapped in, in half precision on GPUs and on CPUs with native bf16
  (``device.inference_dtype``);
* memory: images too large for one pass are stylized in overlapping tiles blended with
  a cosine window, the instance-norm statistics shared by all tiles (see
  ``stylize_tiled``), so the seams do not show;
* colour: ``preserve_color`` (luminance-only transfer) and ``blend`` (strength).
"""

from __future__ import annotations

import copy
import math
import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nst_fast.compat import tensor_version
from nst_fast.device import inference_dtype
from nst_fast.errors import NstFastError
from nst_fast.fast import FastInstanceNorm, accelerate, share_statistics
from nst_fast.fast.norm import SteadyStatistics

if TYPE_CHECKING:
    from nst_fast.models.transformer import TransformerNet

Backend = Callable[[torch.Tensor], torch.Tensor]

# Room each tile leaves to its neighbours. The default network sees about 55 px either
# side of a pixel (two 9x9 convs, two stride-2 levels, ten 3x3 convs at quarter size),
# so a 128 px overlap keeps the blended zone clear of tile-edge padding effects.
DEFAULT_OVERLAP = 128
# The network's first 9x9 convolution pads 4 px by reflection, which needs 5 px a side.
MIN_SIDE = 8
# CUDA kernels that index with 32 bits take tensors of fewer elements than this.
MAX_ELEMENTS = 2**31 - 1
# The convolutions' reflection padding adds rows and columns to the maps of a pass: this
# room covers it for all but very thin passes (one that still overflows falls back to
# tiles on the kernels' error, as on running out of memory).
PADDING_ROOM = 15 / 16


def prepare(
    net: nn.Module, device: torch.device | str, dtype: torch.dtype, fast: bool = True
) -> nn.Module:
    """A copy of ``net`` ready for inference: eval, on ``device``, in ``dtype``; ``fast``:
    with nst-fast's faster modules (``nst_fast.fast.accelerate``), channels_last.

    Instance norms become ``FastInstanceNorm`` either way: tiles of one image share its
    statistics through them. ``net`` itself is left as it was.
    """
    prepared_net = copy.deepcopy(net).eval()
    device = torch.device(device)
    if fast:
        accelerate(prepared_net, "inference", device)
        return prepared_net.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return share_statistics(prepared_net).to(device=device, dtype=dtype)


def forward(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Run a prepared network on a (B, 3, H, W) batch in [0, 1]; fp32 CPU result in [0, 1]."""
    param = next(net.parameters())
    x = batch.to(param.device, param.dtype)
    if param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = net(x).float().cpu()
    # Made outside inference mode, a plain tensor callers may modify in place; clamping
    # into it also converts the layout to NCHW in the same pass.
    out = torch.empty(y.shape, dtype=torch.float32)
    return torch.clamp(y, 0, 1, out=out)


# One prepared copy per network, while its weights stay as they were.
_PREPARED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def prepared(
    net: nn.Module, device: torch.device, dtype: torch.dtype, fast: bool = True
) -> nn.Module:
    """``prepare(net, device, dtype, fast)``, reused across calls until a weight of ``net`` is
    replaced or changed in place (an optimizer step, ``load_state_dict``, ``.to()``)."""
    tensors = [*net.parameters(), *net.buffers()]
    versions = tuple((t.data_ptr(), tensor_version(t)) for t in tensors)
    key = (str(device), dtype, fast, versions)
    hit = _PREPARED.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    result = prepare(net, device, dtype, fast)
    _PREPARED[net] = (key, result)
    return result


@torch.inference_mode()
def stylize(
    net: nn.Module, images: torch.Tensor, half: bool = True, fast: bool = True
) -> torch.Tensor:
    """Stylize a (3, H, W) image or a (B, 3, H, W) batch in [0, 1]; returns fp32 on the CPU.

    Runs on the network's device, in half precision (``half``) where the hardware
    computes in it (``device.inference_dtype``); ``fast=False`` runs the plain modules.
    """
    device = next(net.parameters()).device
    ready = prepared(net, device, inference_dtype(device, half), fast)
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    out = forward(ready, batch)
    return out[0] if images.dim() == 3 else out


# --- tiling -------------------------------------------------------------------------


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


def _instance_norms(net: nn.Module) -> list[FastInstanceNorm]:
    return [m for m in net.modules() if isinstance(m, FastInstanceNorm)]


@contextmanager
def shared_statistics(net: nn.Module, image: torch.Tensor) -> Iterator[None]:
    """Within the block, every instance norm of ``net`` (a prepared network) uses the
    statistics it saw on ``image`` (3, h, w), whatever it is given."""
    norms = _instance_norms(net)
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


@contextmanager
def steady_statistics(net: nn.Module, momentum: float) -> Iterator[Callable[[], None]]:
    """Within the block, the calls of ``net`` (a prepared network) are the consecutive
    frames of one video: every instance norm normalizes with the moving average of the
    frames' statistics (``nst_fast.fast.norm.SteadyStatistics``). Yields the function that
    starts the average afresh, for a scene cut."""
    norms = _instance_norms(net)
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


# --- memory budget --------------------------------------------------------------------


def bytes_per_pixel(channels: list[int] | tuple[int, ...], dtype: torch.dtype) -> int:
    """Peak activation memory per input pixel of one forward pass: an upper bound.

    Measured (rounded up) when the last upsampling held upsampled and padded copies of the
    second level's maps at full resolution; the fused upsampling convolution
    (``nst_fast.fast.upsample``) keeps no such copies and needs less, so this errs towards tiling.
    """
    size = torch.empty((), dtype=dtype).element_size()
    return size * (3 * channels[1] + 2 * channels[0] + 16)


def available_memory(device: torch.device) -> int:
    """Bytes one forward pass may use on ``device`` (half of what is free).

    On a GPU, what PyTorch's caching allocator holds without using counts as free: the
    driver counts it as used, and a budget without it would shrink with each model or
    style stylized before, tiling the same image differently.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return (free + max(0, cached)) // 2
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() * 0.5)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 2
    except (OSError, KeyError, ValueError):
        return 8 << 30  # no /proc (macOS, Windows): assume a modest 8 GB machine


def elements_per_pixel(channels: list[int] | tuple[int, ...]) -> int:
    """Elements of the network's largest activation per input pixel.

    Level k of the decoder upsamples ``channels[k + 1]`` maps to 1/4^k of the image's
    pixels before its convolution (the plain modules make that copy; the fused upsampling
    of ``nst_fast.fast.upsample`` does not, so this errs towards tiling); the first and
    last layers hold ``channels[0]`` maps at full size.
    """
    return max(channels[0], *(math.ceil(c / 4 ** (k - 1)) for k, c in enumerate(channels) if k))


def element_limit(device: torch.device, channels: list[int] | tuple[int, ...]) -> int | None:
    """The most pixels (batch x H x W) of one pass whose largest activation CUDA's kernels
    can index; None on other devices.

    Kernels that index with 32 bits refuse a tensor of 2^31 elements or more, with a
    RuntimeError rather than an out-of-memory error, however much memory is free: an
    80 GB card has room for several times that.
    """
    if device.type != "cuda":
        return None
    return int(MAX_ELEMENTS * PADDING_ROOM) // elements_per_pixel(channels)


def max_pixels(device: torch.device, channels: list[int], dtype: torch.dtype) -> int:
    """The largest H*W one forward pass handles on ``device``: what its memory holds, and on
    a GPU what its kernels index ($NST_FAST_MAX_PIXELS replaces the memory estimate)."""
    limit = element_limit(device, channels)
    override = os.environ.get("NST_FAST_MAX_PIXELS")
    if override:
        if not override.isdigit() or int(override) < 1:
            raise NstFastError(
                f"NST_FAST_MAX_PIXELS={override}: expected a number of pixels, e.g. 4000000"
            )
        pixels = int(override)
    else:
        pixels = max(256 * 256, available_memory(device) // bytes_per_pixel(channels, dtype))
    return pixels if limit is None else min(pixels, limit)


# Failures that say a pass was too large for the device, known by their message (lower
# case) where the library raises no type of its own: TorchScript's interpreter re-raises
# a failed operation as a plain RuntimeError ("CUDA out of memory"), and so does PyTorch's
# CPU allocator; cuDNN and cuBLAS say "..._STATUS_ALLOC_FAILED"; onnxruntime raises its
# RuntimeException or Fail for any failure, saying "Failed to allocate memory" (its
# arena) or "bad allocation" (std::bad_alloc). CUDA kernels that index with 32 bits
# refuse 2^31 elements or more ("canUse32BitIndexMath", "32-bit index math", "less than
# INT_MAX elements"): a smaller pass mends that as it mends running out of memory.
TOO_LARGE_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "not enough memory",
    "alloc_failed",
    "failed to allocate memory",
    "bad allocation",
    "bad_alloc",
    "32bitindexmath",
    "32-bit index math",
    "int_max elements",
)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err``, raised by a forward pass (PyTorch, TorchScript or onnxruntime),
    says that the pass was too large for the device: one in smaller tiles may work."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    from_onnxruntime = type(err).__module__.startswith("onnxruntime")
    if not (isinstance(err, RuntimeError) or from_onnxruntime):
        return False
    text = str(err).lower()
    return any(message in text for message in TOO_LARGE_MESSAGES)


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
            _release_cached_memory()
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


def stylize_large(
    net: TransformerNet,
    image: torch.Tensor,
    half: bool = True,
    fast: bool = True,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
) -> torch.Tensor:
    """Stylize a (3, H, W) image in [0, 1] of any size as ``nst-fast stylize`` does a
    model.pt: in one pass where it fits the device's budget (``max_pixels``), else, or
    after the pass runs out of memory, in tiles sharing its statistics (``Stylizer``).
    Device and precision as ``stylize``; returns fp32 on the CPU."""
    device = next(net.parameters()).device
    dtype = inference_dtype(device, half)
    ready = prepared(net, device, dtype, fast)
    stylizer = Stylizer(
        lambda batch: forward(ready, batch),
        max_pixels(device, list(net.config.channels), dtype),
        net=ready,
        multiple=net.multiple,
        tile=tile,
        overlap=overlap,
    )
    return stylizer(image[None])[0]


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- colour ---------------------------------------------------------------------------

# ITU-R BT.601 luma and chroma (YCbCr without offsets), as in Gatys et al. (2017),
# "Controlling Perceptual Factors in Neural Style Transfer", luminance-only transfer.
_RGB_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)


def rgb_to_ycc(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB to luma and two chroma channels (chroma centred on 0)."""
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YCC.to(image), image)


def ycc_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _YCC_TO_RGB.to(image), image)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's chroma: the style's strokes and texture
    in the photo's own colours."""
    y = rgb_to_ycc(stylized)[..., :1, :, :]
    chroma = rgb_to_ycc(content)[..., 1:, :, :]
    return ycc_to_rgb(torch.cat([y, chroma], dim=-3)).clamp(0, 1)


def blend(stylized: torch.Tensor, content: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength`` 1 is the full stylization, 0 the photo itself."""
    if strength >= 1:
        return stylized
    return torch.lerp(content, stylized, strength)
