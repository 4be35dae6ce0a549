"""``nst-fast stylize``: photos, folders, globs and videos through a style network."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from nst_fast.batch import stylize_paths
from nst_fast.cli.options import FLAGS, add_device_options
from nst_fast.errors import NstFastError
from nst_fast.stylize_options import MIN_TILE
from nst_fast.tiling import DEFAULT_OVERLAP

PROG = "nst-fast stylize"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Stylize photos and videos in one forward pass of a style network."
    )
    parser.add_argument(
        "model",
        type=Path,
        help="model.pt, a training checkpoint (.ckpt), a .ts / .onnx file, or "
        "a pytorch/examples fast_neural_style .pth",
    )
    parser.add_argument(
        "inputs", nargs="+", help="image files, folders (recursively), globs, or videos"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True,
        help="output folder; or a file name for a single image or video",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_device_options(parser)
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="images of one size per forward pass (default 4 on GPU, 1 on CPU; videos 8)",
    )  # fmt: skip
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="resize so the longer side is SIZE px first")
    size.add_argument("--scale", type=float, help="resize by this factor first")
    parser.add_argument(
        "--tile", default="auto",
        help="auto: tile images too large for memory; off; or a tile size in px",
    )  # fmt: skip
    parser.add_argument(
        "--tile-overlap", type=int, default=DEFAULT_OVERLAP, help="px shared by tiles"
    )
    parser.add_argument(
        "--preserve-color", action="store_true",
        help="keep the photo's colours: transfer the style to the luminance only",
    )  # fmt: skip
    parser.add_argument(
        "--strength", type=float, default=1.0,
        help="0..1: blend between the photo (0) and the full stylization (1)",
    )  # fmt: skip
    parser.add_argument(
        "--style",
        help="a model of several styles: one by name, a blend (wave=0.7,the_scream=0.3), "
        "or all (the default: one output per style, named photo_STYLE.jpg)",
    )
    parser.add_argument(
        "--mask",
        help="stylize where this image is white, keep the photo where it is black (grey "
        "blends); any size of the photo's shape, or a folder of masks named as the photos",
    )
    parser.add_argument(
        "--regions", metavar="STYLE=MASK,...",
        help="a model.pt of several styles: a style per region, e.g. wave=sky.png,the_scream "
        "(each mask a file or folder; one style without takes the rest); regions meet "
        "with a soft transition of strokes",
    )  # fmt: skip
    parser.add_argument(
        "--stroke", type=float, default=1.0, metavar="FACTOR",
        help="the painting's strokes this many times larger (e.g. 2) or finer (0.5) than "
        "the network draws them, from 0.25 to 4",
    )  # fmt: skip
    parser.add_argument(
        "--steady-statistics", type=float, default=None, metavar="MOMENTUM",
        help="videos: normalize each frame with a moving average of the frames' instance-norm "
        "statistics (MOMENTUM the weight of the past, e.g. 0.9), restarted at scene cuts; "
        "model.pt and checkpoints only",
    )  # fmt: skip
    parser.add_argument("--ext", help="output format for images, e.g. jpg or png")
    parser.add_argument(
        "--plain", action="store_true",
        help="run the plain PyTorch modules, without nst-fast's speed work "
        "(for debugging and A/B timing)",
    )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def tile_option(value: str) -> int | None:
    """--tile: auto (None), off (0) or a size in px."""
    if value in ("auto", "off"):
        return None if value == "auto" else 0
    if not value.isdigit():
        raise NstFastError(f"--tile {value}: expected auto, off or a size of {MIN_TILE} px or more")
    return int(value)


def echo(kind: str, text: str) -> None:
    """A problem, printed above the progress bar as it happens."""
    line = f"{text} exists, kept (--overwrite replaces it)" if kind == "kept" else text
    tqdm.write(f"{PROG}: {'error: ' if kind == 'error' else ''}{line}", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.steady_statistics is not None and not 0 <= args.steady_statistics < 1:
        raise NstFastError(
            f"--steady-statistics {args.steady_statistics}: a momentum from 0 (off) to below 1"
        )
    report = stylize_paths(
        args.model,
        args.inputs,
        args.output,
        size=args.size,
        scale=args.scale,
        strength=args.strength,
        preserve_color=args.preserve_color,
        ext=args.ext,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        tile=tile_option(args.tile),
        tile_overlap=args.tile_overlap,
        device=args.device,
        precision=args.precision,
        fast=not args.plain,
        style=args.style,
        mask=args.mask,
        regions=args.regions,
        stroke=args.stroke,
        steady=args.steady_statistics,
        progress=not args.quiet,
        echo=echo,
        spelling=FLAGS,
    )
    if report.tiled_alone:
        print(
            f"{PROG}: note: {report.tiled_alone} image(s) stylized in tiles, each tile "
            f"normalized on its own as {args.model.suffix} models must; seams can show "
            "(model.pt tiles seamlessly)",
            file=sys.stderr,
        )
    print(f"{PROG}: {report.summary()}", file=sys.stderr)
    return 1 if report.failed else 0
