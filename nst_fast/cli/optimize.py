"""``nst-fast optimize``: Gatys et al. (2015) on one photo."""

from __future__ import annotations

import argparse
from pathlib import Path

from nst_fast.cli.options import check_positive
from nst_fast.errors import NstFastError
from nst_fast.optimize import INITS, OPTIMIZERS
from nst_fast.stylize_options import WRITABLE


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast optimize",
        description="Gatys et al. (2015): optimize the photo's pixels against the loss.",
    )
    parser.add_argument("content", type=Path, help="the photo")
    parser.add_argument("style", help="a style name from conf/style, an image path or URL")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output image")
    parser.add_argument(
        "--size", type=int, default=512,
        help="resize the photo so the longer side is SIZE px first (default 512)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=300, help="iterations (default 300)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    parser.add_argument("--init", choices=INITS, default="content")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tensorboard", type=Path, help="log losses and images to this folder")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss=vgg19")
    return parser


def main(argv: list[str]) -> int:
    from nst_fast.optimize import optimize_file

    args = parser().parse_intermixed_args(argv)
    # Checked before the work: a bad -o found at the end would throw the result away.
    if args.output.suffix.lower() not in WRITABLE or args.output.is_dir():
        raise NstFastError(
            f"-o {args.output}: expected an image file, one of {', '.join(WRITABLE)}"
        )
    check_positive(size=(args.size, 8), steps=(args.steps, 1), log_every=(args.log_every, 1))
    if args.lr is not None and not args.lr > 0:
        raise NstFastError(f"--lr {args.lr}: expected a positive rate")
    written = optimize_file(
        args.content,
        args.style,
        args.output,
        size=args.size,
        steps=args.steps,
        optimizer=args.optimizer,
        init=args.init,
        lr=args.lr,
        device=args.device,
        overrides=args.overrides,
        tensorboard=args.tensorboard,
        log_every=args.log_every,
        progress=True,
    )
    print(written)
    return 0
