"""Style images: a local file, a URL downloaded once into the cache, or a generated one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from torchvision.transforms.v2 import functional as F

from nst_fast.data.samples import GENERATED_STYLES
from nst_fast.errors import NstFastError
from nst_fast.files import cache_dir, download
from nst_fast.images import read_image
from nst_fast.losses.vgg import MIN_IMAGE_SIZE

GENERATED_PREFIX = "generated:"


def style_image_path(spec: str) -> Path:
    """The local file for ``spec``: the path itself, or the cached download of a URL."""
    if spec.startswith(("http://", "https://")):
        name = Path(unquote(urlparse(spec).path)).name or "style.jpg"
        digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
        path = cache_dir("styles") / f"{digest}-{name}"
        if not path.exists():
            try:
                download(spec, path)
            except OSError as err:
                raise NstFastError(
                    f"style.image={spec}: download failed ({err}); download it yourself "
                    "and pass style.image=PATH"
                ) from err
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise NstFastError(
            f"style.image={spec}: no such file; pass style.image=PATH to an image, a URL, "
            f"or one of {', '.join(GENERATED_PREFIX + n for n in GENERATED_STYLES)}"
        )
    return path


def load_style_image(spec: str, size: int | None = None) -> torch.Tensor:
    """The style image as a float (3, H, W) tensor, its longer side resized to ``size``."""
    if size is not None and size < MIN_IMAGE_SIZE:
        raise NstFastError(
            f"style.size={size}: expected {MIN_IMAGE_SIZE} pixels or more (null: the image's "
            "own size)"
        )
    if spec.startswith(GENERATED_PREFIX):
        name = spec.removeprefix(GENERATED_PREFIX)
        if name not in GENERATED_STYLES:
            raise NstFastError(
                f"style.image={spec}: unknown generated style; "
                f"available: {', '.join(GENERATED_PREFIX + n for n in GENERATED_STYLES)}"
            )
        image = GENERATED_STYLES[name]()
    else:
        image = read_image(style_image_path(spec))
    if size is not None:
        h, w = image.shape[-2:]
        scale = size / max(h, w)
        image = F.resize(image, [round(h * scale), round(w * scale)], antialias=True)
    return image
