"""Demo material that needs no download: scikit-image's bundled photos and generated styles."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from nst_fast.files import cache_dir
from nst_fast.images import save_image

# Natural colour photos shipped inside scikit-image's wheel (others are fetched on demand).
# The demo trains on the first four and validates on the other two; the two views of the
# motorcycle, nearly one photo, both train.
TRAINING_PHOTOS = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right")
HELD_OUT_PHOTOS = ("coffee", "chelsea")
SAMPLE_PHOTOS = TRAINING_PHOTOS + HELD_OUT_PHOTOS


def _skimage_photo(name: str) -> torch.Tensor:
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        array = left if name.endswith("left") else right
    else:
        array = getattr(data, name)()
    return torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float() / 255


def sample_photos_dir(part: str = "") -> Path:
    """The bundled photos as PNG files, written once into the cache: the folder of all
    six, or of its ``part``, ``train`` or ``held_out``."""
    folder = cache_dir("demo_photos")
    for subfolder, names in (("train", TRAINING_PHOTOS), ("held_out", HELD_OUT_PHOTOS)):
        for name in names:
            path = folder / subfolder / f"{name}.png"
            if not path.exists():
                save_image(_skimage_photo(name), path)
    if part not in ("", "train", "held_out"):
        raise ValueError(f"sample photos: no part {part!r} (train, held_out)")
    return folder / part if part else folder


def mosaic(size: int = 512, cells: int = 180, seed: int = 0) -> torch.Tensor:
    """A stained-glass mosaic: curved cells in a bold palette, dark lead lines, brush streaks.

    Strong colours, hard edges and an oriented texture at several scales give the style
    loss something clear to learn, so the demo's result is unmistakable.
    """
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor(
        [
            [0.10, 0.20, 0.55],
            [0.95, 0.75, 0.15],
            [0.75, 0.10, 0.12],
            [0.05, 0.50, 0.50],
            [0.95, 0.45, 0.10],
            [0.92, 0.90, 0.80],
            [0.35, 0.15, 0.45],
            [0.15, 0.45, 0.15],
        ]
    )
    points = torch.rand(cells, 2, generator=g) * size
    colors = palette[torch.randint(len(palette), (cells,), generator=g)]
    colors = (colors * (0.8 + 0.4 * torch.rand(cells, 1, generator=g))).clamp(0, 1)
    angles = torch.rand(cells, generator=g) * math.pi
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    # Warp the plane so the cells curve like lead came, not straight Voronoi edges.
    wx = xx + 9 * torch.sin(yy / 19) + 5 * torch.sin((xx + yy) / 41)
    wy = yy + 9 * torch.cos(xx / 23) + 5 * torch.cos((xx - yy) / 37)
    coords = torch.stack([wx, wy], -1).reshape(-1, 2)
    labels = torch.cat([torch.cdist(chunk, points).argmin(1) for chunk in coords.split(16384)])
    labels = labels.reshape(size, size)
    theta = angles[labels]
    streaks = torch.sin((xx * torch.cos(theta) + yy * torch.sin(theta)) / 2.5)
    image = colors[labels].permute(2, 0, 1) * (0.85 + 0.15 * streaks)
    edge = torch.zeros(size, size)
    edge[1:, :] += (labels[1:, :] != labels[:-1, :]).float()
    edge[:, 1:] += (labels[:, 1:] != labels[:, :-1]).float()
    edge = F.max_pool2d(edge[None, None].clamp(0, 1), 5, stride=1, padding=2)[0]
    return (image * (1 - edge) + 0.05 * edge).clamp(0, 1)


GENERATED_STYLES = {"mosaic": mosaic}
