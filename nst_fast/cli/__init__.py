"""The ``nst-fast`` command: one module per command, each parsing its arguments,
checking them and calling the library (``nst_fast.batch``, ``formats``, ``optimize``,
``evaluate``, ``training.train``)."""

from __future__ import annotations

import importlib
import sys

from nst_fast import __version__
from nst_fast.errors import NstFastError

USAGE = f"""nst-fast {__version__}: fast neural style transfer

usage:
  nst-fast train [KEY=VALUE ...] [-m] [--cfg job] [hydra flags]
                            train a style network (Hydra overrides, e.g. style=wave)
  nst-fast stylize MODEL INPUT [INPUT ...] -o OUT
                            stylize photos, folders, globs or videos with a model
                            (model.pt, or an exported .ts / .onnx)
  nst-fast export MODEL --format torchscript|onnx|pt|web [-o FILE]
                            write model.pt (or a checkpoint) as TorchScript, ONNX or model.pt,
                            or as a static web site that stylizes in the browser
  nst-fast optimize CONTENT STYLE -o OUT [KEY=VALUE ...]
                            Gatys et al.: optimize one photo's pixels (L-BFGS or Adam)
  nst-fast evaluate MODEL --content DIR [--style STYLE] [-o DIR]
                            loss on held-out photos beside Gatys L-BFGS at 50..500 its
  nst-fast serve MODEL_OR_FOLDER [...] [--host H] [--port P]
                            a web page to stylize photos and the webcam live ([web])
  nst-fast --version

'nst-fast train --help' lists the config groups and their options,
'nst-fast COMMAND --help' the options of the others.
"""

COMMANDS = ("train", "stylize", "export", "optimize", "evaluate", "serve")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"nst-fast {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"nst-fast: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from nst_fast.device import keep_freed_memory

    keep_freed_memory()
    try:
        return importlib.import_module(f"nst_fast.cli.{command}").main(rest)
    except NstFastError as err:
        print(f"nst-fast {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
