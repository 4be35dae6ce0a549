"""``nst-fast serve``: a web page to stylize photos and the webcam (``nst_fast.web``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from nst_fast.cli.options import FLAGS, add_device_options
from nst_fast.errors import NstFastError

PROG = "nst-fast serve"


def parser() -> argparse.ArgumentParser:
    from nst_fast.web.uploads import MAX_MEGAPIXELS, MAX_UPLOAD_MB

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a web page to stylize photos and the webcam live (needs the "
        'web extra: pip install -e ".[web]").',
    )
    parser.add_argument(
        "models", nargs="+",
        help="model files (model.pt, .ckpt, .ts, .onnx, pytorch/examples .pth) and folders "
        "searched for model.pt, .onnx, .ts and .pth (e.g. outputs/ or a run directory)",
    )  # fmt: skip
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
        "network it is on)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, help="default: the first free port from 7860")
    parser.add_argument(
        "--share", action="store_true",
        help="also ask Gradio for a temporary public link (off by default)",
    )  # fmt: skip
    add_device_options(parser)
    parser.add_argument(
        "--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
        help=f"largest file a visitor may upload (default {MAX_UPLOAD_MB} MB)",
    )  # fmt: skip
    parser.add_argument(
        "--max-megapixels", type=float, default=MAX_MEGAPIXELS,
        help=f"largest photo a visitor may upload (default {MAX_MEGAPIXELS:g} megapixels)",
    )  # fmt: skip
    return parser


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the server as Ctrl+C does: closed, its temporary files removed."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    from nst_fast.web.page import require_gradio, serve

    args = parser().parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        raise NstFastError(f"--port {args.port}: expected 1 to 65535")
    for flag, value in (("--max-upload-mb", args.max_upload_mb),
                        ("--max-megapixels", args.max_megapixels)):  # fmt: skip
        if not value > 0:
            raise NstFastError(f"{flag} {value:g}: expected a positive number")
    require_gradio()

    def echo(line: str) -> None:
        print(f"{PROG}: {line}", file=sys.stderr if line.startswith("left out") else sys.stdout,
              flush=True)  # fmt: skip

    signal.signal(signal.SIGTERM, interrupt)  # kill, a service manager: as Ctrl+C
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: the ordinary way to stop
        serve(
            args.models, host=args.host, port=args.port, share=args.share, device=args.device,
            precision=args.precision, max_upload_mb=args.max_upload_mb,
            max_megapixels=args.max_megapixels, echo=echo, spelling=FLAGS,
        )  # fmt: skip
    return 0
