"""A dataset over any folder tree of photos that skips unreadable files instead of failing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from nst_fast.errors import NstFastError
from nst_fast.images import ImageReadError, list_images, read_image_uint8

log = logging.getLogger(__name__)

# Training crops are 256 px: a photo beyond 100 megapixels is a decompression bomb or a
# scan, and decoding it would stall a worker for seconds and gigabytes.
MAX_TRAINING_PIXELS = 100_000_000


def check_photo(path: Path) -> None:
    """Cheap checks before decoding: an empty file, or a header announcing a huge image."""
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: too large ({err})") from err
    except (OSError, ValueError):
        return  # let the decoder say what is wrong
    if width * height > MAX_TRAINING_PIXELS:
        raise ImageReadError(
            f"{path}: too large ({width}x{height} pixels; training photos are limited to "
            f"{MAX_TRAINING_PIXELS // 1_000_000} megapixels)"
        )


class PhotoFolder(Dataset):
    """Every image below ``root``.

    Item ``i`` is ``{"image": tensor, "path": str}``, or ``{"error": message}`` for a file
    that cannot be read, so one broken file never stops an epoch.
    """

    def __init__(
        self, root: str | os.PathLike, transform: Callable | None = None, repeat: int = 1
    ) -> None:
        self.root = Path(root).expanduser()
        if not str(root).strip() or not self.root.is_dir():  # '' would be the working folder
            raise NstFastError(
                f"data.root={root}: no such folder; point data.root at a folder of "
                "JPEG/PNG photos (see data/README.md for COCO)"
            )
        self.files: Sequence[Path] = list_images(self.root)
        if not self.files:
            raise NstFastError(
                f"data.root={root}: no JPEG/PNG images found in this folder or below it"
            )
        self.transform = transform
        # A handful of photos seen through random crops: one epoch passes them `repeat` times.
        self.repeat = max(1, repeat)

    def exclude(self, paths: Collection[Path]) -> None:
        """Leave ``paths`` out of the dataset: photos held out for validation are never
        trained on."""
        left_out = {Path(p).resolve() for p in paths}
        self.files = [f for f in self.files if f.resolve() not in left_out]

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.files[index % len(self.files)]
        try:
            check_photo(path)
            image = read_image_uint8(path)
            if self.transform is not None:
                image = self.transform(image)
        except (ImageReadError, OSError, RuntimeError, ValueError) as err:
            log.debug("skipping %s", err)
            return {"error": str(err) if isinstance(err, ImageReadError) else f"{path}: {err}"}
        return {"image": image, "path": str(path)}


def collate_skipping(batch: list[dict]) -> dict[str, torch.Tensor | list[str]]:
    """Collate the readable items; ``skipped`` lists why the others were left out."""
    good = [item for item in batch if "image" in item]
    out = default_collate(good) if good else {"image": torch.empty(0, 3, 0, 0), "path": []}
    out["skipped"] = [item["error"] for item in batch if "error" in item]
    return out
