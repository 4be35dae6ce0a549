#!/usr/bin/env python3
"""Time per frame of the web export's page in headless Chromium, and the site's size.

    python scripts/bench/bench_web.py [--runtime node_modules/onnxruntime-web]
                                      [--sizes 256 512] [--runs 5]

Exports the default network (random weights: speed does not depend on them) as a site
with fp32 and with fp16 weights (``nst_fast.web_export.export_site``), serves it on
127.0.0.1 with the cross-origin isolation headers, and times the page's own pass
(``window.nstFast.timeFrames``: one untimed pass, then the median of --runs) at each
size, square, on WebAssembly with one thread and with the page's default (as many as
the cores, up to 4). Chromium is Debian's /usr/bin/chromium, run with --disable-gpu, so
WebGPU is not measured. Needs playwright, onnx and the pinned onnxruntime-web from npm
(--runtime, default $NST_FAST_ORT_WEB or .ci-npm/node_modules/onnxruntime-web).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nst_fast import __version__  # noqa: E402
from nst_fast.export import ModelInfo  # noqa: E402
from nst_fast.models.transformer import transformer_net  # noqa: E402
from nst_fast.web_export import (  # noqa: E402
    MODEL_FILE,
    PAGE_FILES,
    RUNTIME_FILES,
    RUNTIME_FOLDER,
    export_site,
    site_server,
)

# As tests/test_web.py: without the background-networking flags Chromium calls Google's
# servers, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SETUPS = {"WebAssembly, 1 thread": "?backend=wasm&threads=1", "page default": "?backend=wasm"}
MIB = 1024 * 1024


def file_bytes(files: list[Path]) -> tuple[int, int]:
    """Bytes of ``files``, and as gzip (level 6) sends them."""
    return (
        sum(p.stat().st_size for p in files),
        sum(len(gzip.compress(p.read_bytes(), 6)) for p in files),
    )


def sizes_table(sites: dict[str, Path]) -> list[str]:
    """What a visitor downloads: the page, the network, and one of the runtime's builds
    (from the site's runtime/ or the CDN), as stored and gzipped."""
    site = sites["fp32"]
    rows = {
        "page (index.html, app.js, stylize.js, site.json)": [
            site / name for name in (*PAGE_FILES, "site.json")
        ],
        **{f"network, {name} weights": [s / MODEL_FILE] for name, s in sites.items()},
        "runtime, WebAssembly build (3 files)": [
            site / RUNTIME_FOLDER / n for n in RUNTIME_FILES[:3]
        ],
        "runtime, WebGPU build (3 files)": [site / RUNTIME_FOLDER / n for n in RUNTIME_FILES[3:]],
        **{
            f"the whole folder with runtime/, {name}": [p for p in s.rglob("*") if p.is_file()]
            for name, s in sites.items()
        },
    }
    lines = ["| files | size | gzip |", "| --- | ---: | ---: |"]
    for name, files in rows.items():
        size, compressed = file_bytes(files)
        lines.append(f"| {name} | {size / MIB:.2f} MiB | {compressed / MIB:.2f} MiB |")
    return lines


def onnxruntime_line(site: Path, sizes: list[int], runs: int) -> str:
    """The same network in Python's onnxruntime (CPU), in the same run, for scale."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(site / MODEL_FILE), providers=["CPUExecutionProvider"]
    )
    cells = []
    for size in sizes:
        x = torch.rand(1, 3, size, size).numpy()
        session.run(None, {"image": x})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {"image": x})
            times.append(1000 * (time.perf_counter() - start))
        cells.append(f"{statistics.median(times):.0f} ms")
    return "| onnxruntime (Python, CPU, not a browser) | " + " | ".join(cells) + " |"


def time_frames(site: Path, sizes: list[int], runs: int, chromium: str) -> list[str]:
    from playwright.sync_api import sync_playwright

    server = site_server(site)
    address = f"http://127.0.0.1:{server.server_address[1]}/"
    lines = ["| backend | " + " | ".join(f"{s}x{s} px" for s in sizes) + " |"]
    lines.append("| --- |" + " ---: |" * len(sizes))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            for query in SETUPS.values():
                page = browser.new_page()
                page.set_default_timeout(300_000)
                page.goto(address + query)
                page.wait_for_function("window.nstFast !== undefined")
                cells = []
                for size in sizes:
                    times = page.evaluate(
                        "([size, runs]) => window.nstFast.timeFrames(size, size, runs)",
                        [size, runs],
                    )
                    cells.append(f"{statistics.median(times):.0f} ms")
                backend = page.evaluate("window.nstFast.backend")
                lines.append(f"| {backend} | " + " | ".join(cells) + " |")
                page.close()
            browser.close()
    finally:
        server.shutdown()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.environ.get(
        "NST_FAST_ORT_WEB", ROOT / ".ci-npm" / "node_modules" / "onnxruntime-web"
    )
    parser.add_argument("--runtime", type=Path, default=Path(default))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    torch.manual_seed(0)
    net = transformer_net()
    arch = net.config.to_dict()
    info = ModelInfo(style="random", step=0, arch=arch, nst_fast_version=__version__)
    with tempfile.TemporaryDirectory() as tmp:
        sites = {
            name: export_site(
                net, info, Path(tmp) / name, fp16=name == "fp16", runtime=args.runtime
            ).folder
            for name in ("fp32", "fp16")
        }
        print(f"nst-fast {__version__}, default network, {os.cpu_count()} CPU cores\n")
        print("\n".join(sizes_table(sites)) + "\n")
        print(f"median of {args.runs} passes (fp32 weights; fp16 computes the same after load)")
        print("\n".join(time_frames(sites["fp32"], args.sizes, args.runs, args.chromium)))
        print(onnxruntime_line(sites["fp32"], args.sizes, args.runs))


if __name__ == "__main__":
    main()
