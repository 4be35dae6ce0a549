"""The ``nst-fast`` command: subcommands train (Hydra), stylize and export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nst_fast import __version__
from nst_fast.errors import NstFastError

USAGE = f"""nst-fast {__version__}: fast neural style transfer

usage:
  nst-fast train [KEY=VALUE ...] [-m] [--cfg job] [hydra flags]
                            train a style network (Hydra overrides, e.g. style=wave)
  nst-fast stylize MODEL INPUT [INPUT ...] -o OUT
                            stylize photos or folders with an exported model.pt
  nst-fast --version

'nst-fast train --help' lists the config groups and their options.
"""


def stylize_main(argv: list[str]) -> int:
    from nst_fast.device import pick_device
    from nst_fast.export import load_model
    from nst_fast.images import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, save_image
    from nst_fast.inference import stylize

    parser = argparse.ArgumentParser(prog="nst-fast stylize")
    parser.add_argument("model", type=Path, help="an exported model.pt")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    net, _ = load_model(args.model)
    net.to(device)
    files = []
    for item in args.inputs:
        if item.is_dir():
            files += [(p, p.relative_to(item).with_suffix(".jpg")) for p in list_images(item)]
        elif item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES:
            files.append((item, Path(item.stem + ".jpg")))
        else:
            raise NstFastError(f"{item}: no such image file or folder")
    failed = 0
    for path, name in files:
        out = args.output / name
        if out.exists() and not args.overwrite:
            print(f"nst-fast stylize: {out} exists, skipped (--overwrite replaces it)")
            continue
        try:
            save_image(stylize(net, read_image(path)), out)
        except ImageReadError as err:
            print(f"nst-fast stylize: error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(out)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"nst-fast {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            from nst_fast.training.train import run_from_cli

            run_from_cli(rest)
            return 0
        if command == "stylize":
            return stylize_main(rest)
    except NstFastError as err:
        print(f"nst-fast {command}: error: {err}", file=sys.stderr)
        return 2
    print(f"nst-fast: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
