"""The stylizing a page shares among its visitors: the models loaded on first use, each
style or blend's network kept ready, one image at a time per network, finished as
``nst-fast stylize`` finishes it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nst_fast.errors import NstFastError
from nst_fast.web.models import WebModel, find_models
from nst_fast.web.uploads import MAX_MEGAPIXELS

if TYPE_CHECKING:
    from nst_fast.stylize_options import Spelling

STYLIZERS_KEPT = 16  # networks of a style or blend kept ready, the most recently used


@dataclass
class Engine:
    """Loaded models and how they stylize, shared by every visitor: one image at a time
    per network (tiling shares a network's norm statistics between its tiles)."""

    models: list[WebModel]
    device: torch.device
    dtype: torch.dtype
    max_pixels: int = int(MAX_MEGAPIXELS * 1e6)
    _loaded: dict[Path, Any] = field(default_factory=dict, repr=False)
    # (model file, style choice) -> (Stylizer, its lock), the most recently used last.
    _stylizers: OrderedDict[tuple[Path, str], tuple[Any, threading.Lock]] = field(
        default_factory=OrderedDict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.models]

    def model(self, label: str) -> WebModel:
        for model in self.models:
            if model.label == label:
                return model
        raise NstFastError(f"model {label!r}: not on this page; pick one from the list")

    def stylizer(self, label: str, style: str | None = None) -> tuple[Any, threading.Lock]:
        """The ``tiling.Stylizer`` of a model, loaded on first use, and its lock. For a
        model of several styles, ``style`` picks one by name or a blend
        (``wave=0.7,starry_night=0.3``), as ``nst-fast stylize --style`` does."""
        from nst_fast.memory import max_pixels
        from nst_fast.model_loading import load_for_inference, style_choices
        from nst_fast.tiling import Stylizer

        model = self.model(label)
        key = (model.path, "".join((style or "").split()))
        with self._lock:
            if key in self._stylizers:
                self._stylizers.move_to_end(key)
                return self._stylizers[key]
            if model.path not in self._loaded:
                self._loaded[model.path] = load_for_inference(model.path, self.device, self.dtype)
            loaded = self._loaded[model.path]
            if loaded.styles and style in (None, "all"):
                a, b = loaded.styles[:2]
                raise NstFastError(
                    f"{label} has several styles ({', '.join(loaded.styles)}): pick one, or "
                    f"a blend such as {a}=0.5,{b}=0.5"
                )
            ((_, chosen),) = style_choices(style, loaded, f"Style {style}")
            dtype = torch.float32 if chosen.format == "onnx" else self.dtype
            stylizer = Stylizer(
                chosen.run,
                max_pixels(self.device, chosen.channels, dtype),
                net=chosen.net,
                multiple=chosen.multiple,
            )
            self._stylizers[key] = (stylizer, threading.Lock())
            while len(self._stylizers) > STYLIZERS_KEPT:  # blends a visitor tried long ago
                self._stylizers.popitem(last=False)
            return self._stylizers[key]

    def stylize(
        self,
        label: str,
        image: torch.Tensor,
        *,
        style: str | None = None,
        strength: float = 1.0,
        preserve_color: bool = False,
        size: int | None = None,
        tick: Callable[[], None] | None = None,
        mask: torch.Tensor | None = None,
        names: tuple[str, str] = ("mask", "photo"),
    ) -> torch.Tensor:
        """A (3, H, W) image in [0, 1] stylized as ``nst-fast stylize`` does: resized so its
        longer side is ``size`` px first (None: its own size), tiled when too large for
        one pass; ``style`` for a model of several (see ``stylizer``); ``tick()`` after
        each pass (each tile of a tiled image). ``mask`` (``regions.read_mask``'s, of the
        image's shape; ``names``: the mask's and the photo's names in messages) keeps the
        photo where it is black, as ``nst-fast stylize --mask``."""
        from nst_fast.colour import Finish
        from nst_fast.images import resize
        from nst_fast.regions import check_mask_shape, fit_mask
        from nst_fast.stylize_options import check_options

        check_options(size=size, strength=strength)
        if mask is not None:
            check_mask_shape(Path(names[0]), mask.shape[-2:], Path(names[1]), image.shape[-2:])
        content = resize(image, size, None)[None]
        stylizer, lock = self.stylizer(label, style)
        with lock:
            run = stylizer.run
            if tick is not None:

                def counted(batch: torch.Tensor) -> torch.Tensor:
                    out = run(batch)
                    tick()
                    return out

                stylizer.run = counted
            try:
                out = stylizer(content)
            finally:
                stylizer.run = run
        if not out.isfinite().all():
            raise NstFastError(
                f"{label}: the model computed NaN or infinite values; "
                "try nst-fast serve --precision fp32"
            )
        fitted = None if mask is None else fit_mask(mask, content.shape[-2:])[None]
        return Finish(strength, preserve_color)(out, content, fitted)[0]


def make_engine(
    paths: Iterable[str | os.PathLike],
    device: str | torch.device = "auto",
    precision: str = "auto",
    max_megapixels: float = MAX_MEGAPIXELS,
    warn: Callable[[str], None] | None = None,
    spelling: Spelling | None = None,
) -> Engine:
    """The models in ``paths`` ready to stylize on ``device`` in ``precision``; messages
    name the options as ``spelling`` spells them (keywords by default)."""
    from nst_fast.device import pick_device
    from nst_fast.stylize_options import KEYWORDS, pick_dtype

    spelling = spelling or KEYWORDS
    if not max_megapixels > 0:
        raise NstFastError(
            f"{spelling.value('max_megapixels', max_megapixels)}: expected a positive number"
        )
    models = find_models(paths, warn)
    chosen = pick_device(str(device))
    dtype = pick_dtype(chosen, precision, spelling)
    return Engine(models, chosen, dtype, int(max_megapixels * 1e6))
