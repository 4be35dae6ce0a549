"""Screenshots of the web page (``nst-fast serve``) for the README: one per tab.

    python scripts/pages/web_screenshots.py outputs/demo/model.pt   # writes docs/web/*.png

Builds the page with the library (``nst_fast.web.build_app``), serves it on this machine
and drives Debian's Chromium through Playwright (never a browser of its own): the Photo
tab stylizes scikit-image's cat photo, the Webcam tab is fed scikit-image's astronaut
through Chromium's fake camera. Needs the web and dev extras and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from nst_fast.errors import NstFastError
from nst_fast.images import save_image
from nst_fast.web import build_app

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]  # fmt: skip


def photo(name: str) -> torch.Tensor:
    """One of scikit-image's bundled photos as a float (3, H, W) image."""
    from skimage import data

    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255


def camera_file(image: torch.Tensor, path: Path, size: tuple[int, int] = (480, 640)) -> Path:
    """A one-frame Y4M video (what Chromium's fake camera plays, looped) of ``image``
    cropped to 4:3 and resized to ``size`` (height, width)."""
    h, w = image.shape[-2:]
    crop = min(h, w * 3 // 4)
    image = F.resize(image[:, :crop, : crop * 4 // 3], list(size), antialias=True)
    r, g, b = (image * 255).double()
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = (-0.168736 * r - 0.331264 * g + 0.5 * b + 128)[::2, ::2]
    v = (0.5 * r - 0.418688 * g - 0.081312 * b + 128)[::2, ::2]
    planes = [p.round().clamp(0, 255).to(torch.uint8).numpy() for p in (y, u, v)]
    header = f"YUV4MPEG2 W{size[1]} H{size[0]} F10:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
    path.write_bytes(header + b"".join(np.ascontiguousarray(p).tobytes() for p in planes))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshots of nst-fast's web page.")
    parser.add_argument("models", nargs="+", help="model files or folders, as for serve")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "web")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="nst-fast-shots-"))
    cat = save_image(photo("chelsea"), work / "chelsea.png")
    camera = camera_file(photo("astronaut"), work / "camera.y4m")
    try:
        page_app = build_app(args.models)
    except NstFastError as err:
        print(f"web_screenshots: error: {err}", file=sys.stderr)
        return 2
    _, address, _ = page_app.launch(
        prevent_thread_lock=True, quiet=True, ssr_mode=False, footer_links=[]
    )
    args.output.mkdir(parents=True, exist_ok=True)
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={camera}"]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=flags)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(address)
            page.locator("#photos input[type=file]").set_input_files(str(cat))
            page.locator("#photos", has_text="chelsea").wait_for()
            page.click("#stylize")
            page.locator("#status", has_text="stylized").wait_for()
            page.locator("#after img").first.wait_for()
            time.sleep(1)  # the images fade in
            page.screenshot(path=args.output / "photo.png", full_page=True)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#webcam-size input").click()  # 256 px: sharper than auto on CPUs
            page.get_by_role("option", name="256").click()
            page.locator("#camera").get_by_text("Click to Access Webcam").click()
            page.locator("#camera button", has_text="Record").first.click()
            page.locator("#fps", has_text="frames/s at").wait_for()
            time.sleep(6)  # the rate settles
            page.screenshot(path=args.output / "webcam.png", full_page=True)
            browser.close()
    finally:
        page_app.close()
    for name in ("photo.png", "webcam.png"):
        print(args.output / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
