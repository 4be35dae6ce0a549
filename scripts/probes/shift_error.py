#!/usr/bin/env python3
"""How far each network is from moving its output with the photo, shift by shift.

    python scripts/probes/shift_error.py MODEL [MODEL ...] --content PHOTOS \\
        [--size 256] [--limit 4] [--shifts 1 2 3 4 8]

For each model (a model.pt or checkpoint) and each shift in px: ``temporal.shift_error``
averaged over the first ``--limit`` photos of PHOTOS, in grey levels. A network with a
total stride of 4 that re-draws its strokes on that grid scores near 0 at 4 and 8 and far
more at 1 to 3: the flicker that ``model.antialias`` removes at its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import markdown_table  # noqa: E402
from nst_fast.images import list_images, read_square  # noqa: E402
from nst_fast.model_loading import load_for_inference  # noqa: E402
from nst_fast.temporal import shift_error  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--content", type=Path, required=True, help="a folder of photos")
    parser.add_argument("--size", type=int, default=256, help="the window, px a side")
    parser.add_argument("--limit", type=int, default=4, help="photos used")
    parser.add_argument("--shifts", type=int, nargs="+", default=[1, 2, 3, 4, 8])
    args = parser.parse_args(argv)
    try:
        largest = args.size + max(args.shifts)
        photos = [read_square(p, largest) for p in list_images(args.content)[: args.limit]]
        if not photos:
            raise NstFastError(f"--content {args.content}: no photos there")
        header = ["model", *(f"{s} px" for s in args.shifts)]
        print("\n".join(markdown_table(header, [])))
        for path in args.models:  # a row as each model is done, kept if a later one fails
            model = load_for_inference(path, torch.device("cpu"), torch.float32, fast=False)
            with torch.no_grad():
                cells = [
                    sum(shift_error(model.run, p, s, args.size) for p in photos) / len(photos)
                    for s in args.shifts
                ]
            row = [str(path), *(f"{c:.2f}" for c in cells)]
            print(markdown_table(header, [row])[-1])
    except NstFastError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
