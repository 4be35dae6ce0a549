"""``nst-fast export``: a model.pt or a training checkpoint as TorchScript, ONNX, ExecuTorch
or model.pt, or as a static web site that stylizes in the browser (``--format web``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_fast.errors import NstFastError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast export",
        description="Write a model.pt, a training checkpoint or a pytorch/examples .pth as "
        "TorchScript, ONNX, ExecuTorch (.pte, for Android and iOS) or model.pt, or as a static "
        "web site (--format web) that stylizes photos and the webcam in the browser.",
    )
    parser.add_argument(
        "model",
        type=Path,
        help="an exported model.pt, a checkpoint RUN/checkpoints/*.ckpt, or a "
        "pytorch/examples fast_neural_style .pth",
    )
    parser.add_argument(
        "--format", required=True, choices=("pt", "torchscript", "onnx", "executorch", "web")
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="default: MODEL with .pt / .ts / .onnx / .pte; for web, the folder MODEL-web/",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        metavar="PIXELS",
        help="executorch only: the longest side the .pte takes, a multiple of 4, 128 or "
        "more (default 512); ExecuTorch reserves memory for it when it loads the file",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    web = parser.add_argument_group("--format web (docs/web-export.md)")
    web.add_argument(
        "--fp16", action="store_true", help="store the weights as fp16: half the download"
    )
    web.add_argument(
        "--runtime",
        type=Path,
        metavar="DIR",
        help="copy ONNX Runtime Web into the site from a local npm package "
        "(node_modules/onnxruntime-web) so it works offline; default: a pinned CDN",
    )
    return parser


# Formats whose readers tell their files by the suffix; other files open as PyTorch's.
OWN_SUFFIXES = {"onnx": (".onnx", "an ONNX file"), "executorch": (".pte", "an ExecuTorch file")}


def check_target(target: Path, model: Path, fmt: str, suffix: str, overwrite: bool) -> None:
    for own_fmt, (own_suffix, kind) in OWN_SUFFIXES.items():
        if (target.suffix.lower() == own_suffix) != (fmt == own_fmt):
            raise NstFastError(
                f"-o {target}: {kind}, and only {kind}, ends in {own_suffix}; "
                f"name it {target.with_suffix(suffix).name}"
            )
    if target.is_dir():
        raise NstFastError(f"-o {target}: is a folder; name the file to write")
    if target.exists() and target.resolve() == model.resolve():
        raise NstFastError(f"{target} is the model being exported; -o names another file")
    if target.exists() and not overwrite:
        raise NstFastError(f"{target} exists; --overwrite replaces it, -o names another file")


def main(argv: list[str]) -> int:
    from nst_fast.export import load_network
    from nst_fast.formats import SUFFIXES, check_written, write_model

    args = parser().parse_args(argv)
    if args.max_size is not None and args.format != "executorch":
        raise NstFastError("--max-size: only an ExecuTorch export (--format executorch) has one")
    if args.format == "web":
        return web(args)
    for flag, given in (("--fp16", args.fp16), ("--runtime", args.runtime)):
        if given:
            raise NstFastError(f"{flag}: only with --format web")
    suffix = ".pt" if args.format == "pt" else SUFFIXES[args.format]
    target = args.output or args.model.with_suffix(suffix)
    check_target(target, args.model, args.format, suffix, args.overwrite)
    net, info = load_network(args.model)
    write_model(net, info, target, args.format, max_size=args.max_size)
    print(target)
    if args.format == "pt":
        validation = info.extra.get("validation")
        measured = (
            f"; validation loss {validation['loss']:.4g} at step {validation['step']}"
            if validation
            else ""
        )
        print(f"style {info.style}, step {info.step}{measured}")
    else:
        print(check_written(target, net, args.format))
        if info.styles:
            print(
                f"inputs: image (batch, 3, height, width) and style, {len(info.styles)} "
                f"weights in the order {', '.join(info.styles)}"
            )
    return 0


def web(args: argparse.Namespace) -> int:
    from nst_fast.export import load_network
    from nst_fast.formats import check_written
    from nst_fast.web_export import MODEL_FILE, check_source, export_site

    check_source(args.model)
    target = args.output or args.model.with_name(f"{args.model.stem}-web")
    net, info = load_network(args.model)
    site = export_site(
        net, info, target, fp16=args.fp16, runtime=args.runtime, overwrite=args.overwrite
    )
    print(target)
    print(check_written(target / MODEL_FILE, net, "onnx"))
    mb = 1024 * 1024
    print(
        f"{site.total_bytes / mb:.1f} MiB in all, the network {site.model_bytes / mb:.1f} MiB "
        f"({'fp16' if args.fp16 else 'fp32'} weights); ONNX Runtime Web from {site.runtime}"
    )
    print("serve the folder over HTTP; docs/web-export.md has the headers for threads")
    return 0
