"""How large one forward pass may be: the device's memory budget, the size CUDA's
32-bit-indexing kernels take, and knowing a failure that says a pass was too large.

Images over the limit are stylized in tiles (``nst_fast.tiling``); a pass that fails for
its size anyway is retried in smaller ones.
"""

from __future__ import annotations

import math
import os

import torch

from nst_fast.errors import NstFastError

# CUDA kernels that index with 32 bits take tensors of fewer elements than this.
MAX_ELEMENTS = 2**31 - 1
# The convolutions' reflection padding adds rows and columns to the maps of a pass: this
# room covers it for all but very thin passes (one that still overflows falls back to
# tiles on the kernels' error, as on running out of memory).
PADDING_ROOM = 15 / 16


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


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
