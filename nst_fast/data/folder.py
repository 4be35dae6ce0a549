"""A dataset over any folder tree of photos that skips unreadable files instead of failing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from nst_fast.errors import NstFastError
from nst_fast.images import ImageReadError, list_images, read_image_uint8

log = logging.getLogger(__name__)


class PhotoFolder(Dataset):
    """Every image below ``root``; item ``i`` is ``{"image": tensor}`` or None if unreadable."""

    def __init__(
        self, root: str | os.PathLike, transform: Callable | None = None, repeat: int = 1
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
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

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        path = self.files[index % len(self.files)]
        try:
            image = read_image_uint8(path)
        except ImageReadError as err:
            log.warning("skipping %s", err)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image}


def collate_skipping(batch: list[dict | None]) -> dict[str, torch.Tensor | int]:
    """Collate the readable items; ``skipped`` counts the unreadable ones in this batch."""
    good = [item for item in batch if item is not None]
    out = default_collate(good) if good else {"image": torch.empty(0, 3, 0, 0)}
    out["skipped"] = len(batch) - len(good)
    return out
