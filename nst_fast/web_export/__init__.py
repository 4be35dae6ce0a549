"""A trained network as a static web site (``nst-fast export MODEL --format web``): an
``index.html``, two small ES modules, a ``site.json`` the page reads, and the network as
ONNX, run in the visitor's browser by ONNX Runtime Web (WebGPU where the browser has it,
WebAssembly otherwise). Any static host serves it; nothing runs on the server.

The runtime's files come from a pinned jsDelivr address, or are copied into the folder
from a local copy of the ``onnxruntime-web`` npm package (``runtime=``) so the site
works offline. docs/web-export.md says what a host must send for multi-threading.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from types import ModuleType

from nst_fast.errors import NstFastError
from nst_fast.export import ModelInfo
from nst_fast.files import cannot_write
from nst_fast.formats import export_onnx
from nst_fast.models.transformer import TransformerNet

ORT_WEB_VERSION = "1.30.0"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
# What the page loads: the WebAssembly-only build where the browser offers no WebGPU
# adapter (half the download), the WebGPU build (which also runs WebAssembly) where it does.
RUNTIME_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
PAGE_FILES = ("index.html", "app.js", "stylize.js")
MODEL_FILE = "model.onnx"
RUNTIME_FOLDER = "runtime"
# Limits written to site.json (a host may edit them there): photos over MAX_MEGAPIXELS
# are refused with a line on the page; those over PASS_PIXELS run in overlapping tiles
# (as nst_fast.tiling does), which bounds the memory of one pass of the network.
MAX_MEGAPIXELS = 24
PASS_PIXELS = 1024 * 1024
OVERLAP = 128
# Weights of fewer values (norm scales of a tiny layer, scalars the graph computes with)
# stay fp32: they cost nothing to download and some are sizes, not weights.
FP16_SMALLEST = 16
# The headers that make a page cross-origin isolated, which WebAssembly threads need.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


@dataclass
class Site:
    """What ``export_site`` wrote: the folder, its files' total size in bytes, the
    network file's, and where the page loads the runtime from."""

    folder: Path
    total_bytes: int
    model_bytes: int
    runtime: str


def check_source(model: str | os.PathLike) -> None:
    """Refuse, in one line, a model file the site cannot be made from: an exported ONNX
    or TorchScript file holds a graph, not the network this writes its ONNX from."""
    suffix = Path(model).suffix.lower()
    if suffix in (".onnx", ".ts"):
        kind = "ONNX" if suffix == ".onnx" else "TorchScript"
        raise NstFastError(
            f"{model}: an exported {kind} file; the web export starts from the network's "
            "model.pt, a training checkpoint (.ckpt) or a pytorch/examples .pth"
        )


def runtime_dist(folder: str | os.PathLike) -> Path:
    """The ``dist/`` folder of a local copy of the npm package ``onnxruntime-web``
    (``node_modules/onnxruntime-web`` or its ``dist/``), checked to hold the files the
    page loads and, where it says, to be the pinned version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NstFastError(
            f"--runtime {folder}: no such folder; npm install onnxruntime-web@{ORT_WEB_VERSION} "
            "and give node_modules/onnxruntime-web"
        )
    dist = folder / "dist" if (folder / "dist").is_dir() else folder
    missing = [name for name in RUNTIME_FILES if not (dist / name).is_file()]
    if missing:
        raise NstFastError(
            f"--runtime {folder}: not onnxruntime-web's files (no {', '.join(missing[:2])}"
            f"{', ...' if len(missing) > 2 else ''}); give node_modules/onnxruntime-web "
            f"of npm install onnxruntime-web@{ORT_WEB_VERSION}"
        )
    package = dist.parent / "package.json"
    if package.is_file():
        try:
            version = json.loads(package.read_text()).get("version")
        except (OSError, ValueError):
            version = None
        if version and version != ORT_WEB_VERSION:
            # The page is written and tested against one version's API and file names.
            raise NstFastError(
                f"--runtime {folder}: onnxruntime-web {version}; the page is made for "
                f"{ORT_WEB_VERSION} (npm install onnxruntime-web@{ORT_WEB_VERSION})"
            )
    return dist


def export_site(
    net: TransformerNet,
    info: ModelInfo,
    target: str | os.PathLike,
    *,
    fp16: bool = False,
    runtime: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Site:
    """Write the static site for ``net`` into the folder ``target``.

    ``fp16``: the network's weights stored as fp16 (half the download; the browser
    computes in fp32 as before). ``runtime``: a local onnxruntime-web package copied into
    the site (see ``runtime_dist``); without it the page loads the pinned CDN's. Written
    into a temporary folder beside ``target`` and renamed into place at the end, so a
    failure leaves nothing half-written; an existing ``target`` is refused unless
    ``overwrite``. ``NstFastError`` (one line) for any of these problems.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NstFastError(f"-o {target}: a file; the web export writes a folder")
    if target.exists() and not overwrite:
        raise NstFastError(f"{target} exists; --overwrite replaces it, -o names another folder")
    dist = runtime_dist(runtime) if runtime is not None else None
    if fp16:
        _onnx_package("--fp16 stores the weights as fp16")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as err:
        raise NstFastError(cannot_write(target, err)) from err
    try:
        try:
            site = _write(work, net, info, fp16, dist)
            _replace(work, target)
        except OSError as err:
            raise NstFastError(cannot_write(target, err)) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    site.folder = target
    return site


def _write(
    folder: Path, net: TransformerNet, info: ModelInfo, fp16: bool, dist: Path | None
) -> Site:
    export_onnx(net, info, folder / MODEL_FILE)
    if fp16:
        weights_to_fp16(folder / MODEL_FILE)
    page = resources.files(__package__) / "site"
    for name in PAGE_FILES:
        (folder / name).write_bytes((page / name).read_bytes())
    if dist is not None:
        (folder / RUNTIME_FOLDER).mkdir()
        for name in RUNTIME_FILES:
            shutil.copyfile(dist / name, folder / RUNTIME_FOLDER / name)
    where = f"{RUNTIME_FOLDER}/" if dist is not None else CDN
    config = {
        "title": info.style,
        "model": MODEL_FILE,
        "weights": "fp16" if fp16 else "fp32",
        "styles": list(info.styles) if info.styles else None,
        "runtime": where,
        "runtime_version": ORT_WEB_VERSION,
        "max_megapixels": MAX_MEGAPIXELS,
        "pass_pixels": PASS_PIXELS,
        "overlap": OVERLAP,
        "multiple": 4,  # the network's total stride: tiles start on multiples of it
    }
    (folder / "site.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in folder.rglob("*"):  # mkdtemp's folder and files are private
        path.chmod(0o755 if path.is_dir() else 0o644)
    folder.chmod(0o755)
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return Site(folder, sum(sizes), (folder / MODEL_FILE).stat().st_size, where)


def _replace(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``, an existing one moved aside first
    and removed only once the new one is in place."""
    if not target.exists():
        new.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    try:
        target.rename(old / target.name)
        new.rename(target)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _onnx_package(why: str) -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise NstFastError(f"{why} with the onnx package: pip install 'nst-fast[onnx]'") from None
    return onnx


def weights_to_fp16(path: str | os.PathLike) -> None:
    """Store the fp32 weights of the ONNX model at ``path`` as fp16, each read through a
    Cast back to fp32, so every operator computes as before: half the download for
    rounding of about 1e-3. ONNX Runtime folds the Casts away when it loads the model."""
    onnx = _onnx_package("--fp16 stores the weights as fp16")
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT or values.size < FP16_SMALLEST:
            kept.append(init)
            continue
        half = numpy_helper.from_array(values.astype("float16"), f"{init.name}.fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # the Casts first: nodes are in topological order
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",  # module scripts must be served as JavaScript
        ".js": "text/javascript",
        ".wasm": "application/wasm",  # what WebAssembly's streaming compile asks for
        ".onnx": "application/octet-stream",
    }
    headers_to_send: dict[str, str] = {}

    def end_headers(self) -> None:
        for key, value in self.headers_to_send.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a test or benchmark serves hundreds of requests


def site_server(
    folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, isolated: bool = True
) -> http.server.ThreadingHTTPServer:
    """A local static server for a site ``export_site`` wrote, serving in a daemon
    thread (``shutdown()`` stops it; ``server_address`` says where). ``isolated`` sends the
    cross-origin isolation headers (``ISOLATION_HEADERS``) that WebAssembly threads need;
    without them the page runs on one thread, as on a host that cannot send headers."""
    handler = type(
        "Handler",
        (_SiteHandler,),
        {"headers_to_send": dict(ISOLATION_HEADERS) if isolated else {}},
    )
    server = http.server.ThreadingHTTPServer(
        (host, port), partial(handler, directory=str(Path(folder)))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
