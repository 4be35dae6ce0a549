"""`nst-fast serve`: the models a page offers, how it stylizes, what it refuses, and the
page itself driven in headless Chromium (Debian's package; never a downloaded browser)."""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from nst_fast.batch import stylize_paths
from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.export import save_model
from nst_fast.images import read_image, resize, save_image
from nst_fast.models.transformer import TransformerNet, default_transformer_config, transformer_net
from nst_fast.web import make_engine
from nst_fast.web.models import find_models
from nst_fast.web.page import Webcam, require_gradio
from nst_fast.web.uploads import output_size, photo_size, read_photo
from tests.conftest import make_photo

CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
# Without the background-networking flags Chromium calls Google's servers, which a
# closed network refuses; the media flags give it a fake camera that needs no click.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip


def tiny_model(path: Path, style: str = "tiny", image: str | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = transformer_net(channels=[4, 8, 16], residual_blocks=1)
    extra = {"style": {"name": style, "image": image}} if image else None
    return save_model(net, path, style=style, step=1, extra=extra)


def multi_style_model(path: Path, names: list[str], images: list[str] | None = None) -> Path:
    """A tiny network of several styles, each with its own (random) norm scales and shifts."""
    torch.manual_seed(2)
    config = default_transformer_config(channels=[4, 8, 16], residual_blocks=1)
    net = TransformerNet(config, styles=len(names))
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.2 * torch.randn_like(param))
    images = images or [None] * len(names)
    specs = [{"name": n, "image": i} for n, i in zip(names, images, strict=True)]
    extra = {"style": specs}  # as training records several styles
    return save_model(net, path, style="+".join(names), step=1, extra=extra, styles=names)


def png_claiming(width: int, height: int, path: Path) -> Path:
    """A PNG of a few hundred bytes whose header says ``width`` x ``height``: what a
    decompression bomb looks like to anything that reads the header first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# --- the models a page offers ---------------------------------------------------------------


def test_folders_are_searched_for_model_files_each_listed_by_style_and_run_and_usable(tmp_path):
    from nst_fast.export import load_model
    from nst_fast.formats import export_onnx, export_torchscript

    outputs = tmp_path / "outputs"
    tiny_model(outputs / "wave-run" / "model.pt", "wave")
    tiny_model(outputs / "mosaic-run" / "model.pt", "mosaic")
    (outputs / "mosaic-run" / "checkpoints").mkdir()
    (outputs / "mosaic-run" / "checkpoints" / "last.ckpt").write_bytes(b"not listed")
    net, info = load_model(outputs / "mosaic-run" / "model.pt")
    export_torchscript(net, info, outputs / "mosaic-run" / "model.ts")
    export_onnx(net, info, outputs / "exported" / "mosaic.onnx")
    engine = make_engine([outputs], device="cpu", precision="fp32")
    assert engine.labels == [
        "mosaic (exported/mosaic.onnx)",
        "mosaic (mosaic-run)",
        "mosaic (mosaic-run/model.ts)",
        "wave (wave-run)",
    ]
    photo = make_photo((20, 28), 9)
    results = [engine.stylize(label, photo) for label in engine.labels]
    assert all(result.shape == (3, 20, 28) for result in results)
    for exported in results[0], results[2]:  # the same network in each format
        assert (exported - results[1]).abs().max() < 1e-4


def test_a_model_file_given_itself_is_listed_under_its_folder(tmp_path):
    model = tiny_model(tmp_path / "demo" / "model.pt", "scream")
    other = tiny_model(tmp_path / "keep" / "wave.pt", "wave")
    labels = [m.label for m in find_models([model, other])]
    assert labels == ["scream (demo)", "wave (keep/wave.pt)"]


def test_paths_that_name_no_model_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NstFastError, match=r"nowhere: no such model file or folder"):
        find_models([tmp_path / "nowhere"])
    with pytest.raises(NstFastError, match=r"empty: no model files in this folder"):
        find_models([tmp_path / "empty"])


def test_a_broken_model_file_is_left_out_with_a_line_and_the_others_offered(tmp_path):
    tiny_model(tmp_path / "good" / "model.pt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"not a model")
    lines: list[str] = []
    assert [m.label for m in find_models([tmp_path], lines.append)] == ["tiny (good)"]
    assert len(lines) == 1 and "bad/model.pt" in lines[0]


def test_the_style_image_is_a_thumbnail_only_when_generated_or_inside_a_path_given(tmp_path):
    outside = save_image(make_photo((30, 40), 1), tmp_path / "elsewhere" / "style.png")
    runs = tmp_path / "runs"
    inside = save_image(make_photo((30, 40), 2), runs / "b" / "style.png")
    tiny_model(runs / "a" / "model.pt", "a", image=str(outside))
    tiny_model(runs / "b" / "model.pt", "b", image=str(inside))
    tiny_model(runs / "c" / "model.pt", "c", image="generated:mosaic")
    tiny_model(runs / "d" / "model.pt", "d", image="https://example.org/style.jpg")
    tiny_model(runs / "e" / "model.pt", "e")
    thumbs = {m.style: m.thumbnail for m in find_models([runs])}
    assert {k for k, v in thumbs.items() if v is not None} == {"b", "c"}
    assert max(thumbs["b"].size) == 160


def test_a_model_of_several_styles_offers_each_and_blends_as_nst_fast_stylize_does(tmp_path):
    model = multi_style_model(
        tmp_path / "run" / "model.pt", ["dots", "waves"], ["generated:mosaic", None]
    )
    engine = make_engine([tmp_path / "run"], device="cpu", precision="fp32")
    (offered,) = engine.models
    assert (offered.label, offered.styles) == ("dots+waves (run)", ["dots", "waves"])
    assert offered.thumbnail is not None  # the one style image it may read
    photo = save_image(make_photo((24, 32), 10), tmp_path / "photo.png")
    results = []
    for choice in ("waves", "dots=0.3,waves=0.7"):
        cli = tmp_path / f"{choice}.png"
        stylize_paths(model, [photo], cli, device="cpu", precision="fp32", style=choice)
        page = engine.stylize(offered.label, read_image(photo), style=choice)
        assert (page - read_image(cli)).abs().max() <= 1 / 255 + 1e-6
        results.append(page)
    assert (results[0] - results[1]).abs().max() > 0.01  # a blend is not the one style
    with pytest.raises(NstFastError, match=r"several styles \(dots, waves\): pick one, or a"):
        engine.stylize(offered.label, read_image(photo))
    with pytest.raises(NstFastError, match=r"Style stripes: no style 'stripes'; the model has"):
        engine.stylize(offered.label, read_image(photo), style="stripes")


# --- how it stylizes --------------------------------------------------------------------------


def test_the_page_stylizes_as_nst_fast_stylize_does(tmp_path):
    model = tiny_model(tmp_path / "run" / "model.pt")
    photo = save_image(make_photo((44, 60), 4), tmp_path / "photo.png")
    options = {"size": 40, "strength": 0.6, "preserve_color": True}
    stylize_paths(model, [photo], tmp_path / "cli.png", device="cpu", precision="fp32", **options)
    engine = make_engine([model], device="cpu", precision="fp32")
    page = engine.stylize(engine.labels[0], read_image(photo), **options)
    cli = read_image(tmp_path / "cli.png")
    assert page.shape == cli.shape == (3, 29, 40)
    assert (page - cli).abs().max() <= 1 / 255 + 1e-6  # the CLI's is rounded to 8 bits


def test_a_mask_on_the_page_keeps_the_photo_where_black_as_nst_fast_stylize_mask_does(tmp_path):
    from nst_fast.regions import read_mask

    model = tiny_model(tmp_path / "run" / "model.pt")
    photo = save_image(make_photo((44, 60), 4), tmp_path / "photo.png")
    left = torch.zeros(3, 22, 30)
    left[..., :15] = 1.0
    mask = save_image(left, tmp_path / "mask.png")
    options = {"size": 40, "strength": 0.8}
    stylize_paths(model, [photo], tmp_path / "cli.png", device="cpu", precision="fp32",
                  mask=mask, **options)  # fmt: skip
    engine = make_engine([model], device="cpu", precision="fp32")
    page = engine.stylize(engine.labels[0], read_image(photo), mask=read_mask(mask), **options)
    assert (page - read_image(tmp_path / "cli.png")).abs().max() <= 1 / 255 + 1e-6
    kept = resize(read_image(photo), 40, None)
    assert (page - kept)[..., 24:].abs().max() <= 1e-6  # black: the photo, resized
    square = save_image(torch.ones(3, 10, 10), tmp_path / "square.png")
    with pytest.raises(NstFastError, match=re.escape("square.png: a 10x10 mask for photo.png")):
        engine.stylize(engine.labels[0], read_image(photo), mask=read_mask(square),
                       names=("square.png", "photo.png"))  # fmt: skip


def test_a_photo_too_large_for_one_pass_is_tiled_as_the_cli_tiles_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_FAST_MAX_PIXELS", "4096")  # tiles of 512 px (4x the overlap)
    model = tiny_model(tmp_path / "run" / "model.pt")
    photo = save_image(make_photo((100, 700), 5), tmp_path / "photo.png")
    stylize_paths(model, [photo], tmp_path / "cli.png", device="cpu", precision="fp32")
    engine = make_engine([model], device="cpu", precision="fp32")
    passes: list[int] = []
    page = engine.stylize(engine.labels[0], read_image(photo), tick=lambda: passes.append(1))
    assert len(passes) == 2  # two tiles side by side, each shown as progress
    assert (page - read_image(tmp_path / "cli.png")).abs().max() <= 1 / 255 + 1e-6


def test_uploads_that_are_not_photos_or_too_large_are_refused_by_name_before_decoding(tmp_path):
    (tmp_path / "notes.txt").write_text("not a photo\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    huge = png_claiming(30000, 30000, tmp_path / "huge.png")
    wide = png_claiming(9000, 5000, tmp_path / "wide.png")
    refusals = {
        "notes.txt": "notes.txt: not an image",
        "empty.jpg": "empty.jpg: an empty file",
        "huge.png": "huge.png: more than 800 megapixels; this page takes photos up to 40",
        "wide.png": "wide.png: 9000x5000 px is 45 megapixels; this page takes photos up to 40",
    }
    for name, message in refusals.items():
        with pytest.raises(NstFastError, match=re.escape(message)):
            photo_size(tmp_path / name, name, 40_000_000)
    start = time.perf_counter()
    with pytest.raises(NstFastError):
        photo_size(huge, "huge.png", 40_000_000)
    assert time.perf_counter() - start < 0.5  # read from the header, nothing decoded
    assert photo_size(wide, "wide.png", 50_000_000) == (9000, 5000)


def test_an_output_size_that_would_make_too_many_pixels_is_refused_before_stylizing(tmp_path):
    photo = save_image(make_photo((30, 40), 8), tmp_path / "small.png")
    with pytest.raises(NstFastError, match=r"small.png: at Output size 8000 it would be 48 mega"):
        read_photo(photo, "small.png", 40_000_000, size=8000)
    assert read_photo(photo, "small.png", 40_000_000, size=4000)[0].shape == (3, 30, 40)
    with pytest.raises(NstFastError, match=r"Output size 4: expected 8 px or more, or 0"):
        output_size(4)
    assert output_size(0) is None and output_size(512.0) == 512


def test_auto_webcam_frames_shrink_when_slow_and_grow_when_fast():
    cam = Webcam(size=256)
    cam.measure(0.0, 0.5, auto=True, largest=640)  # half a second a frame: too slow
    assert cam.size < 256
    fast = Webcam(size=256)
    fast.measure(0.0, 0.01, auto=True, largest=640)
    assert fast.size > 256
    fixed = Webcam(size=256)
    fixed.measure(0.0, 0.5, auto=False, largest=640)
    assert fixed.size == 256


# --- the command ------------------------------------------------------------------------------


def test_without_gradio_serve_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    with pytest.raises(NstFastError, match=re.escape('pip install -e ".[web]"')):
        require_gradio()
    assert main(["serve", str(tiny_model(tmp_path / "model.pt"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'nst-fast serve: error: the web page needs Gradio: pip install -e ".[web]"'


def test_options_the_page_cannot_use_are_named_as_the_command_line_spells_them(tmp_path):
    from nst_fast.cli.options import FLAGS

    model = tiny_model(tmp_path / "model.pt")
    with pytest.raises(NstFastError, match=r"^--precision fp16: not on the CPU"):
        make_engine([model], device="cpu", precision="fp16", spelling=FLAGS)
    with pytest.raises(NstFastError, match=r"^precision='fp16': not on the CPU"):
        make_engine([model], device="cpu", precision="fp16")


def test_serve_listens_on_this_machine_only_and_shares_nothing_unless_asked():
    from nst_fast.cli.serve import parser

    args = parser().parse_args(["outputs/"])
    assert (args.host, args.share) == ("127.0.0.1", False)


# --- the page in a browser --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``nst-fast serve`` started as a user starts it; ``address`` waits for its line."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @functools.cached_property
    def address(self) -> str:
        deadline = time.monotonic() + 90
        while not any("http://" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nst-fast serve did not start:\n" + "".join(self.lines))
            time.sleep(0.1)
        return re.search(r"http://\S+", "".join(self.lines)).group(0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    if importlib.util.find_spec("gradio") is None:
        pytest.skip('the web extra is not installed (pip install -e ".[web]")')
    folder = tmp_path_factory.mktemp("web")
    tiny_model(folder / "runs" / "run" / "model.pt", image="generated:mosaic")
    multi_style_model(folder / "runs" / "run2" / "model.pt", ["dots", "waves"])
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio")}
    command = [sys.executable, "-m", "nst_fast", "serve", str(folder / "runs")]
    server = Server([*command, "--port", str(free_port()), "--max-upload-mb", "1"], env)
    yield server  # starting (about 15 s) while the browser starts
    server.process.terminate()
    server.process.wait(timeout=20)


def launched_chromium(flags: list[str] = CHROMIUM_FLAGS):
    """Debian's headless Chromium driven by Playwright (a generator for a fixture to yield
    from); the test skips without either."""
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        # executable_path: Debian's Chromium; Playwright never downloads a browser of its own.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium()


@pytest.fixture
def page(server, browser):
    address = server.address
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.goto(address)
    page.wait_for_selector("#stylize")
    page.hosts = hosts
    yield page
    context.close()


def upload(page, *paths: Path) -> None:
    """Add photos to the upload box and wait until it lists them (it shows the names with
    the suffix apart, "street" ".png")."""
    page.locator("#photos input[type=file]").set_input_files([str(p) for p in paths])
    for path in paths:
        page.locator("#photos", has_text=path.stem).wait_for()


def fetch_image(page, locator) -> Image.Image:
    return Image.open(io.BytesIO(page.request.get(locator.get_attribute("src")).body()))


@pytest.mark.slow
def test_in_a_browser_a_thumbnail_picks_a_style_and_a_photo_comes_back_stylized_to_download(
    page, server, tmp_path
):
    address = server.address
    assert address.startswith("http://127.0.0.1:")
    assert page.locator("#styles img").count() == 2  # the generated style, a grey tile
    assert not page.locator("#style").is_visible()  # a model of one style has no choice
    page.locator("#styles img").nth(1).click()
    page.wait_for_function("document.querySelector('#model input').value == 'dots+waves (run2)'")
    page.locator("#style input").wait_for()  # the Style box, for a model of several
    assert page.locator("#style input").input_value() == "dots"
    page.locator("#styles img").nth(0).click()
    page.wait_for_function("document.querySelector('#model input').value == 'tiny (run)'")
    page.locator("#style").wait_for(state="hidden")
    photo = save_image(make_photo((60, 90), 3), tmp_path / "street.png")
    upload(page, photo)
    page.click("#stylize")
    result = page.locator("#after img").first
    result.wait_for()
    stylized = fetch_image(page, result)
    assert stylized.size == (90, 60)
    difference = (F.to_dtype(F.pil_to_tensor(stylized.convert("RGB")), scale=True)
                  - read_image(photo)).abs().mean()  # fmt: skip
    assert difference > 0.05
    link = page.locator("#downloads a").first
    assert link.get_attribute("href").endswith("street-tiny.png")
    download = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
    assert download.size == (90, 60)
    assert page.locator("#status").inner_text().startswith("1 stylized with tiny (run)")
    assert page.hosts == {address.split("/")[2]}  # the page asks no other server


@pytest.mark.slow
def test_in_a_browser_an_uploaded_mask_keeps_the_photo_where_it_is_black(page, tmp_path):
    photo = save_image(make_photo((60, 90), 8), tmp_path / "garden.png")
    right = torch.zeros(3, 30, 45)
    right[..., 30:] = 1.0  # stylized on the right third only
    page.locator("#mask input[type=file]").set_input_files(
        str(save_image(right, tmp_path / "right.png"))
    )
    page.locator("#mask img").wait_for()
    upload(page, photo)
    page.click("#stylize")
    result = page.locator("#after img").first
    result.wait_for()
    out = F.to_dtype(F.pil_to_tensor(fetch_image(page, result).convert("RGB")), scale=True)
    original = read_image(photo)
    assert (out - original)[..., :50].abs().max() <= 1 / 255 + 1e-6  # black: the photo
    assert (out - original)[..., 70:].abs().mean() > 0.05  # white: stylized


@pytest.mark.slow
def test_in_a_browser_bad_uploads_get_a_message_and_the_server_keeps_serving(
    page, server, tmp_path
):
    address, process = server.address, server.process
    (tmp_path / "notes.txt").write_text("a shopping list, not a photo\n")
    (tmp_path / "empty.png").write_bytes(b"")
    png_claiming(30000, 30000, tmp_path / "huge.png")
    good = save_image(make_photo((40, 30), 6), tmp_path / "fine.jpg")
    upload(page, *(tmp_path / name for name in ("notes.txt", "empty.png", "huge.png")), good)
    page.click("#stylize")
    status = page.locator("#status", has_text="1 stylized")
    status.wait_for()
    for message in (
        "notes.txt: not an image Pillow reads; upload a photo",
        "empty.png: an empty file; upload a photo",
        "huge.png: more than 800 megapixels; this page takes photos up to 40 megapixels",
    ):
        assert message in status.inner_text()
    assert page.locator("#after img").count() == 1
    (tmp_path / "big.jpg").write_bytes(os.urandom(1_200_000))  # over --max-upload-mb 1
    page.locator("#photos input[type=file]").set_input_files(str(tmp_path / "big.jpg"))
    page.get_by_text("exceed the maximum allowed size").first.wait_for()
    upload(page, save_image(make_photo((30, 40), 7), tmp_path / "another.png"))
    page.click("#stylize")
    page.locator("#status", has_text="2 stylized").wait_for()
    assert process.poll() is None
    for secret in (Path(__file__), Path("/etc/passwd")):  # files the command was not given
        response = page.request.get(f"{address}gradio_api/file={secret.resolve()}")
        assert response.status in (403, 404)


@pytest.mark.slow
def test_in_a_browser_the_webcam_tab_streams_stylized_frames_and_shows_the_rate(page):
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#camera").get_by_text("Click to Access Webcam").click()
    page.locator("#camera button", has_text="Record").first.click()
    frames: set[str] = set()
    # A bound on "never", not a speed test: on two busy cores (the suite's other worker
    # training beside it) the first stylized frames took over 20 s to arrive.
    deadline = time.monotonic() + 90
    while len(frames) < 2 and time.monotonic() < deadline:
        live = page.locator("#live img")
        if live.count() and live.first.get_attribute("src"):
            frames.add(live.first.get_attribute("src"))
        time.sleep(0.2)
    assert len(frames) >= 2
    frame = fetch_image(page, page.locator("#live img").first)
    assert max(frame.size) <= 640 and frame.size[0] > frame.size[1]  # the camera's 4:3
    page.locator("#fps", has_text=re.compile(r"\d+\.\d frames/s at \d+x\d+ px")).wait_for()
