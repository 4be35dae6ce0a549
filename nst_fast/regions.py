"""Where a photo is stylized, and in which style: masks and regions (Gatys et al. 2017,
"Controlling Perceptual Factors in Neural Style Transfer", spatial control).

* A mask (an image of any size with the photo's shape) says where: white is stylized,
  black keeps the photo, grey blends the two. It is applied to the finished output
  (``colour.blend``), so it works with every network and model file.
* Regions give a network of several styles a style per part of the photo: each style's
  mask becomes per-pixel style weights in the network's conditional instance norms
  (Dumoulin et al. 2017), so neighbouring regions meet in feature space, a soft mask
  giving a soft transition of strokes rather than a seam between two pasted outputs.
  ``StyleMapped`` carries the weights as extra channels of the photo, so that tiling
  and batching crop and stack them with it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from nst_fast.errors import NstFastError
from nst_fast.images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    image_size,
    read_alpha,
    read_image_uint8,
)
from nst_fast.video import VIDEO_SUFFIXES, is_video, video_frames

# A mask and a photo whose aspect ratios differ by more than this are refused, not
# stretched: a mask drawn for another photo (or a crop of it) would mark the wrong parts.
ASPECT_TOLERANCE = 0.02


class StyleMapped(nn.Module):
    """A network of several styles run on (B, 3 + styles, H, W) batches: the photo, then
    its per-pixel style weights as extra channels. Whatever crops, pads and stacks photos
    (tiles, batches) crops, pads and stacks their weights the same way."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :3], x[:, 3:])


_MAPPED: weakref.WeakKeyDictionary[nn.Module, StyleMapped] = weakref.WeakKeyDictionary()


def style_mapped(net: nn.Module) -> StyleMapped:
    """``StyleMapped(net)``, the same one for the same network (its prepared copy is
    then reused, ``nst_fast.prepared.prepared``)."""
    if net not in _MAPPED:
        _MAPPED[net] = StyleMapped(net)
    return _MAPPED[net]


def with_style_map(images: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) photos and their style map, (styles, H, W) for all or (B, styles,
    H, W) each, as ``StyleMapped``'s (B, 3 + styles, H, W) input."""
    if style.dim() == 3:
        style = style[None]
    if style.dim() != 4 or style.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"a style map of shape {tuple(style.shape)} for images of {tuple(images.shape)}: "
            "expected (styles, H, W) or (B, styles, H, W) of the images' H, W"
        )
    style = style.to(images).expand(images.shape[0], -1, -1, -1)
    return torch.cat([images, style], dim=1)


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask file as a uint8 (1, h, w): its brightness, times its alpha where it has one
    (so a mask painted on a transparent layer is black where unpainted). Kept in whole
    grey levels until scaled (``fit_mask``), so white stays exactly 1."""
    return grey(read_image_uint8(path), read_alpha(path))


def grey(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """A uint8 (3, h, w) image's brightness (ITU-R BT.601 luma), times ``alpha`` (1, h, w)
    in [0, 1] where given, as a uint8 (1, h, w) mask; white stays 255."""
    mask = torch.einsum("c,chw->hw", torch.tensor([0.299, 0.587, 0.114]), rgb.float())[None]
    if alpha is not None:
        mask = mask * alpha
    return mask.round().clamp(0, 255).to(torch.uint8)


def check_mask_shape(
    mask: Path, mask_size: Sequence[int], photo: Path, size: Sequence[int]
) -> None:
    """An ``NstFastError`` when the mask's aspect ratio is not the photo's."""
    (mh, mw), (h, w) = mask_size, size
    if abs(mw * h - w * mh) > ASPECT_TOLERANCE * w * mh:
        raise NstFastError(
            f"{mask}: a {mw}x{mh} mask for {photo} ({w}x{h}) has another shape; "
            "masks are scaled, not stretched: give one of the photo's shape"
        )


def fit_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A uint8 (1, h, w) mask scaled to the photo's ``size`` (H, W), in [0, 1]."""
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.resize(mask, list(size), antialias=True)
    return F.to_dtype(mask, torch.float32, scale=True)


def mask_file(mask: Path, name: Path) -> Path | None:
    """The mask for the photo named ``name`` (its path relative to what was given):
    ``mask`` itself, or in a folder of masks the file of the same name and any image (or
    video) suffix (``masks/trip/beach.png`` for ``photos/trip/beach.jpg``); None if
    missing."""
    if not mask.is_dir():
        return mask
    for suffix in (name.suffix, *IMAGE_SUFFIXES, *VIDEO_SUFFIXES):
        candidate = mask / name.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Region:
    """A style of the model (its index) and where it goes: a mask, or None for the rest
    of the photo (what the other regions' masks leave)."""

    style: int
    mask: Path | None


def parse_regions(spec: str, styles: Sequence[str], said: str) -> list[Region]:
    """``wave=sky.png,the_scream``: each style of the model named with its mask (a file,
    or a folder of masks matched by name), at most one without, which takes the rest.
    ``said``: how error messages name the option (``--regions ...``)."""
    regions: list[Region] = []
    for part in spec.split(","):
        name, has_mask, path = (s.strip() for s in part.partition("="))
        if name not in styles:
            raise NstFastError(f"{said}: no style {name!r}; the model has {', '.join(styles)}")
        if has_mask and not path:
            raise NstFastError(f"{said}: {name}= names no mask file")
        mask = Path(path) if has_mask else None
        if mask is not None and not mask.exists():
            raise NstFastError(f"{said}: {mask}: no such mask file or folder")
        regions.append(Region(styles.index(name), mask))
    if sum(region.mask is None for region in regions) > 1:
        raise NstFastError(f"{said}: only one style can take the rest (the others need =MASK)")
    if all(region.mask is None for region in regions):
        raise NstFastError(f"{said}: give a style a mask, e.g. {styles[0]}=sky.png")
    return regions


def style_map(
    masks: Sequence[tuple[int, torch.Tensor | None]], styles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel style weights (styles, H, W) summing to 1 at every pixel, and how much of
    each pixel the regions cover (1, H, W), from (style, mask (1, H, W) or None for the
    rest) pairs. Overlapping masks blend their styles; where none covers, the photo
    shows (the coverage is 0) and the weights are the even blend."""
    given = [mask for _, mask in masks if mask is not None]
    covered = torch.stack(given).sum(0)
    weights = torch.zeros(styles, *given[0].shape[-2:])
    for style, mask in masks:
        weights[style] += (1 - covered).clamp_min(0)[0] if mask is None else mask[0]
    total = weights.sum(0, keepdim=True)
    even = torch.full_like(weights, 1 / styles)
    return torch.where(total > 0, weights / total.clamp_min(1e-12), even), total.clamp(0, 1)


def checked_mask(path: Path, said: str) -> torch.Tensor:
    """``read_mask``, an ``NstFastError`` naming ``said`` for one that cannot be read or
    is all black (nothing would be stylized)."""
    try:
        mask = read_mask(path)
    except ImageReadError as err:
        raise NstFastError(f"{said}: {err}") from None
    if mask.max() == 0:
        raise NstFastError(f"{said}: {path} is all black: nothing would be stylized there")
    return mask


@dataclass
class Where:
    """Where each photo is stylized (``mask``) and, for a model of several styles, in
    which style (``regions``), resolved per photo by its name; ``said``: how messages
    name the options (``--mask``, ``--regions``)."""

    mask: Path | None = None
    regions: Sequence[Region] = ()
    styles: int = 0
    said: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self._read: dict[Path, torch.Tensor] = {}
        # A mask video's frames, decoded as a clip's frames are stylized: per (clip, mask).
        self._frames: dict[tuple[Path, Path], Iterator[torch.Tensor]] = {}

    @property
    def anything(self) -> bool:
        return self.mask is not None or bool(self.regions)

    def name(self, key: str) -> str:
        return (self.said or {}).get(key, key)

    def files(self, name: Path) -> list[tuple[str, Path | None]]:
        """The option and mask file each of the photo's masks comes from (None: the rest
        region); an ``NstFastError`` when a folder of masks has none for the photo."""
        wanted = [("mask", self.mask)] if self.mask is not None else []
        wanted += [("regions", region.mask) for region in self.regions]
        found = []
        for key, given in wanted:
            path = None if given is None else mask_file(given, name)
            if given is not None and path is None:
                raise NstFastError(
                    f"{self.name(key)}: {given} has no mask for {name} "
                    f"(a file named {name.with_suffix('.png')}, any image suffix)"
                )
            found.append((key, path))
        return found

    def read(self, key: str, path: Path) -> torch.Tensor:
        """A mask file, read and checked (``checked_mask``); one given for every photo is
        read once per run, a folder's one photo at a time."""
        if path in self._read:
            return self._read[path]
        mask = checked_mask(path, self.name(key))
        if path in (self.mask, *(region.mask for region in self.regions)):
            self._read[path] = mask
        return mask

    def per_frame(self, name: Path) -> bool:
        """Whether a mask of the clip named ``name`` is a video: a mask for each frame."""
        return any(path is not None and is_video(path) for _, path in self.files(name))

    def next_frame(self, key: str, path: Path, clip: Path) -> torch.Tensor:
        """The next frame of the mask video ``path`` for ``clip``, as a uint8 mask."""
        frames = self._frames.setdefault((clip, path), video_frames(path))
        try:
            return grey(next(frames))
        except StopIteration:
            raise NstFastError(
                f"{self.name(key)}: {path} has fewer frames than {clip}; give a mask video "
                "of as many frames, or one image for the whole clip"
            ) from None

    def check(self, photos: Sequence[tuple[Path, Path]]) -> None:
        """Before any work: every (photo, its name) has its masks, each readable, not all
        black, of the photo's shape (a video's: at its first frame, ``load``)."""
        if not self.anything:
            return  # nothing to check: no photo's header is opened
        for photo, name in photos:
            size = image_size(photo)
            for key, path in self.files(name):
                if path is None:
                    continue
                if is_video(path):
                    raise NstFastError(
                        f"{self.name(key)}: {path} is a video; a photo takes an image mask"
                    )
                mask = self.read(key, path)
                if size is not None:
                    check_mask_shape(path, mask.shape[-2:], photo, size)

    def load(
        self, photo: Path, name: Path, size: Sequence[int], check_shape: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The photo's mask (1, H, W) at its ``size`` (after any resizing), the regions'
        coverage included, and its style map (styles, H, W); None for what is not asked.
        ``check_shape``: check the masks' shape against ``size`` (a video's frames, which
        ``check`` did not see)."""
        mask, pairs = None, []
        regions = iter(self.regions)
        for key, path in self.files(name):
            fitted = None
            if path is not None:
                moving = check_shape and is_video(path)  # a clip's frame, its mask video's
                read = self.next_frame(key, path, photo) if moving else self.read(key, path)
                if check_shape:
                    check_mask_shape(path, read.shape[-2:], photo, size)
                fitted = fit_mask(read, size)
            if key == "mask":
                mask = fitted
            else:
                pairs.append((next(regions).style, fitted))
        if not pairs:
            return mask, None
        weights, coverage = style_map(pairs, self.styles)
        return (coverage if mask is None else mask * coverage), weights
