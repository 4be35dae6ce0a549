"""A web page to stylize photos and a webcam live, built on Gradio (``pip install -e ".[web]"``).

``nst-fast serve`` runs ``serve``; from Python::

    from nst_fast.web import build_app, serve

    serve(["outputs/"])  # prints the address, serves until interrupted
    app = build_app(["outputs/demo/model.pt"])  # a gradio.Blocks to launch or mount yourself

The page stylizes as ``nst-fast stylize`` does (``batch.stylize_paths``): the same model
loading, precision, strength, colour preservation, output size (the longer side) and
tiling of photos too large for one pass. It reads the model files it is given and the
photos visitors upload, nothing else: a style image is shown as a thumbnail when the
model generates it (``generated:...``) or when the file lies inside a path given.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nst_fast.errors import NstFastError

if TYPE_CHECKING:
    import gradio as gr
    import numpy as np
    from PIL import Image

    from nst_fast.batch import Spelling

INSTALL = 'the web page needs Gradio: pip install -e ".[web]"'
MODEL_SUFFIXES = (".pt", ".onnx", ".ts")
# What a visitor may send: the file size (Gradio refuses larger uploads on the page) and
# the pixels of one photo (checked from the header, before anything is decoded).
MAX_UPLOAD_MB = 50
MAX_MEGAPIXELS = 40.0
WEBCAM_SIZES = ("auto", "128", "192", "256", "384", "512", "720")
WEBCAM_SHOWN = 640  # px, the longer side of a stylized frame as sent back
WEBCAM_START = 256  # px, the longer side where "auto" starts
WEBCAM_FPS = 5.0  # "auto" shrinks frames below this rate and grows them well above it
WEBCAM_SMALLEST = 128  # px: "auto" goes no smaller
WEBCAM_INTERVAL = 0.1  # s between frames the browser sends
THUMBNAIL = 160  # px
STYLIZERS_KEPT = 16  # networks of a style or blend kept ready, the most recently used


def require_gradio() -> Any:
    """The gradio module, or an ``NstFastError`` saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise NstFastError(INSTALL) from err
    return gradio


# --- models -------------------------------------------------------------------------------


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
    from nst_fast.formats import detect_format, load_for_inference

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
        """The ``inference.Stylizer`` of a model, loaded on first use, and its lock. For a
        model of several styles, ``style`` picks one by name or a blend
        (``wave=0.7,starry_night=0.3``), as ``nst-fast stylize --style`` does."""
        from nst_fast.formats import load_for_inference, style_choices
        from nst_fast.inference import Stylizer, max_pixels

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
    ) -> torch.Tensor:
        """A (3, H, W) image in [0, 1] stylized as ``nst-fast stylize`` does: resized so its
        longer side is ``size`` px first (None: its own size), tiled when too large for
        one pass; ``style`` for a model of several (see ``stylizer``); ``tick()`` after
        each pass (each tile of a tiled image)."""
        from nst_fast.batch import Finish, check_options, resize

        check_options(size=size, strength=strength)
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
        return Finish(strength, preserve_color)(out, content)[0]


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
    from nst_fast.batch import MIN_SIZE

    if value is None or value == 0:
        return None
    if not math.isfinite(value) or value != int(value) or value < MIN_SIZE:
        raise NstFastError(
            f"Output size {value:g}: expected {MIN_SIZE} px or more, or 0 for the photo's own"
        )
    return int(value)


# --- the page -----------------------------------------------------------------------------


@dataclass
class Webcam:
    """One visitor's stream: the frame size "auto" has reached and the measured rate."""

    size: float = WEBCAM_START
    last: float | None = None
    fps: float | None = None

    def measure(self, now: float, seconds: float, auto: bool, largest: int) -> None:
        if self.last is not None and now > self.last:
            rate = 1 / (now - self.last)
            self.fps = rate if self.fps is None else 0.7 * self.fps + 0.3 * rate
        self.last = now
        if auto:  # a frame that took longer than the rate wants shrinks the next ones
            if seconds > 1.2 / WEBCAM_FPS:
                self.size = max(WEBCAM_SMALLEST, self.size * 0.85)
            elif seconds < 0.5 / WEBCAM_FPS:
                self.size = min(largest, self.size * 1.1)


def build_app(
    paths: Iterable[str | os.PathLike],
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    max_megapixels: float = MAX_MEGAPIXELS,
    warn: Callable[[str], None] | None = None,
) -> gr.Blocks:
    """The page for the models in ``paths`` (files, and folders searched for model.pt,
    .onnx and .ts): a gradio.Blocks, queued, to ``launch()`` (``serve`` does) or mount.

    ``device`` and ``precision`` as for ``nst-fast stylize``; photos over
    ``max_megapixels`` are refused with a message on the page. Bound the size of
    uploads with ``launch(max_file_size=...)``, as ``serve`` does. ``NstFastError`` when
    gradio is missing, a path names nothing or no model loads.
    """
    gr = require_gradio()
    engine = make_engine(paths, device, precision, max_megapixels, warn)
    return _page(gr, engine, Path(tempfile.mkdtemp(prefix="nst-fast-web-")))


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
    from nst_fast.batch import KEYWORDS, pick_dtype
    from nst_fast.device import pick_device

    spelling = spelling or KEYWORDS
    if not max_megapixels > 0:
        raise NstFastError(
            f"{spelling.value('max_megapixels', max_megapixels)}: expected a positive number"
        )
    models = find_models(paths, warn)
    chosen = pick_device(str(device))
    dtype = pick_dtype(chosen, precision, spelling)
    return Engine(models, chosen, dtype, int(max_megapixels * 1e6))


def _page(gr: Any, engine: Engine, outputs: Path) -> gr.Blocks:
    import numpy as np

    from nst_fast.batch import resize
    from nst_fast.images import save_image, to_pil

    first = engine.labels[0]

    def gallery_items() -> list[tuple[Any, str]]:
        items = []
        for model in engine.models:
            image = model.thumbnail
            if image is None:  # a neutral tile: the model records no style image we may read
                image = to_pil(torch.full((3, THUMBNAIL, THUMBNAIL), 0.85))
            items.append((image, model.label))
        return items

    def styles_asked(label: str, style: str | None) -> list[str | None]:
        """None for a model of one style; for one of several, the style or blend asked,
        or each of its styles for "all" (nst-fast stylize's default)."""
        names = engine.model(label).styles
        if not names:
            return [None]
        return list(names) if style in (None, "", "all") else [style]

    def stylize_photos(
        files: list[str] | None,
        label: str,
        style: str | None,
        strength: float,
        preserve: bool,
        size: float | None,
        progress: Any = gr.Progress(),  # noqa: B008 (gradio's way to report progress)
    ) -> tuple[list[str], list[str], list[str], str]:
        """Each photo stylized (in each style asked); a photo that cannot be is a line
        on the page (a toast and the status line), the others go on."""
        originals, results, problems = [], [], []
        strength = 1.0 if strength is None else strength
        try:
            longer = output_size(size)
            if not files:
                raise NstFastError("no photos: upload one or more first")
        except NstFastError as err:
            problems.append(str(err))
            files = []
        for old in outputs.iterdir():  # copied into Gradio's cache long since
            if time.time() - old.stat().st_mtime > 600:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=outputs))
        for i, file in enumerate(files):
            path = Path(file)
            name = path.name
            progress((i, len(files)), desc=f"{name}: reading", unit="photos")
            passes = 0

            def tick(name: str = name) -> None:
                nonlocal passes
                passes += 1
                if passes > 1:  # a tiled photo: one pass per tile
                    progress((passes, None), desc=f"{name}: {passes} tiles done", unit="tiles")

            try:
                image, alpha = read_photo(path, name, engine.max_pixels, longer)
            except NstFastError as err:
                problems.append(str(err))
                continue
            originals.append(str(path))
            for chosen in styles_asked(label, style):
                progress((i, len(files)), desc=f"{name}: stylizing", unit="photos")
                try:
                    out = engine.stylize(
                        label, image, style=chosen, strength=strength, preserve_color=preserve,
                        size=longer, tick=tick,
                    )  # fmt: skip
                except NstFastError as err:
                    problems.append(str(err))
                    break  # the same for every photo
                if alpha is not None:  # kept, as nst-fast stylize keeps it
                    out = torch.cat([out, resize(alpha, longer, None)])
                named = re.sub(r"[^\w.-]+", "_", chosen or engine.model(label).style)
                results.append(str(save_image(out, folder / f"{path.stem}-{named}.png")))
        for line in problems:
            gr.Warning(line)
        lines = [f"{len(results)} stylized with {label}."] if results else []
        lines += [f"⚠ {line}" for line in problems]
        return originals, results, results, "\n\n".join(lines)

    def webcam_frame(
        frame: np.ndarray | None,
        label: str,
        style: str | None,
        strength: float,
        preserve: bool,
        choice: str,
        state: Webcam | None,
    ) -> tuple[Any, str, Webcam]:
        state = state or Webcam()
        if frame is None:
            return None, "", state
        image = torch.from_numpy(np.array(frame[..., :3])).permute(2, 0, 1).float() / 255
        auto = choice not in WEBCAM_SIZES[1:]  # "auto", or a value the page never offered
        strength = 1.0 if strength is None else strength
        largest = max(image.shape[-2:])
        longer = min(largest, round(state.size) if auto else int(choice))
        start = time.perf_counter()
        chosen = styles_asked(label, style)
        try:
            out = engine.stylize(
                label, image, style=chosen[0], strength=strength,
                preserve_color=preserve, size=longer,
            )  # fmt: skip
        except NstFastError as err:
            return None, f"⚠ {err}", state
        now = time.perf_counter()
        state.measure(now, now - start, auto, largest)
        h, w = out.shape[-2:]
        rate = "…" if state.fps is None else f"{state.fps:.1f}"
        text = f"**{rate} frames/s** at {w}x{h} px ({'auto' if auto else choice})"
        if len(chosen) > 1:  # "all": one picture a frame, so the first style, said so
            text += f"; all: the webcam shows one style, {chosen[0]} (pick another in Style)"
        shown = min(largest, WEBCAM_SHOWN)
        if max(h, w) < shown:  # shown as large as the camera's picture, up to 640 px
            out = resize(out, shown, None)
        pixels = (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return pixels, text, state

    def pick(evt: Any) -> Any:
        return gr.update(value=engine.labels[evt.index])

    def style_choice(label: str) -> Any:
        """The Style box: shown for a model of several styles, offering them and "all"."""
        names = engine.model(label).styles
        if not names:
            return gr.update(visible=False, choices=[], value=None)
        return gr.update(visible=True, choices=[*names, "all"], value=names[0])

    pick.__annotations__["evt"] = gr.SelectData  # how gradio knows to pass the click

    # Gradio copies results into its cache, from which it deletes them after a day.
    with gr.Blocks(title="nst-fast", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown("# nst-fast\nFast neural style transfer: pick a style, then a tab.")
        styles = gr.Gallery(
            gallery_items(), label="Styles (click one to pick it)", columns=6, height=200,
            allow_preview=False, object_fit="cover", fit_columns=False, elem_id="styles",
        )  # fmt: skip
        with gr.Row():
            model = gr.Dropdown(engine.labels, value=first, label="Model", elem_id="model")
            strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength", elem_id="strength")
            preserve = gr.Checkbox(label="Preserve colours", elem_id="preserve")
        several = engine.model(first).styles
        style = gr.Dropdown(
            [*several, "all"] if several else [], value=several[0] if several else None,
            label="Style", allow_custom_value=True, visible=bool(several), elem_id="style",
            info="this model has several: one of them, all (photos), or a blend such as "
            "wave=0.7,starry_night=0.3",
        )  # fmt: skip
        styles.select(pick, None, model, show_progress="hidden", queue=False)
        model.change(style_choice, model, style, show_progress="hidden", queue=False)
        with gr.Tabs():
            with gr.Tab("Photo", id="photo"):
                with gr.Row():
                    files = gr.File(
                        file_count="multiple", label="Photos (drop one or more)",
                        elem_id="photos", height=160,
                    )  # fmt: skip
                    size = gr.Number(
                        0, label="Output size (px, longer side; 0 = the photo's own)",
                        precision=0, minimum=0, elem_id="size",
                    )  # fmt: skip
                    go = gr.Button("Stylize", variant="primary", elem_id="stylize")
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    before = gr.Gallery(
                        label="Photo", columns=1, object_fit="contain", elem_id="before",
                        format="png", height=480,
                    )  # fmt: skip
                    after = gr.Gallery(
                        label="Stylized", columns=1, object_fit="contain", elem_id="after",
                        format="png", height=480, buttons=["download", "fullscreen"],
                    )  # fmt: skip
                downloads = gr.File(label="Download at full size", elem_id="downloads")
                go.click(
                    stylize_photos,
                    [files, model, style, strength, preserve, size],
                    [before, after, downloads, status],
                    concurrency_limit=1,
                    concurrency_id="stylize",
                    show_progress_on=[after],
                )
            with gr.Tab("Webcam", id="webcam"):
                with gr.Row():
                    camera = gr.Image(
                        sources=["webcam"], streaming=True, type="numpy", label="Camera",
                        elem_id="camera", webcam_options=gr.WebcamOptions(constraints={
                            "video": {"width": {"ideal": 640}, "height": {"ideal": 480}}
                        }),
                    )  # fmt: skip
                    live = gr.Image(label="Stylized", streaming=True, elem_id="live")
                with gr.Row():
                    frame_size = gr.Dropdown(
                        list(WEBCAM_SIZES), value="auto", elem_id="webcam-size",
                        label="Frame size (px, longer side; auto: what keeps up)",
                    )  # fmt: skip
                    fps = gr.Markdown(elem_id="fps")
                state = gr.State(None)
                camera.stream(
                    webcam_frame,
                    [camera, model, style, strength, preserve, frame_size, state],
                    [live, fps, state],
                    stream_every=WEBCAM_INTERVAL,
                    time_limit=600,
                    concurrency_limit=4,
                    concurrency_id="webcam",
                    show_progress="hidden",
                )
    page.queue(default_concurrency_limit=1)
    return page


def serve(
    paths: Iterable[str | os.PathLike],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    device: str | torch.device = "auto",
    precision: str = "auto",
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_megapixels: float = MAX_MEGAPIXELS,
    echo: Callable[[str], None] = print,
    spelling: Spelling | None = None,
) -> None:
    """Serve the page for ``paths`` on ``host``:``port`` (the first free port from 7860
    when None), only on this machine unless ``host`` says otherwise; ``share`` asks
    Gradio for a public link. ``echo`` hears the address and any model left out. Serves
    until interrupted (Ctrl+C); ``build_app(...).launch(prevent_thread_lock=True)``
    serves in the background instead. Messages name the options as ``spelling`` spells
    them (keywords by default)."""
    from nst_fast.batch import KEYWORDS

    spelling = spelling or KEYWORDS
    if not max_upload_mb > 0:
        raise NstFastError(
            f"{spelling.value('max_upload_mb', max_upload_mb)}: expected a positive number"
        )
    gr = require_gradio()
    engine = make_engine(paths, device, precision, max_megapixels, echo, spelling)
    outputs = Path(tempfile.mkdtemp(prefix="nst-fast-web-"))
    page = _page(gr, engine, outputs)
    try:
        _, local, public = page.launch(
            server_name=host, server_port=port, share=share, inbrowser=False, quiet=True,
            max_file_size=int(max_upload_mb * 1024 * 1024), prevent_thread_lock=True,
            ssr_mode=False, show_error=True, footer_links=[],
        )  # fmt: skip
    except OSError as err:  # the port is taken, or the host is not this machine's
        where = f"port {port}" if port else "a free port from 7860 to 7959"
        raise NstFastError(
            f"{spelling.value('host', host)}: cannot listen on {where} there; "
            f"name another with {spelling.name('port')}"
        ) from err
    echo(f"{len(engine.models)} model(s) at {local} (Ctrl+C stops)")
    if public:
        echo(f"public link: {public}")
    try:
        page.block_thread()
    finally:
        page.close()
        shutil.rmtree(outputs, ignore_errors=True)
