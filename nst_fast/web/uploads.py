"""What a visitor sends, checked: the limits on uploads, a photo's size read from its
header before anything is decoded, and the page's output size box.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nst_fast.errors import NstFastError

# What a visitor may send: the file size (Gradio refuses larger uploads on the page) and
# the pixels of one photo (checked from the header, before anything is decoded).
MAX_UPLOAD_MB = 50
MAX_MEGAPIXELS = 40.0


def photo_size(path: Path, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the file's header, before anything is decoded; an
    ``NstFastError`` naming ``name`` for a file that is not an image or too large."""
    from PIL import Image

    megapixels = f"{max_pixels / 1e6:g} megapixels"
    too_large = f"this page takes photos up to {megapixels}; resize it, or use nst-fast stylize"
    if path.stat().st_size == 0:
        raise NstFastError(f"{name}: an empty file; upload a photo (JPEG, PNG, WebP ...)")
    try:
        with Image.open(path) as pil:
            width, height = pil.size
    except Image.DecompressionBombError as err:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise NstFastError(f"{name}: more than {limit:.0f} megapixels; {too_large}") from err
    except (OSError, ValueError) as err:
        raise NstFastError(
            f"{name}: not an image Pillow reads; upload a photo (JPEG, PNG, WebP ...)"
        ) from err
    if width * height > max_pixels:
        raise NstFastError(
            f"{name}: {width}x{height} px is {width * height / 1e6:.0f} megapixels; {too_large}"
        )
    return width, height


def read_photo(
    path: Path, name: str, max_pixels: int, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An uploaded photo and its alpha channel, checked first (``photo_size``), and so is
    its size after resizing the longer side to ``size`` px."""
    from nst_fast.images import ImageReadError, read_alpha, read_image

    width, height = photo_size(path, name, max_pixels)
    if size is not None:
        factor = size / max(width, height)
        pixels = round(width * factor) * round(height * factor)
        if pixels > max_pixels:
            raise NstFastError(
                f"{name}: at Output size {size} it would be {pixels / 1e6:.0f} megapixels; "
                f"this page makes up to {max_pixels / 1e6:g}: choose a smaller size"
            )
    try:
        return read_image(path), read_alpha(path)
    except ImageReadError as err:
        raise NstFastError(f"{name}: not a readable image; upload a photo") from err


def output_size(value: float | None) -> int | None:
    """The page's size box: empty or 0 keeps the photo's own size."""
    from nst_fast.stylize_options import MIN_SIZE

    if value is None or value == 0:
        return None
    if not math.isfinite(value) or value != int(value) or value < MIN_SIZE:
        raise NstFastError(
            f"Output size {value:g}: expected {MIN_SIZE} px or more, or 0 for the photo's own"
        )
    return int(value)
