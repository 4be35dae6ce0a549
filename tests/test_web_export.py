"""`nst-fast export --format web`: the static site it writes, what it refuses, and the site
itself in headless Chromium (Debian's package, never a downloaded browser) running ONNX
Runtime Web from the pinned npm package, compared with Python's onnxruntime."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from nst_fast.cli import main
from nst_fast.colour import Finish
from nst_fast.errors import NstFastError
from nst_fast.export import load_network
from nst_fast.images import read_image, save_image
from nst_fast.models.transformer import transformer_net
from nst_fast.tiling import pad_to_multiple, stylize_tiled
from nst_fast.web_export import (
    ORT_WEB_VERSION,
    RUNTIME_FILES,
    export_site,
    runtime_dist,
    site_server,
)
from tests.conftest import make_photo
from tests.test_web import launched_chromium, multi_style_model, tiny_model

ROOT = Path(__file__).resolve().parents[1]
# .ci/run installs the pinned package here; NST_FAST_ORT_WEB points at another copy.
ORT_WEB = Path(
    os.environ.get("NST_FAST_ORT_WEB", ROOT / ".ci-npm" / "node_modules" / "onnxruntime-web")
)
NO_ORT_WEB = (
    f"no onnxruntime-web at {ORT_WEB} (npm install --prefix .ci-npm "
    f"onnxruntime-web@{ORT_WEB_VERSION}, as .ci/run does, or set NST_FAST_ORT_WEB)"
)
GREY_LEVEL = 1 / 255
JSDELIVR = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"


def fake_runtime(folder: Path, version: str = ORT_WEB_VERSION) -> Path:
    """A stand-in npm package: the files the page loads, a byte each, and package.json."""
    (folder / "dist").mkdir(parents=True)
    for name in RUNTIME_FILES:
        (folder / "dist" / name).write_text("x")
    (folder / "package.json").write_text(json.dumps({"version": version}))
    return folder


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_model(tmp_path / "run" / "model.pt", "tiny")


def onnx_stylized(
    model: Path, photo: torch.Tensor, style: list[float] | None = None
) -> torch.Tensor:
    """Python's onnxruntime on the site's network: the (3, H, W) stylization, clamped."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {"image": photo[None].numpy()}
    if style is not None:
        feeds["style"] = np.array(style, dtype=np.float32)
    return torch.from_numpy(session.run(None, feeds)[0][0]).clamp(0, 1)


# --- what it writes ---------------------------------------------------------------------------


def test_a_site_is_a_page_its_scripts_the_network_as_onnx_and_the_pinned_cdns_runtime(
    model, tmp_path
):
    pytest.importorskip("onnx")
    net, info = load_network(model)
    site = export_site(net, info, tmp_path / "site")
    names = sorted(p.name for p in site.folder.iterdir())
    assert names == ["app.js", "index.html", "model.onnx", "site.json", "stylize.js"]
    config = json.loads((site.folder / "site.json").read_text())
    assert config["runtime"] == JSDELIVR
    assert (config["title"], config["styles"], config["weights"]) == ("tiny", None, "fp32")
    assert site.total_bytes == sum(p.stat().st_size for p in site.folder.iterdir())
    photo = make_photo((37, 50), 1)
    with torch.no_grad():
        eager = net(photo[None])[0].clamp(0, 1)
    assert (onnx_stylized(site.folder / "model.onnx", photo) - eager).abs().max() < 1e-4
    assert leftovers(tmp_path) == []  # the temporary folder became the site


def test_a_site_of_several_styles_names_them_in_the_order_of_the_style_input(tmp_path):
    pytest.importorskip("onnx")
    model = multi_style_model(tmp_path / "multi.pt", ["dots", "waves"])
    net, info = load_network(model)
    site = export_site(net, info, tmp_path / "site")
    assert json.loads((site.folder / "site.json").read_text())["styles"] == ["dots", "waves"]
    photo = make_photo((24, 36), 2)
    with torch.no_grad():
        waves = net(photo[None], torch.tensor([0.0, 1.0]))[0].clamp(0, 1)
    assert (onnx_stylized(site.folder / "model.onnx", photo, [0, 1]) - waves).abs().max() < 1e-4


def test_fp16_weights_halve_the_network_file_and_stylize_within_a_grey_level(tmp_path):
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = transformer_net()  # the default network: its weights are nearly all the file
    model = tiny_model(tmp_path / "unused.pt")  # its ModelInfo, for the metadata
    info = load_network(model)[1]
    full = export_site(net, info, tmp_path / "fp32")
    half = export_site(net, info, tmp_path / "fp16", fp16=True)
    assert half.model_bytes < 0.55 * full.model_bytes
    assert json.loads((half.folder / "site.json").read_text())["weights"] == "fp16"
    photo = make_photo((64, 80), 3)
    difference = onnx_stylized(half.folder / "model.onnx", photo) - onnx_stylized(
        full.folder / "model.onnx", photo
    )
    assert difference.abs().max() < GREY_LEVEL


@pytest.mark.parametrize("given", ["package", "dist"])
def test_runtime_copies_onnx_runtime_web_into_the_site_so_it_works_offline(model, tmp_path, given):
    pytest.importorskip("onnx")
    package = fake_runtime(tmp_path / "node_modules" / "onnxruntime-web")
    runtime = package if given == "package" else package / "dist"
    site = export_site(*load_network(model), tmp_path / "site", runtime=runtime)
    assert sorted(p.name for p in (site.folder / "runtime").iterdir()) == sorted(RUNTIME_FILES)
    assert json.loads((site.folder / "site.json").read_text())["runtime"] == "runtime/"


def test_the_command_writes_the_site_beside_the_model_and_says_what_it_checked(model, capsys):
    pytest.importorskip("onnx")
    assert main(["export", str(model), "--format", "web"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(model.parent / "model-web")
    assert out[1].startswith("checked: max |onnx - pytorch| = ")
    assert out[2].endswith(f"ONNX Runtime Web from {JSDELIVR}")
    assert (model.parent / "model-web" / "index.html").is_file()


def test_the_local_server_sends_the_isolation_headers_and_the_types_browsers_require(tmp_path):
    (tmp_path / "a.mjs").write_text("export {};")
    (tmp_path / "a.wasm").write_bytes(b"\0asm")
    server = site_server(tmp_path)
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{address}/a.mjs") as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"] == "text/javascript"
        with urllib.request.urlopen(f"{address}/a.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
    finally:
        server.shutdown()


# --- what it refuses --------------------------------------------------------------------------


def export_error(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.strip()


def test_a_runtime_folder_without_the_runtimes_files_is_one_line_and_writes_nothing(
    model, tmp_path, capsys
):
    empty = tmp_path / "node_modules" / "onnxruntime-web"
    empty.mkdir(parents=True)
    target = tmp_path / "out" / "site"
    err = export_error(
        capsys, str(model), "--format", "web", "-o", str(target), "--runtime", str(empty)
    )
    assert err == (
        f"nst-fast export: error: --runtime {empty}: not onnxruntime-web's files (no "
        "ort.wasm.min.mjs, ort-wasm-simd-threaded.mjs, ...); give node_modules/onnxruntime-web "
        f"of npm install onnxruntime-web@{ORT_WEB_VERSION}"
    )
    assert not target.exists() and not target.parent.exists()


def test_a_runtime_of_another_version_or_no_folder_is_refused_naming_the_pinned_one(
    model, tmp_path, capsys
):
    other = fake_runtime(tmp_path / "ort", version="1.17.0")
    err = export_error(capsys, str(model), "--format", "web", "--runtime", str(other))
    assert err.endswith(f"onnxruntime-web 1.17.0; the page is made for {ORT_WEB_VERSION} "
                        f"(npm install onnxruntime-web@{ORT_WEB_VERSION})")  # fmt: skip
    err = export_error(capsys, str(model), "--format", "web", "--runtime", str(tmp_path / "no"))
    assert f"--runtime {tmp_path / 'no'}: no such folder" in err


def test_an_existing_output_folder_is_refused_unless_overwrite_replaces_it_whole(
    model, tmp_path, capsys
):
    pytest.importorskip("onnx")
    target = tmp_path / "site"
    target.mkdir()
    (target / "stale.txt").write_text("from before")
    err = export_error(capsys, str(model), "--format", "web", "-o", str(target))
    assert err.endswith(f"{target} exists; --overwrite replaces it, -o names another folder")
    assert main(["export", str(model), "--format", "web", "-o", str(target), "--overwrite"]) == 0
    assert not (target / "stale.txt").exists() and (target / "index.html").is_file()
    assert leftovers(tmp_path) == []
    (tmp_path / "afile").write_text("")
    err = export_error(capsys, str(model), "--format", "web", "-o", str(tmp_path / "afile"))
    assert err.endswith(f"-o {tmp_path / 'afile'}: a file; the web export writes a folder")


def test_a_write_that_fails_midway_is_one_line_and_leaves_nothing_half_written(
    model, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("onnx")
    import nst_fast.web_export as web_export

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(web_export.shutil, "copyfile", disk_full)
    runtime = fake_runtime(tmp_path / "ort")
    target = tmp_path / "out" / "site"
    target.parent.mkdir()
    err = export_error(
        capsys, str(model), "--format", "web", "-o", str(target), "--runtime", str(runtime)
    )
    assert err == f"nst-fast export: error: {target}: cannot write (No space left on device)"
    assert list(target.parent.iterdir()) == []


def test_an_exported_onnx_or_torchscript_file_cannot_be_made_a_site(tmp_path, capsys):
    for name, kind in (("style.onnx", "ONNX"), ("style.ts", "TorchScript")):
        (tmp_path / name).write_bytes(b"graph")
        err = export_error(capsys, str(tmp_path / name), "--format", "web")
        assert err.endswith(f"{tmp_path / name}: an exported {kind} file; the web export starts "
                            "from the network's model.pt, a training checkpoint (.ckpt) or a "
                            "pytorch/examples .pth")  # fmt: skip
    assert not (tmp_path / "style-web").exists()


def test_fp16_and_runtime_are_options_of_the_web_format_only(model, tmp_path, capsys):
    err = export_error(capsys, str(model), "--format", "onnx", "--fp16")
    assert err == "nst-fast export: error: --fp16: only with --format web"
    err = export_error(capsys, str(model), "--format", "pt", "-o", str(tmp_path / "m.pt"),
                       "--runtime", str(tmp_path))  # fmt: skip
    assert err == "nst-fast export: error: --runtime: only with --format web"


def test_runtime_dist_accepts_the_package_or_its_dist_folder(tmp_path):
    package = fake_runtime(tmp_path / "onnxruntime-web")
    assert runtime_dist(package) == runtime_dist(package / "dist") == package / "dist"
    with pytest.raises(NstFastError, match="not onnxruntime-web's files"):
        runtime_dist(tmp_path)


# --- the site in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_web() -> Path:
    try:
        return runtime_dist(ORT_WEB)
    except NstFastError:
        pytest.skip(NO_ORT_WEB)


@pytest.fixture(scope="module")
def browser(ort_web):
    yield from launched_chromium()


@pytest.fixture(scope="module")
def sites(tmp_path_factory, ort_web) -> dict[str, Path]:
    """A one-style site (fp32) and a two-style one (fp16), made by the command."""
    pytest.importorskip("onnx")
    folder = tmp_path_factory.mktemp("sites")
    one = tiny_model(folder / "one.pt", "tiny")
    two = multi_style_model(folder / "two.pt", ["dots", "waves"])
    for model, extra in ((one, []), (two, ["--fp16"])):
        site = folder / f"{model.stem}-site"
        argv = [str(model), "--format", "web", "-o", str(site), "--runtime", str(ort_web.parent)]
        assert main(["export", *argv, *extra]) == 0
    return {"one": folder / "one-site", "two": folder / "two-site"}


def with_settings(site: Path, tmp_path: Path, **settings: float) -> Path:
    """A copy of ``site`` with its site.json changed, as a host may change it."""
    copy = shutil.copytree(site, tmp_path / site.name)
    config = json.loads((copy / "site.json").read_text())
    (copy / "site.json").write_text(json.dumps({**config, **settings}))
    return copy


class Visit:
    """A site served on 127.0.0.1 (with or without the isolation headers) and opened in a
    fresh browser context; ``hosts`` collects every host the page asks."""

    def __init__(self, browser, site: Path, isolated: bool = True, query: str = "") -> None:
        self.server = site_server(site, isolated=isolated)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.hosts: set[str] = set()
        self.page.on("request", lambda request: self.hosts.add(request.url.split("/")[2]))
        self.page.goto(f"http://{self.address}/{query}")
        engine = self.page.locator("#engine")
        self.page.wait_for_function(
            "window.nstFast || document.querySelector('#engine').textContent.startsWith('⚠')"
        )
        assert engine.inner_text().startswith("Running in this browser on"), engine.inner_text()
        self.renders = 0

    def pick(self, photo: Path) -> None:
        self.page.set_input_files("#photo", str(photo))

    def result(self) -> torch.Tensor:
        """Wait for the next rendering and read the PNG its download link offers."""
        self.renders += 1
        self.page.wait_for_selector(f"#download[data-renders='{self.renders}']", state="attached")
        data = self.page.evaluate(
            """async () => {
                const response = await fetch(document.querySelector('#download').href);
                const bytes = new Uint8Array(await response.arrayBuffer());
                let text = '';
                for (const byte of bytes) text += String.fromCharCode(byte);
                return btoa(text);
            }"""
        )
        image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        return F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)

    def set_value(self, selector: str, value: float) -> None:
        self.page.eval_on_selector(
            selector,
            "(e, v) => { e.value = v; e.dispatchEvent(new Event('change')); }",
            str(value),
        )

    def close(self) -> None:
        self.context.close()
        self.server.shutdown()


@pytest.fixture
def visit(browser):
    visits: list[Visit] = []

    def open_site(site: Path, **options: object) -> Visit:
        visits.append(Visit(browser, site, **options))
        return visits[-1]

    yield open_site
    for opened in visits:
        opened.close()


def within_two_grey_levels(page: torch.Tensor, expected: torch.Tensor) -> bool:
    assert page.shape == expected.shape
    return (page - expected).abs().max().item() <= 2 * GREY_LEVEL + 1e-6


@pytest.mark.slow
def test_in_a_browser_a_photo_is_stylized_as_onnxruntime_stylizes_it_and_offered_full_size(
    visit, sites, tmp_path
):
    site = visit(sites["one"])
    engine = site.page.locator("#engine").inner_text()
    assert re.match(r"Running in this browser on WebAssembly, \d+ threads? \(", engine)
    photo = save_image(make_photo((60, 90), 3), tmp_path / "street.png")
    site.pick(photo)
    content = read_image(photo)
    network = onnx_stylized(sites["one"] / "model.onnx", content)
    assert within_two_grey_levels(site.result(), network)
    assert site.page.locator("#download").get_attribute("download") == "street-tiny.png"
    status = site.page.locator("#status").inner_text()
    assert re.fullmatch(r"street.png: 90x60 px stylized with tiny in \d+ ms \(one pass\)\.", status)
    site.page.check("#preserve")
    expected = Finish(preserve_color=True)(network, content)
    assert within_two_grey_levels(site.result(), expected)
    site.set_value("#strength", 0.4)
    expected = Finish(strength=0.4, preserve_color=True)(network, content)
    assert within_two_grey_levels(site.result(), expected)
    assert site.hosts == {site.address}  # offline: the runtime came from the site itself


@pytest.mark.slow
def test_in_a_browser_a_two_style_site_picks_a_style_or_blends_them_as_onnxruntime_does(
    visit, sites, tmp_path
):
    site = visit(sites["two"])
    assert "fp16 weights" in site.page.locator("#engine").inner_text()
    assert site.page.locator("#style option").all_inner_texts() == ["dots", "waves", "blend"]
    photo = save_image(make_photo((48, 64), 5), tmp_path / "garden.png")
    content = read_image(photo)
    model = sites["two"] / "model.onnx"
    site.pick(photo)
    assert within_two_grey_levels(site.result(), onnx_stylized(model, content, [1, 0]))
    site.page.select_option("#style", "waves")
    waves = site.result()
    assert within_two_grey_levels(waves, onnx_stylized(model, content, [0, 1]))
    site.page.select_option("#style", "blend")
    site.result()  # the sliders' even blend
    site.page.eval_on_selector_all(
        "#blend input",
        """(sliders) => {
            sliders[0].value = 0.25;
            sliders[1].value = 0.75;
            sliders[1].dispatchEvent(new Event('change'));
        }""",
    )
    blend = site.result()
    assert within_two_grey_levels(blend, onnx_stylized(model, content, [0.25, 0.75]))
    assert (blend - waves).abs().mean() > 0.01  # a blend is not the one style
    name = site.page.locator("#download").get_attribute("download")
    assert name == "garden-dots_0.25_waves_0.75.png"


@pytest.mark.slow
def test_in_a_browser_a_photo_over_the_pass_limit_is_tiled_as_nst_fast_tiles_it(
    visit, sites, tmp_path
):
    site = visit(with_settings(sites["one"], tmp_path, pass_pixels=4096))
    photo = save_image(make_photo((102, 699), 6), tmp_path / "wide.png")
    site.pick(photo)
    page = site.result()
    content = read_image(photo)

    def run(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([onnx_stylized(sites["one"] / "model.onnx", x) for x in batch])

    # nst_fast's tiles for a budget of 4096 px: 512 px (4x the 128 px overlap), padded to 4
    tiled = stylize_tiled(run, pad_to_multiple(content, 4), 512, 128)[:, :102, :699]
    assert within_two_grey_levels(page, tiled)
    assert "(2 tiles)" in site.page.locator("#status").inner_text()


@pytest.mark.slow
def test_in_a_browser_a_photo_over_the_size_limit_or_not_a_photo_is_a_line_on_the_page(
    visit, sites, tmp_path
):
    site = visit(with_settings(sites["one"], tmp_path, max_megapixels=0.004))
    assert "Photos up to 0.004 megapixels" in site.page.locator("#limits").inner_text()
    (tmp_path / "notes.txt").write_text("a shopping list, not a photo\n")
    site.pick(tmp_path / "notes.txt")
    status = site.page.locator("#status")
    status.filter(has_text="⚠").wait_for()
    assert status.inner_text() == "⚠ notes.txt: not an image this browser reads; pick a photo"
    site.pick(save_image(make_photo((60, 90), 7), tmp_path / "big.png"))
    status.filter(has_text="big.png").wait_for()
    assert status.inner_text() == (
        "⚠ big.png: 90x60 px is 0.0054 megapixels; this page takes photos up to 0.004"
    )
    site.pick(save_image(make_photo((40, 50), 7), tmp_path / "small.png"))
    site.result()  # and the page goes on


@pytest.mark.slow
def test_in_a_browser_without_isolation_headers_the_page_runs_on_one_thread_and_says_so(
    visit, sites
):
    site = visit(sites["one"], isolated=False)
    assert "WebAssembly, 1 thread (" in site.page.locator("#engine").inner_text()
    assert site.page.evaluate("self.crossOriginIsolated") is False


@pytest.mark.slow
def test_in_a_browser_the_fake_camera_streams_stylized_frames_and_the_time_a_frame_takes(
    visit, sites
):
    site = visit(sites["one"])
    site.page.select_option("#frame-size", "128")
    site.page.click("#camera")
    live = site.page.locator("#live")
    deadline = time.monotonic() + 60
    while int(live.get_attribute("data-frames") or 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(live.get_attribute("data-frames") or 0) >= 3
    assert re.fullmatch(
        r"\d+ ms a frame at 128x96 px, \d+\.\d frames/s", site.page.locator("#fps").inner_text()
    )
    site.page.click("#camera")  # stops it
    assert site.page.locator("#camera").inner_text() == "Start the camera"
