"""Reading, converting and saving images: the one place that touches image files.

Images inside nst-fast are float tensors in [0, 1], shape (3, H, W), RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from nst_fast.errors import NstFastError
from nst_fast.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")

# Refuse decompression bombs: a 20000 x 20000 photo is already 1.2 GB as uint8 RGB.
Image.MAX_IMAGE_PIXELS = 400_000_000


class ImageReadError(NstFastError):
    """An image file that cannot be decoded."""


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (recursively), sorted, hidden files left out."""
    root = Path(root)
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_image_uint8(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3, H, W), EXIF orientation applied.

    torchvision's decoder handles JPEG (CMYK and grayscale included), PNG and WebP fast;
    anything else (TIFF, BMP, 16-bit PNG) goes through Pillow.
    """
    path = Path(path)
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        if image.ndim == 4:  # an animated GIF: its first frame, as Pillow reads WebP and APNG
            image = image[0]
        if image.dtype == torch.uint8:
            return image
    except (RuntimeError, ValueError):
        pass
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
                pil = pil.point(lambda v: v / 257).convert("L")
            return F.pil_to_tensor(pil.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err


def read_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Float RGB image in [0, 1]; ``size`` resizes the shorter side (keeping aspect)."""
    image = read_image_uint8(path)
    if size is not None:
        image = F.resize(image, [size], antialias=True)
    return F.to_dtype(image, torch.float32, scale=True)


def read_square(path: str | os.PathLike, size: int) -> torch.Tensor:
    """The centred square of a photo, ``size`` px a side (the shorter side resized to
    ``size``, then cropped): held-out photos are compared this way by ``nst-fast
    evaluate``, by validation during training and in the preview grids."""
    return F.center_crop(F.resize(read_image(path), [size], antialias=True), [size])


def resize(image: torch.Tensor, size: int | None, scale: float | None) -> torch.Tensor:
    """Resized so that the longer side is ``size`` px, or by the factor ``scale``."""
    h, w = image.shape[-2:]
    if size is not None:
        factor = size / max(h, w)
    elif scale is not None:
        factor = scale
    else:
        return image
    new = [max(1, round(h * factor)), max(1, round(w * factor))]
    return F.resize(image, new, antialias=True) if new != [h, w] else image


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """A photo's (height, width) upright (EXIF orientation applied), from its header
    alone; None when Pillow cannot tell (the photo fails later, as any unreadable one)."""
    try:
        with Image.open(path) as pil:
            w, h = pil.size
            turned = pil.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return (w, h) if turned else (h, w)


def read_alpha(path: str | os.PathLike) -> torch.Tensor | None:
    """The image's alpha channel as a float (1, H, W) in [0, 1], EXIF orientation applied;
    None when it has none (RGBA, LA, palette or grayscale with a transparent colour)."""
    path = Path(path)
    try:
        with Image.open(path) as pil:
            if pil.mode not in ALPHA_MODES and "transparency" not in pil.info:
                return None
            pil = ImageOps.exif_transpose(pil)
            alpha = pil.convert("RGBA").getchannel("A")
            return F.to_dtype(F.pil_to_tensor(alpha), torch.float32, scale=True)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err


def to_pil(image: torch.Tensor) -> Image.Image:
    """A float (3 or 4, H, W) image in about [0, 1] (clamped) as an RGB or RGBA Pillow image."""
    return F.to_pil_image(image.detach().float().clamp(0, 1).cpu())


def save_image(image: torch.Tensor, path: str | os.PathLike, quality: int = 95) -> Path:
    """Save a float image atomically: an interrupted write never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = to_pil(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise NstFastError(f"{path}: unknown image extension; use .jpg or .png")
    with atomic_write(path) as tmp:
        pil.save(tmp, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return path
