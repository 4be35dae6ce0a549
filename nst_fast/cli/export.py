"""``nst-fast export``: a model.pt or a training checkpoint as TorchScript, ONNX or model.pt."""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_fast.errors import NstFastError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast export",
        description="Write a model.pt, a training checkpoint or a pytorch/examples .pth as "
        "TorchScript, ONNX or model.pt.",
    )
    parser.add_argument(
        "model",
        type=Path,
        help="an exported model.pt, a checkpoint RUN/checkpoints/*.ckpt, or a "
        "pytorch/examples fast_neural_style .pth",
    )
    parser.add_argument("--format", required=True, choices=("pt", "torchscript", "onnx"))
    parser.add_argument("-o", "--output", type=Path, help="default: MODEL with .pt / .ts / .onnx")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


def check_target(target: Path, model: Path, fmt: str, suffix: str, overwrite: bool) -> None:
    if (target.suffix.lower() == ".onnx") != (fmt == "onnx"):
        # Readers tell ONNX files by this suffix; anything else is opened as PyTorch's.
        raise NstFastError(
            f"-o {target}: an ONNX file, and only an ONNX file, ends in .onnx; "
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
    suffix = ".pt" if args.format == "pt" else SUFFIXES[args.format]
    target = args.output or args.model.with_suffix(suffix)
    check_target(target, args.model, args.format, suffix, args.overwrite)
    net, info = load_network(args.model)
    write_model(net, info, target, args.format)
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
