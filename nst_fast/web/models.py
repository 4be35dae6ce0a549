"""The models a page offers: the model files found in the paths given, each with its
style (or styles), its run and a thumbnail of its style image, labels made distinct.

Style images are read only when generated or inside a path given: the page shows nothing
of the machine but what it was pointed at.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nst_fast.errors import NstFastError

if TYPE_CHECKING:
    from PIL import Image

MODEL_SUFFIXES = (".pt", ".onnx", ".ts")
THUMBNAIL = 160  # px


@dataclass
class WebModel:
    """A model file the page offers: ``label`` is what the list shows."""

    path: Path
    style: str
    run: str
    thumbnail: Image.Image | None = None
    # A model of several styles: their names, in the order of its style weights.
    styles: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.style} ({self.run})" if self.run else self.style


def model_files(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(model file, the path given that holds it) for each file given and each model.pt,
    .onnx, .ts and .pth (pytorch/examples' saved models) file below each folder given
    (hidden folders left out), in order."""
    found: list[tuple[Path, Path]] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            found.append((path, path))
        elif path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if (p.name == "model.pt" or p.suffix.lower() in (".onnx", ".ts", ".pth"))
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise NstFastError(
                    f"{path}: no model files in this folder (model.pt, *.onnx, *.ts, *.pth); "
                    "train one (make demo) or name a model file"
                )
            found += [(p, path) for p in files]
        else:
            raise NstFastError(f"{path}: no such model file or folder")
    if not found:
        raise NstFastError("no models: name model files or folders (e.g. outputs/)")
    return found


def run_name(path: Path, given: Path) -> str:
    """Where a model sits: its folder below the path given (the run), with the file name
    where it is not model.pt; for a file given itself, its folder's name."""
    if given == path:
        parts = [path.parent.resolve().name]
    else:
        parts = list(path.parent.relative_to(given).parts) or [given.resolve().name]
    if path.name != "model.pt":
        parts.append(path.name)
    return "/".join(parts)


def describe(path: Path, given: Path, roots: Sequence[Path]) -> WebModel:
    """A model file's style (or styles), run and thumbnail; ``ModelFileError`` for a
    file that cannot be used. Style images are read only when they lie inside ``roots``."""
    from nst_fast.model_loading import detect_format, load_for_inference

    if detect_format(path) == "nst-fast":
        from nst_fast.export import load_network

        _, info = load_network(path)
        recorded = info.extra.get("style")  # a style's settings, a list of them for several
        specs = [s.get("image") for s in (recorded if isinstance(recorded, list) else [recorded])
                 if isinstance(s, dict)]  # fmt: skip
        images = [image for image in (thumbnail(spec, roots) for spec in specs) if image]
        return WebModel(
            path, info.style, run_name(path, given), contact_sheet(images), list(info.styles)
        )
    # TorchScript and ONNX files record their style's name, not its image.
    loaded = load_for_inference(path, torch.device("cpu"), torch.float32)
    return WebModel(path, loaded.style, run_name(path, given), styles=list(loaded.styles))


def thumbnail(spec: object, roots: Sequence[Path]) -> Image.Image | None:
    """The style image a model records, small: generated, or a file inside ``roots``;
    None for a URL, a file elsewhere, or one that cannot be read."""
    from nst_fast.images import to_pil
    from nst_fast.styles import GENERATED_PREFIX, load_style_image

    if not isinstance(spec, str) or spec.startswith(("http://", "https://")):
        return None
    if not spec.startswith(GENERATED_PREFIX):
        file = Path(spec).expanduser().resolve()
        inside = any(file == r or file.is_relative_to(r) for r in roots)
        if not inside or not file.is_file():
            return None
    try:
        return to_pil(load_style_image(spec, size=THUMBNAIL))
    except NstFastError:
        return None


def contact_sheet(images: list[Image.Image]) -> Image.Image | None:
    """One thumbnail for a model: its style image, or up to four of its styles' images
    in a 2x2 grid."""
    from PIL import Image, ImageOps

    if len(images) <= 1:
        return images[0] if images else None
    half = THUMBNAIL // 2
    sheet = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (217, 217, 217))
    for i, image in enumerate(images[:4]):
        sheet.paste(ImageOps.fit(image, (half, half)), (i % 2 * half, i // 2 * half))
    return sheet


def find_models(
    paths: Iterable[str | os.PathLike], warn: Callable[[str], None] | None = None
) -> list[WebModel]:
    """The models in ``paths`` (files, and folders searched for model.pt, .onnx, .ts, .pth),
    labels made distinct. A file that cannot be used is left out with one line to
    ``warn``; ``NstFastError`` when no model is left."""
    from nst_fast.export import ModelFileError

    paths = list(paths)
    found = model_files(paths)
    roots = [Path(p).resolve() for p in paths]
    models, skipped = [], []
    for path, given in found:
        try:
            models.append(describe(path, given, roots))
        except ModelFileError as err:
            skipped.append(str(err))
            if warn is not None:
                warn(f"left out: {err}")
    if not models:
        raise NstFastError(skipped[0] if len(skipped) == 1 else "none of the model files loads")
    seen: dict[str, int] = {}
    for model in models:
        seen[model.label] = seen.get(model.label, 0) + 1
    for model in models:
        if seen[model.label] > 1:
            model.run = str(model.path)
    return models
