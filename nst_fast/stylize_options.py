"""The options of stylizing files, checked before anything runs, and how messages name
them: as a Python keyword (``strength=2.0``) or as the command line's flag
(``--strength 2.0``), which ``Spelling`` decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nst_fast.errors import NstFastError
from nst_fast.tiling import DEFAULT_OVERLAP

# Formats Pillow writes; anything else read (GIF, ...) is written as PNG.
WRITABLE = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_SIZE = 8  # px, the longer side
MIN_TILE = 64  # px


@dataclass(frozen=True)
class Spelling:
    """How messages name an option: as the keyword of a Python call (``strength=2.0``)
    or, for the command line, as its flag (``--strength 2.0``, ``-o out``)."""

    flags: dict[str, str] | None = None

    def name(self, key: str) -> str:
        if self.flags is None:
            return key
        return self.flags.get(key, "--" + key.replace("_", "-"))

    def value(self, key: str, value: object) -> str:
        if self.flags is None:
            return f"{key}={value!r}"
        return f"{self.name(key)} {value}"


KEYWORDS = Spelling()


def check_options(
    *,
    size: int | None = None,
    scale: float | None = None,
    strength: float = 1.0,
    batch_size: int | None = None,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    ext: str | None = None,
    stroke: float = 1.0,
    spelling: Spelling = KEYWORDS,
) -> None:
    """``NstFastError`` naming the first option ``stylize_paths`` cannot use."""
    from nst_fast.stroke import check_stroke

    say = spelling.value
    check_stroke(stroke, say("stroke", stroke))
    if size is not None and scale is not None:
        raise NstFastError(f"{spelling.name('size')} and {spelling.name('scale')}: give one")
    if not 0 <= strength <= 1:
        raise NstFastError(f"{say('strength', strength)}: expected a number from 0 to 1")
    if size is not None and size < MIN_SIZE:
        raise NstFastError(
            f"{say('size', size)}: expected at least {MIN_SIZE} (px, the longer side)"
        )
    if scale is not None and not (0 < scale < math.inf):
        raise NstFastError(f"{say('scale', scale)}: expected a positive factor, e.g. 0.5")
    if batch_size is not None and batch_size < 1:
        raise NstFastError(f"{say('batch_size', batch_size)}: expected 1 or more")
    if tile is not None and tile != 0 and tile < MIN_TILE:
        raise NstFastError(
            f"{say('tile', tile)}: expected a size of {MIN_TILE} px or more "
            f"({'auto, off' if spelling.flags is not None else 'None: auto, 0: off'})"
        )
    if tile_overlap < 0:
        raise NstFastError(f"{say('tile_overlap', tile_overlap)}: expected 0 or more px")
    if ext is not None and f".{ext.lower().lstrip('.')}" not in WRITABLE:
        raise NstFastError(f"{say('ext', ext)}: expected one of {', '.join(WRITABLE)}")


def pick_dtype(device: torch.device, precision: str, spelling: Spelling = KEYWORDS) -> torch.dtype:
    """``auto`` (half precision where the hardware computes in it), fp32, fp16 or bf16."""
    from nst_fast.device import inference_dtype

    if precision == "auto":
        return inference_dtype(device, half=True)
    if precision not in PRECISIONS:
        raise NstFastError(
            f"{spelling.value('precision', precision)}: expected auto, {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device.type == "cpu":
        raise NstFastError(
            f"{spelling.value('precision', precision)}: not on the CPU; use fp32 or bf16"
        )
    return PRECISIONS[precision]
