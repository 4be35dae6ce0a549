"""The page itself, built on Gradio: the style gallery and model list, the Photo tab,
the Webcam tab with its frame size that keeps up, and ``serve``, which runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nst_fast.errors import NstFastError
from nst_fast.web.engine import Engine, make_engine
from nst_fast.web.models import THUMBNAIL
from nst_fast.web.uploads import MAX_MEGAPIXELS, MAX_UPLOAD_MB, output_size, read_photo

if TYPE_CHECKING:
    import gradio as gr
    import numpy as np

    from nst_fast.stylize_options import Spelling

INSTALL = 'the web page needs Gradio: pip install -e ".[web]"'
WEBCAM_SIZES = ("auto", "128", "192", "256", "384", "512", "720")
WEBCAM_SHOWN = 640  # px, the longer side of a stylized frame as sent back
WEBCAM_START = 256  # px, the longer side where "auto" starts
WEBCAM_FPS = 5.0  # "auto" shrinks frames below this rate and grows them well above it
WEBCAM_SMALLEST = 128  # px: "auto" goes no smaller
WEBCAM_INTERVAL = 0.1  # s between frames the browser sends


def require_gradio() -> Any:
    """The gradio module, or an ``NstFastError`` saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise NstFastError(INSTALL) from err
    return gradio


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


def _page(gr: Any, engine: Engine, outputs: Path) -> gr.Blocks:
    import numpy as np

    from nst_fast.images import resize, save_image, to_pil
    from nst_fast.regions import checked_mask

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
        mask_file: str | None = None,
        progress: Any = gr.Progress(),  # noqa: B008 (gradio's way to report progress)
    ) -> tuple[list[str], list[str], list[str], str]:
        """Each photo stylized (in each style asked), where the mask is white if there is
        one; a photo that cannot be is a line on the page (a toast and the status line),
        the others go on."""
        originals, results, problems = [], [], []
        strength = 1.0 if strength is None else strength
        mask = None
        try:
            longer = output_size(size)
            if not files:
                raise NstFastError("no photos: upload one or more first")
            if mask_file:
                mask = checked_mask(Path(mask_file), "Mask")
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
                        size=longer, tick=tick, mask=mask,
                        names=(Path(mask_file or "mask").name, name),
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
                    mask_upload = gr.Image(
                        type="filepath", sources=["upload", "clipboard"], height=160,
                        label="Mask (optional): white is stylized, black keeps the photo",
                        elem_id="mask",
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
                    [files, model, style, strength, preserve, size, mask_upload],
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
    from nst_fast.stylize_options import KEYWORDS

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
