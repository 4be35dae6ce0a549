"""``nst-fast evaluate``: a trained network's loss beside Gatys L-BFGS on held-out photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_fast.cli.options import check_positive
from nst_fast.errors import NstFastError
from nst_fast.evaluate import VIDEO_FRAMES
from nst_fast.optimize import INITS


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast evaluate",
        description="Loss of a trained network beside Gatys L-BFGS on held-out photos.",
    )
    parser.add_argument(
        "model",
        type=Path,
        help="model.pt, a training checkpoint (.ckpt) or a pytorch/examples .pth",
    )
    parser.add_argument("--content", type=Path, required=True, help="folder of held-out photos")
    parser.add_argument("--style", help="style name or image (default: the model's own)")
    parser.add_argument("-o", "--output", type=Path, default=Path("evaluation"))
    parser.add_argument(
        "--size", type=int, default=256,
        help="photos are centre-cropped square, SIZE px a side (default 256)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos")
    parser.add_argument(
        "--iterations",
        default="50,100,200,500",
        help="L-BFGS counts to compare with, or 'none': the network alone (e.g. each "
        "checkpoint of a run, against a bar measured once)",
    )
    parser.add_argument(
        "--init",
        default="noise",
        help="Gatys starts, comma-separated: noise (uniform, as Johnson et al.), mean "
        "(neural-style's -init random: mean colour + faint noise), content",
    )
    parser.add_argument(
        "--temporal",
        action="store_true",
        help="also the network's flicker: the warping error of frame-by-frame stylizing on "
        "clips of known motion made from the photos (pan, zoom, rotation), beside its floor",
    )
    parser.add_argument(
        "--video",
        type=Path,
        help="also the flicker on this real clip (its first --frames frames, shorter side "
        "--size), through optical flow estimated with OpenCV (pip install 'nst-fast[flow]')",
    )
    parser.add_argument(
        "--frames", type=int, default=None,
        help=f"frames of --video to use (default {VIDEO_FRAMES})",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss.weights=PATH")
    return parser


def parse_iterations(text: str) -> list[int]:
    """``--iterations``: sorted positive counts, or none (``[]``: the network alone)."""
    if text == "none":
        return []
    try:
        iterations = sorted({int(n) for n in text.split(",")})
    except ValueError:
        iterations = [0]
    if iterations[0] <= 0:
        raise NstFastError(f"--iterations {text}: positive numbers, e.g. 50,100,200, or none")
    return iterations


def main(argv: list[str]) -> int:
    from nst_fast.evaluate import VIDEO_FRAMES, evaluate_model

    args = parser().parse_intermixed_args(argv)
    check_positive(size=(args.size, 8), limit=(args.limit, 1), frames=(args.frames, 2))
    if args.frames is not None and args.video is None:
        raise NstFastError("--frames: for --video only; name the clip with --video CLIP")
    iterations = parse_iterations(args.iterations)
    inits = tuple(dict.fromkeys(args.init.split(",")))
    if not set(inits) <= set(INITS):
        raise NstFastError(f"--init {args.init}: comma-separated choices of {', '.join(INITS)}")
    if not args.content.is_dir():
        raise NstFastError(f"--content {args.content}: no such folder of held-out photos")
    evaluate_model(
        args.model,
        args.content,
        args.output,
        style=args.style,
        size=args.size,
        limit=args.limit,
        iterations=iterations,
        inits=inits,
        device=args.device,
        overrides=args.overrides,
        temporal=args.temporal,
        video=args.video,
        video_frames=args.frames or VIDEO_FRAMES,
    )
    print((args.output / "table.md").read_text())
    print(f"table: {args.output / 'table.md'} and table.csv; grid: {args.output / 'grid.jpg'}")
    return 0
