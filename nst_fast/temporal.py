"""Temporal stability: how much a network's output flickers on video.

The warping error of Lai et al. (2018, "Learning Blind Video Temporal Consistency"):
each output frame is warped onto the next by the motion between the two input frames,
and the difference is averaged over the pixels visible in both. Here the motion is known
exactly: short clips are made from a still photo by a slow pan, a zoom or a small
rotation with sub-pixel steps, plus per-frame sensor-like noise. The same figure for the
input clip itself is the floor that interpolation and the noise leave.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Sensor-like noise per frame, in [0, 1] units (about 1.5 grey levels).
NOISE = 0.006
# Steady statistics for video (``inference.steady_statistics``): the weight of the past
# frames' instance-norm statistics in each frame's.
STEADY_MOMENTUM = 0.9
# The first frame shows the photo's centre, 1 / MARGIN of its shorter side: room for the
# motions to stay on the photo.
MARGIN = 1.25


@dataclass(frozen=True)
class Motion:
    """A camera motion per frame: a shift in px of a 256 px frame (scaled with the frame,
    as zooms and rotations are), a zoom factor, a rotation in degrees."""

    shift: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    degrees: float = 0.0

    def matrix(self, frame: int, size: int) -> torch.Tensor:
        """The 3x3 map from frame ``frame``'s pixel coordinates (x, y, 1) to the first
        frame's: the motion ``frame`` times over, about the frame's centre."""
        c = (size - 1) / 2
        angle = math.radians(self.degrees * frame)
        scale = self.zoom**-frame  # zooming in: each frame sees a smaller part
        cos, sin = scale * math.cos(angle), scale * math.sin(angle)
        dx, dy = (s * frame * size / 256 for s in self.shift)
        return torch.tensor(
            [
                [cos, -sin, c - cos * c + sin * c + dx],
                [sin, cos, c - sin * c - cos * c + dy],
                [0.0, 0.0, 1.0],
            ],
            dtype=torch.float64,
        )


# Slow enough that consecutive frames overlap almost whole, in sub-pixel steps.
MOTIONS = {
    "pan": Motion(shift=(0.7, 0.3)),
    "zoom": Motion(zoom=1.006),
    "rotate": Motion(degrees=0.25),
}


@dataclass
class Clip:
    """Frames (T, 3, size, size) and, for each, the map from its pixels to the photo's."""

    frames: torch.Tensor
    to_photo: list[torch.Tensor]


def sample(image: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples of a (3, H, W) image at pixel coordinates ``points`` (h, w, 2),
    and the mask (h, w) of points inside the image, where the samples are exact."""
    h, w = image.shape[-2:]
    x, y = points[..., 0], points[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    # Pixel centres at integers: align_corners=True maps -1 and 1 to the corner pixels.
    grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], -1).float()
    out = F.grid_sample(image[None], grid[None], mode="bilinear", align_corners=True)
    return out[0], inside


def pixel_grid(size: int) -> torch.Tensor:
    """The (size, size, 3) homogeneous pixel coordinates (x, y, 1) of a square frame."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )  # fmt: skip
    return torch.stack([xs, ys, torch.ones_like(xs)], -1)


def map_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return (points @ matrix.T)[..., :2]


def known_motion_clip(
    photo: torch.Tensor,
    motion: Motion,
    frames: int = 8,
    size: int = 256,
    noise: float = NOISE,
    seed: int = 0,
) -> Clip:
    """A clip of ``frames`` square frames of ``size`` px filmed from ``photo`` (3, H, W)
    by ``motion``: the first frame is the photo's centred square (shorter side resized
    to ``size`` plus a margin the motion stays inside), noise added to each frame."""
    side = min(photo.shape[-2:])
    scale = side / (size * MARGIN)  # photo pixels per frame pixel
    offset_x = (photo.shape[-1] - scale * (size - 1)) / 2
    offset_y = (photo.shape[-2] - scale * (size - 1)) / 2
    first_to_photo = torch.tensor(
        [[scale, 0.0, offset_x], [0.0, scale, offset_y], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    # Sampling every `scale` photo pixels would alias: low-pass the photo first.
    source = _blurred(photo, scale) if scale > 1 else photo
    generator = torch.Generator().manual_seed(seed)
    points, shots, maps = pixel_grid(size), [], []
    for t in range(frames):
        to_photo = first_to_photo @ motion.matrix(t, size)
        image, inside = sample(source, map_points(to_photo, points))
        if not inside.all():
            raise ValueError(f"the {motion} leaves the photo by frame {t}: use fewer frames")
        grain = noise * torch.randn(image.shape, generator=generator)
        shots.append((image + grain).clamp(0, 1))
        maps.append(to_photo)
    return Clip(torch.stack(shots), maps)


def _blurred(photo: torch.Tensor, scale: float) -> torch.Tensor:
    """``photo`` low-passed for sampling every ``scale`` pixels (a Gaussian of sigma
    about scale / 2), at its own size so that sampling stays exact in its coordinates."""
    sigma = 0.5 * scale
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=photo.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = photo.shape[0]
    image = photo[None]
    pad = (radius, radius, radius, radius)
    image = F.pad(image, pad, mode="replicate")
    image = F.conv2d(image, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    image = F.conv2d(image, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return image[0]


def warping_error(frames: torch.Tensor, clip: Clip) -> float:
    """Lai et al.'s warping error of ``frames`` (T, 3, H, W) in [0, 1], made from ``clip``:
    each frame warped onto the next by the clip's known motion, the mean absolute
    difference over the pixels visible in both and the three channels, averaged over the
    frame pairs; in grey levels (0-255)."""
    size = frames.shape[-1]
    points = pixel_grid(size)
    errors = []
    for t in range(len(frames) - 1):
        # A pixel of frame t+1 shows the photo's point to_photo[t+1] p; frame t showed it
        # at to_photo[t]^-1 to_photo[t+1] p.
        onto = torch.linalg.solve(clip.to_photo[t], clip.to_photo[t + 1])
        warped, visible = sample(frames[t].float(), map_points(onto, points))
        difference = (frames[t + 1].float() - warped).abs().mean(0)
        errors.append(float(difference[visible].mean()))
    return 255 * sum(errors) / len(errors)


def temporal_errors(
    stylize: Callable[[torch.Tensor], torch.Tensor],
    photos: list[torch.Tensor],
    frames: int = 8,
    size: int = 256,
) -> dict[str, tuple[float, float]]:
    """For each motion of ``MOTIONS``: the warping error of ``stylize`` (the frames of a
    clip (T, 3, H, W) to their stylization, as a video is stylized) and the floor, the
    same figure for the clips themselves; means over ``photos``."""
    figures = {}
    for name, motion in MOTIONS.items():
        errors, floors = [], []
        for seed, photo in enumerate(photos):
            clip = known_motion_clip(photo, motion, frames, size, seed=seed)
            errors.append(warping_error(stylize(clip.frames), clip))
            floors.append(warping_error(clip.frames, clip))
        figures[name] = (sum(errors) / len(errors), sum(floors) / len(floors))
    return figures


def shift_error(
    stylize: Callable[[torch.Tensor], torch.Tensor], photo: torch.Tensor, shift: int, size: int
) -> float:
    """How far a network is from moving its output with the photo: the mean absolute
    difference, in grey levels, between the stylized ``size`` px window of ``photo``
    (3, H, W) moved ``shift`` px to the right and the stylized unmoved window, moved;
    away from the borders, where padding differs. A network with a total stride of 4 that
    re-draws its output on its grid scores near 0 at 4 and far more at 1 to 3."""
    if photo.shape[-1] < size + shift or photo.shape[-2] < size:
        raise ValueError(f"a {tuple(photo.shape[-2:])} photo has no {size} px window moved {shift}")
    border = max(4, size // 8)
    windows = torch.stack([photo[:, :size, :size], photo[:, :size, shift : shift + size]])
    still, moved = stylize(windows).float()
    inner = slice(border, size - border)
    kept = moved[:, inner, border : size - border - shift]
    return 255 * float((kept - still[:, inner, border + shift : size - border]).abs().mean())
